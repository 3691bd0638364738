"""Prompts and responses for post-CoT (label first) and think-first (label last) formats.

A prompt is the pair's fields, each cut to a token budget, rendered through the model's
own chat template and handed to engines as token ids. Post-CoT puts the label token
first so that serving needs one forward pass; think-first is kept for the ablation.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Sequence

from taosr1.core.config import ConfigError
from taosr1.core.labels import Label, LabelScheme

PROMPT_VERSION = "v2"  # v2: colour and bullet points, and the Match line reads the texts
FORMATS = ("post_cot", "think_first")
FIELDS = ("query", "title", "brand", "color", "category", "attributes", "bullets", "description")
TEXTS = ("color", "category", "attributes", "bullets", "description")  # the item's texts beyond title and brand
LINE = {"color": "Colour", "bullets": "Bullet points"}  # how a field is named in the prompt (else capitalised)
STEPS = ("Query", "Item", "Category", "Attributes", "Judgement")

# Used only when a tokenizer ships no chat template (ChatML, as SmolLM2 and Qwen use).
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class PromptConfig:
    """How pairs become prompts.

    Parameters:
        format: `post_cot` (label token first, then reasoning) or `think_first` (ablation).
        *_tokens: token budget of each field; a longer field is cut and the row flagged `truncated`.
        max_prompt_tokens: a rendered prompt longer than this is quarantined (`prompt_too_long`).
        evidence: add a `Match:` line read off the pair (taosr1/core/evidence.py: query terms the title
            has and lacks, measures that agree or conflict, excluded terms present), so a small
            model need not find every overlap itself. Changes the prompt version.
    """

    format: str = "post_cot"
    query_tokens: int = 64
    title_tokens: int = 128
    brand_tokens: int = 16
    color_tokens: int = 8
    category_tokens: int = 32
    attributes_tokens: int = 64
    bullets_tokens: int = 64
    description_tokens: int = 48
    max_prompt_tokens: int = 1024
    evidence: bool = True

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"prompt format must be one of {FORMATS}, got {self.format!r}")
        for f in FIELDS:
            if getattr(self, f"{f}_tokens") < 1:
                raise ConfigError(f"{f}_tokens must be >= 1, got {getattr(self, f'{f}_tokens')}")

    @property
    def version(self) -> str:
        return f"{self.format}-{PROMPT_VERSION}" + ("-evidence" if self.evidence else "")


def system_prompt(scheme: LabelScheme, fmt: str) -> str:
    grades = "\n".join(f"{lab.token} = {lab.name}: {lab.description}" for lab in scheme.labels)
    steps = ", ".join(f"{i + 1}. {s}" for i, s in enumerate(STEPS))
    tokens = ", ".join(lab.token for lab in scheme.labels)
    if fmt == "post_cot":
        order = f"Answer with the grade ({tokens}) on the first line, then explain in five steps: {steps}."
    else:
        order = f"First reason in five steps: {steps}. Then end with 'Answer: ' and the grade ({tokens})."
    return (
        "You judge how relevant a product is to an e-commerce search query.\n"
        f"Grades:\n{grades}\n{order}"
    )


def user_prompt(fields: dict[str, str], evidence: bool) -> str:
    lines = [f"Query: {fields['query']}", f"Title: {fields['title']}"]
    for f in FIELDS[2:]:
        if fields.get(f):
            lines.append(f"{LINE.get(f, f.capitalize())}: {fields[f]}")
    if evidence:
        lines.append(f"Match: {match_line(fields)}")
    return "\n".join(lines)


def match_line(fields: dict[str, str]) -> str:
    """What the pair's own text says about the match, in a fixed short form."""
    from taosr1.core.evidence import pair_evidence

    texts = " ".join(fields[f] for f in TEXTS if fields.get(f))
    ev = pair_evidence(fields["query"], fields["title"], fields.get("brand"), texts)
    parts = [f"has {len(ev.found)} of {len(ev.terms)} query terms"]
    if ev.missing:
        parts.append(f"lacks {', '.join(ev.missing)}")
    if ev.in_texts:
        parts.append(f"texts have {', '.join(ev.in_texts)}")
    parts += [f"{m} agrees" for m in ev.measures_agree] + ev.measures_conflict
    parts += [f"has excluded {w}" for w in ev.excluded_present]
    return "; ".join(parts)


@dataclass
class BuiltPrompts:
    ids: list[list[int]]
    truncated: list[bool]


class PromptBuilder:
    """Builds token-id prompts for one tokenizer, scheme and prompt config."""

    def __init__(self, tokenizer: Any, scheme: LabelScheme, cfg: PromptConfig | None = None):
        self.tok = tokenizer
        self.scheme = scheme
        self.cfg = cfg or PromptConfig()
        self.system = system_prompt(scheme, self.cfg.format)
        self.template = getattr(tokenizer, "chat_template", None) or CHATML

    def _cut(self, values: list[str], budget: int) -> tuple[list[str], list[bool]]:
        if not values:
            return [], []
        enc = self.tok(values, add_special_tokens=False)["input_ids"]
        out, cut = [], []
        for v, ids in zip(values, enc):
            if len(ids) > budget:
                out.append(self.tok.decode(ids[:budget]).strip() + " ...")
                cut.append(True)
            else:
                out.append(v)
                cut.append(False)
        return out, cut

    def messages(self, fields: dict[str, str]) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": user_prompt(fields, self.cfg.evidence)}]

    def _apply(self, user: str) -> str:
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
        return self.tok.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                            add_generation_prompt=True)

    @functools.cached_property
    def frame(self) -> tuple[str, str, list[int]] | None:
        """(head, tail, head ids) around the user text, when the template inserts it verbatim and
        tokenizing head and the rest apart gives the same ids (checked on probes); else None.

        Every user text starts with `Query: ` (user_prompt), so the head/user boundary is the
        same for all rows and the probes decide it. Saves a template render per row and the
        tokenizing of the system prompt, most of a prompt's tokens, per row.
        """
        mark = "\ue000taosr1\ue001"
        try:
            whole = self._apply(mark)
        except Exception:  # noqa: BLE001 (an odd template: the slow path renders it)
            return None
        if whole.count(mark) != 1:
            return None
        head, tail = whole.split(mark)
        head_ids = list(self.tok(head, add_special_tokens=False)["input_ids"])
        probes = ["Query: a\nTitle: b", "Query:   x  \n\nTitle: {{ y }} <|im_end|> \u8336 \U0001f375 ",
                  "Query: 42\nTitle: \u00e9t\u00e9\nDescription: end.\n"]
        for p in probes:
            text = self._apply(p)
            if text != head + p + tail:
                return None
            if list(self.tok(text, add_special_tokens=False)["input_ids"]) != head_ids + list(
                    self.tok(p + tail, add_special_tokens=False)["input_ids"]):
                return None
        return head, tail, head_ids

    def render(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        if self.frame is not None:
            head, tail, _ = self.frame
            return [head + user_prompt(r, self.cfg.evidence) + tail for r in rows]
        return [self._apply(user_prompt(r, self.cfg.evidence)) for r in rows]

    def cut_fields(self, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, str]], list[bool]]:
        """Each row's present fields cut to their token budgets, and whether any was cut."""
        n = len(rows)
        fields: list[dict[str, str]] = [{} for _ in range(n)]
        truncated = [False] * n
        for f in FIELDS:
            present = [i for i in range(n) if rows[i].get(f)]
            cut_vals, flags = self._cut([rows[i][f] for i in present], getattr(self.cfg, f"{f}_tokens"))
            for i, v, flag in zip(present, cut_vals, flags):
                fields[i][f] = v
                truncated[i] |= flag
        return fields, truncated

    def texts(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """The prompt text `build` tokenizes: what trainers take as a prompt-completion `prompt`."""
        return self.render(self.cut_fields(rows)[0])

    def build(self, rows: Sequence[dict[str, Any]]) -> BuiltPrompts:
        """Rows are dicts with `query`, `title` and optional item fields (clean text or None)."""
        fields, truncated = self.cut_fields(rows)
        if not fields:
            return BuiltPrompts(ids=[], truncated=truncated)
        if self.frame is not None:  # the shared head tokenized once, not once per row
            _, tail, head_ids = self.frame
            rest = self.tok([user_prompt(f, self.cfg.evidence) + tail for f in fields], add_special_tokens=False)["input_ids"]
            return BuiltPrompts(ids=[[*head_ids, *x] for x in rest], truncated=truncated)
        ids = self.tok(self.render(fields), add_special_tokens=False)["input_ids"]
        return BuiltPrompts(ids=[list(x) for x in ids], truncated=truncated)


def format_response(label: Label, steps: Sequence[str], fmt: str = "post_cot") -> str:
    """A training response: the label token and the five reasoning steps, in `fmt` order."""
    if len(steps) != len(STEPS):
        raise ValueError(f"a response needs {len(STEPS)} reasoning steps, got {len(steps)}")
    reasoning = "\n".join(f"{i + 1}. {name}: {text}" for i, (name, text) in enumerate(zip(STEPS, steps)))
    if fmt == "post_cot":
        return f"{label.token}\n{reasoning}"
    if fmt == "think_first":
        return f"{reasoning}\nAnswer: {label.token}"
    raise ConfigError(f"prompt format must be one of {FORMATS}, got {fmt!r}")


@dataclass
class Parsed:
    label: Label | None
    reasoning: str
    error: str | None = None  # why the response could not be parsed; None when it could


_ANSWER = re.compile(r"answer\s*[:：]\s*\**\s*([^\s*.,;]+)", re.IGNORECASE)


def parse_response(text: str, scheme: LabelScheme, fmt: str = "post_cot") -> Parsed:
    """(label, reasoning) of a generated response; `error` says why when there is no label."""
    text = (text or "").strip()
    if not text:
        return Parsed(None, "", "empty response")
    if fmt == "post_cot":
        head, _, rest = text.partition("\n")
        first = head.strip().split()[0] if head.strip() else ""
        first = first.strip("*:.#")
        lab = scheme.answer(first)
        if lab is None:
            return Parsed(None, text, f"first word {first[:40]!r} is not a label of scheme {scheme.name}")
        return Parsed(lab, rest.strip())
    if fmt == "think_first":
        found = _ANSWER.findall(text)
        if not found:
            return Parsed(None, text, "no 'Answer: <label>' line")
        lab = scheme.answer(found[-1])
        if lab is None:
            return Parsed(None, text, f"answer {found[-1][:40]!r} is not a label of scheme {scheme.name}")
        return Parsed(lab, text[: text.lower().rfind("answer")].strip())
    raise ConfigError(f"prompt format must be one of {FORMATS}, got {fmt!r}")
