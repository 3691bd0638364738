"""CoT data: a teacher writes the five-step reasoning for labelled pairs, rules in its prompt.

For each pair the rules that apply are retrieved from the knowledge base (BM25), the
teacher (any local model, through `engine.generate`) answers in the post-CoT format, and
its response is kept only when its label equals the gold label and all five steps parse.
Rejected pairs are retried up to `attempts` times (only the rejected ones, one batch per
round); a pair the teacher never gets right falls back to a deterministic template that
states the gold judgement, marked `source = "template"`. Every row keeps its steps, so the
same data trains the post-CoT model and the think-first ablation.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from taosr1.core.config import ConfigError
from taosr1.core.evidence import Evidence, measures, pair_evidence
from taosr1.core.labels import Label, LabelScheme
from taosr1.core.negatives import negative_items
from taosr1.core.prompts import FIELDS, STEPS, TEXTS, PromptBuilder, format_response, parse_response, user_prompt
from taosr1.labeling.engines.base import EngineConfig
from taosr1.training.rules import Rule, RuleIndex
from taosr1.training.soft_labels import SOURCES as SOFT_SOURCES


@dataclass
class CoTConfig:
    """`taosr1 cot`: reasoning data for labelled pairs (conf/train/cot.yaml).

    Parameters:
        input: labelled pairs (csv, parquet, jsonl or delta); "" = the bundled ESCI sample.
        gold: the column holding the gold label (any spelling the scheme parses).
        output_dir: folder that receives cot.parquet, quarantine.parquet and taosr1_stage.json.
        label_config: the LabelConfig YAML whose columns and prompt sections serving uses ("" = conf/label.yaml).
        labels: label scheme ("" = the label config's).
        rules: rules YAML file or folder ("" = conf/rules).
        rules_per_pair: rules retrieved into each teacher prompt.
        attempts: teacher tries per pair (k) before the template fallback; 0 = template only.
        temperature, max_new_tokens, seed: teacher sampling.
        limit: use the first N valid pairs (0 = all).
        negatives_per_query: built negatives: each query paired with this many items of other
            queries that share no content word with it, graded the worst label (source
            `built_negative`). They come from the training input only, so never reach an evaluation.
        teacher: engine section for the teacher model (model "" or "base" = the untrained base).
        soft_labels: "cosine" adds a `soft_labels` column, P(grade) from the all-MiniLM-L6-v2
            cosine fitted on the gold labels (taosr1/training/soft_labels.py; the `bench` extra),
            for `sft.soft_label_weight`; "" = none.
    """

    input: str = ""
    gold: str = "esci_label"
    output_dir: str = ""
    label_config: str = ""
    labels: str = ""
    rules: str = ""
    rules_per_pair: int = 3
    attempts: int = 2
    temperature: float = 0.7  # > 0 so that a retry can differ from the first try
    max_new_tokens: int = 160
    seed: int = 0
    limit: int = 0
    negatives_per_query: int = 0
    soft_labels: str = ""
    teacher: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        from taosr1.training.common import coerce_floats

        coerce_floats(self)
        if self.attempts < 0:
            raise ConfigError(f"attempts must be >= 0, got {self.attempts}")
        if self.soft_labels not in ("", *SOFT_SOURCES):
            raise ConfigError(f"soft_labels must be '' or one of {list(SOFT_SOURCES)}, got {self.soft_labels!r}")
        if self.rules_per_pair < 0:
            raise ConfigError(f"rules_per_pair must be >= 0, got {self.rules_per_pair}")
        if self.temperature < 0 or self.max_new_tokens < 1:
            raise ConfigError(f"temperature must be >= 0 and max_new_tokens >= 1, got {self.temperature}, {self.max_new_tokens}")
        if self.limit < 0:
            raise ConfigError(f"limit must be >= 0, got {self.limit}")
        if self.negatives_per_query < 0:
            raise ConfigError(f"negatives_per_query must be >= 0, got {self.negatives_per_query}")


TITLE_WORDS = 12  # the template quotes the title's head: responses stay short, the prompt has the rest
_STEP = re.compile(r"^\s*\**\s*(\d)\s*[.)]\s*\**\s*([A-Za-z]+)\s*\**\s*[:：-]\s*(.*)$")


def parse_steps(reasoning: str) -> list[str] | None:
    """The five step texts of `1. Query: ...` ... `5. Judgement: ...` lines, or None when any is missing."""
    found: dict[int, str] = {}
    for line in (reasoning or "").splitlines():
        m = _STEP.match(line)
        if not m:
            continue
        num, name, text = int(m.group(1)), m.group(2).lower(), " ".join(m.group(3).split())
        if 1 <= num <= len(STEPS) and name.startswith(STEPS[num - 1].lower()[:5]) and text and num not in found:
            found[num] = text[:400]
    if len(found) != len(STEPS):
        return None
    return [found[i + 1] for i in range(len(STEPS))]


def teacher_system(builder: PromptBuilder, rules: Sequence[Rule]) -> str:
    """The serving system prompt, the retrieved rules, and the exact answer layout."""
    lines = [builder.system]
    if rules:
        lines.append("Rules that apply:")
        lines += [f"- {r.text}" for r in rules]
    tokens = "/".join(lab.token for lab in builder.scheme.labels)
    layout = "\n".join(f"{i + 1}. {s}: ..." for i, s in enumerate(STEPS))
    lines.append(f"Reply exactly in this layout, the grade ({tokens}) alone on the first line:\n<grade>\n{layout}")
    return "\n".join(lines)


def teacher_prompts(builder: PromptBuilder, fields: Sequence[dict[str, str]], rules: Sequence[Sequence[Rule]]) -> list[list[int]]:
    tok = builder.tok
    texts = [
        tok.apply_chat_template(
            [{"role": "system", "content": teacher_system(builder, r)}, {"role": "user", "content": user_prompt(f, builder.cfg.evidence)}],
            chat_template=builder.template, tokenize=False, add_generation_prompt=True,
        )
        for f, r in zip(fields, rules)
    ]
    return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _judgement(gold: Label, scheme: LabelScheme, ev: Evidence) -> str:
    """The gold grade, with the evidence that points its way (the grade is never changed)."""
    i = scheme.labels.index(gold)
    head = f'"{ev.head}"' if ev.head else "the product"
    if i == 0:
        why = f"it is the {head} asked for" + (f", with {', '.join(ev.found)}" if ev.found else "")
    elif i == len(scheme.labels) - 1:
        if ev.excluded_present:
            why = f"it has {', '.join(ev.excluded_present)}, which the query excludes"
        elif not ev.head_found:
            why = f"it is not a {head}"
        else:
            why = "it names the query's words but is not what the shopper wants"
    else:
        gaps = ev.measures_conflict + [f"no {w}" for w in ev.missing[:3]]
        why = f"{gold.description or gold.name}" + (f" ({'; '.join(gaps)})" if gaps else "")
    return f"{gold.name}: {why}."


def template_steps(fields: dict[str, str], gold: Label, scheme: LabelScheme, rules: Sequence[Rule]) -> list[str]:
    """The rule teacher: five steps filled from the pair's own evidence, ending in the gold grade.

    Every step is read off the pair (taosr1/training/evidence.py): the query's product type and
    measures, the item, whether the title names that type, the terms and measures it shares,
    lacks or contradicts. Only the judgement knows the gold grade; it cites the evidence.
    """
    q, t = fields["query"], fields["title"]
    ev = pair_evidence(q, t, fields.get("brand"), " ".join(fields[f] for f in TEXTS if fields.get(f)))
    asks = f'The shopper searches for "{q}"' + (f", a {ev.head}" if ev.head else "")
    qm = sorted(measures(q))
    asks += (f" of {', '.join(f'{n} {u}' for n, u in qm)}" if qm else "") + "."
    short = " ".join(t.split()[:TITLE_WORDS]) + (" ..." if len(t.split()) > TITLE_WORDS else "")
    item = f'The item is "{short}"' + (f" by {fields['brand']}" if fields.get("brand") else "") + \
        (f", colour {fields['color']}" if fields.get("color") else "") + "."
    if not ev.head:
        cat = "The query names no product type."
    elif ev.head_found:
        cat = f'The title names the product type "{ev.head}".'
    else:
        cat = f'The title does not name "{ev.head}", the product type asked for.'
    attrs = [f"Shares {', '.join(ev.found)}" if ev.found else "Shares no query term",
             f"lacks {', '.join(ev.missing)}" if ev.missing else "lacks none"]
    attrs += [f"the texts have {', '.join(ev.in_texts)}"] if ev.in_texts else []
    attrs += [f"{m} agrees" for m in ev.measures_agree] + ev.measures_conflict
    attrs += [f"has excluded {w}" for w in ev.excluded_present]
    rule = next((r for r in rules if re.search(rf"\b{re.escape(gold.name)}\b", r.text)), None)
    judge = _judgement(gold, scheme, ev) + (f" Rule: {rule.text}" if rule else "")
    return [asks, item, cat, "; ".join(attrs) + ".", judge]


@dataclass
class CoTResult:
    frame: pd.DataFrame  # one row per pair kept
    quarantine: pd.DataFrame  # input rows that could not be used, with `reason`
    stats: dict[str, Any]


def build_cot(
    df: pd.DataFrame,
    *,
    gold_col: str,
    builder: PromptBuilder,
    columns: Any,
    index: RuleIndex,
    engine: Any | None,
    cfg: CoTConfig,
    progress: Callable[[int], None] | None = None,
) -> CoTResult:
    """Reasoning data for the labelled pairs in `df` (see the module docstring for the rules)."""
    scheme = builder.scheme
    if gold_col not in df.columns:
        raise ValueError(f"input: gold label column {gold_col!r} is missing; found {list(df.columns)} (set `gold`)")
    df = df.reset_index(drop=True)
    fields_df, gold, reasons = _checked(df, gold_col, columns, scheme)
    ok = [i for i, r in enumerate(reasons) if r is None]
    if cfg.limit:
        ok = ok[: cfg.limit]
    rows = [{f: fields_df.at[i, f] for f in FIELDS} for i in ok]
    fields, _ = builder.cut_fields(rows)
    rules = [index.search(" ".join(v for v in f.values() if v), cfg.rules_per_pair) if cfg.rules_per_pair else [] for f in fields]
    teacher = _ask_teacher(engine, builder, fields, rules, [gold[i] for i in ok], cfg, progress)

    records = []
    for j, i in enumerate(ok):
        g = gold[i]
        assert g is not None
        s = teacher.steps[j] if teacher.steps[j] is not None else template_steps(fields[j], g, scheme, rules[j])
        records.append({
            "pair_id": j, **{k: str(df.at[i, k]) for k in columns.keys}, **{f: rows[j][f] for f in FIELDS},
            "gold": g.name, "source": "teacher" if teacher.steps[j] is not None else "template",
            "attempts": teacher.attempts[j], "teacher_label": teacher.label[j], "teacher_response": teacher.text[j],
            "rules": ",".join(r.id for r in rules[j]), "steps": s,
            "response_post_cot": format_response(g, s, "post_cot"),
            "response_think_first": format_response(g, s, "think_first")})
    frame = pd.DataFrame.from_records(records)
    if cfg.negatives_per_query and len(frame):
        frame = pd.concat([frame, built_negatives(frame, scheme, cfg.negatives_per_query, cfg.seed, columns.keys)], ignore_index=True)
    bad = [i for i, r in enumerate(reasons) if r is not None]
    quarantine = df.iloc[bad].astype(str).assign(reason=[reasons[i] for i in bad]).reset_index(drop=True)
    return CoTResult(frame, quarantine, _stats(frame, quarantine, teacher))


def _checked(df: pd.DataFrame, gold_col: str, columns: Any,
             scheme: LabelScheme) -> tuple[pd.DataFrame, list[Label | None], list[str | None]]:
    """The serving fields, the parsed gold label and the quarantine reason (None: usable) of every row."""
    from taosr1.core.validate import duplicate_mask, validate_rows

    fields_df, reasons = validate_rows(df, columns)
    reasons = list(reasons)
    dup = duplicate_mask(df, columns.keys).tolist()
    gold: list[Label | None] = []
    for i, v in enumerate(df[gold_col].tolist()):
        lab = scheme.parse(v)
        gold.append(lab)
        if reasons[i] is None and dup[i]:
            reasons[i] = "duplicate_key: this key appeared earlier in the input"
        if reasons[i] is None and lab is None:
            reasons[i] = f"bad_gold: {gold_col} value {str(v)[:40]!r} is not a label of scheme {scheme.name}"
    return fields_df, gold, reasons


@dataclass
class _TeacherRun:
    """Per pair: the accepted steps (None: the template writes them), attempts, the last answer and
    its label; and the counts over all answers."""
    steps: list[list[str] | None]
    attempts: list[int]
    label: list[str | None]
    text: list[str | None]
    outcomes: Counter
    responses: int = 0
    agreeing: int = 0


def _ask_teacher(engine: Any | None, builder: PromptBuilder, fields: list[dict], rules: list, gold: list[Label],
                 cfg: CoTConfig, progress: Callable[[int], None] | None) -> _TeacherRun:
    """Up to cfg.attempts rounds; each round asks again only the pairs whose answer was rejected
    (unparseable, another label than gold, or not five steps)."""
    n = len(fields)
    run = _TeacherRun([None] * n, [0] * n, [None] * n, [None] * n, Counter())
    pending = list(range(n)) if engine is not None else []
    prompts = teacher_prompts(builder, fields, rules) if pending else []
    for attempt in range(1, cfg.attempts + 1 if engine is not None else 1):
        if not pending:
            break
        gens = engine.generate([prompts[j] for j in pending], n=1, temperature=cfg.temperature,
                               max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + attempt, progress=progress)
        still = []
        for j, g in zip(pending, gens):
            run.attempts[j] = attempt
            parsed = parse_response(g[0], builder.scheme, "post_cot")
            run.responses += 1
            run.label[j] = parsed.label.name if parsed.label else None
            run.text[j] = g[0]  # the last answer, kept for inspection
            if parsed.label is None:
                run.outcomes["unparseable"] += 1
            elif parsed.label != gold[j]:
                run.outcomes["label_mismatch"] += 1
            else:
                run.agreeing += 1
                s = parse_steps(parsed.reasoning)
                if s is None:
                    run.outcomes["missing_steps"] += 1
                else:
                    run.outcomes["accepted"] += 1
                    run.steps[j] = s
                    continue
            still.append(j)
        pending = still
    return run


def _stats(frame: pd.DataFrame, quarantine: pd.DataFrame, teacher: _TeacherRun) -> dict[str, Any]:
    n = len(frame)
    teacher_rows = int((frame["source"] == "teacher").sum()) if n else 0
    return {
        "pairs": n,
        "built_negatives": int((frame["source"] == "built_negative").sum()) if n else 0,
        "quarantined": len(quarantine),
        "teacher_rows": teacher_rows,
        "template_rows": n - teacher_rows,
        "pair_agreement_rate": round(teacher_rows / n, 4) if n else 0.0,  # pairs whose reasoning is the teacher's
        # teacher label == gold, per response
        "response_label_agreement": round(teacher.agreeing / teacher.responses, 4) if teacher.responses else 0.0,
        "teacher_responses": teacher.responses,
        "outcomes": dict(teacher.outcomes),
        "gold_counts": frame["gold"].value_counts().to_dict() if n else {},
        "rules_used": Counter(r for x in frame["rules"] for r in x.split(",") if r).most_common(5) if n else [],
    }


def built_negatives(frame: pd.DataFrame, scheme: LabelScheme, per_query: int, seed: int,
                    keys: Sequence[str] = ()) -> pd.DataFrame:
    """Each query with `per_query` items of other queries, graded the scheme's worst label.

    The items come from `negative_items`: another query's, sharing no content word with this
    query, so the pair is almost always irrelevant. The rows carry the rule teacher's reasoning
    like any other. A key column that maps one to one onto the query (query_id) keeps the
    query's value; the others (product_id) read `built-<pair_id>`.
    """
    worst = scheme.labels[-1]
    query_keys = [k for k in keys if frame.groupby("query")[k].nunique().max() == 1
                  and frame.groupby(k)["query"].nunique().max() == 1]
    if keys and len(query_keys) == len(keys):  # at least one key must be new, or the pair repeats a real key
        query_keys = query_keys[:-1]
    recs, next_id = [], int(frame["pair_id"].max()) + 1
    for q, own, it in negative_items(frame, per_query, seed):
        fields = {"query": q, **{f: it.get(f) for f in FIELDS[1:]}}
        s = template_steps(fields, worst, scheme, [])
        recs.append({"pair_id": next_id, **{k: own.iloc[0][k] if k in query_keys else f"built-{next_id}" for k in keys},
                     **{f: fields.get(f) for f in FIELDS}, "gold": worst.name, "source": "built_negative",
                     "attempts": 0, "teacher_label": None, "teacher_response": None, "rules": "", "steps": s,
                     "response_post_cot": format_response(worst, s, "post_cot"),
                     "response_think_first": format_response(worst, s, "think_first")})
        next_id += 1
    return pd.DataFrame.from_records(recs, columns=frame.columns)


def run_cot(cfg: CoTConfig, values_hash: str = "") -> dict[str, Any]:
    """`taosr1 cot`: read the pairs, build the data, write cot.parquet and the stage marker."""
    from pathlib import Path

    from taosr1.core.resources import sample_path
    from taosr1.core.validate import check_columns
    from taosr1.labeling.engines import make_engine
    from taosr1.storage.bundled import read_pairs
    from taosr1.training.common import COT_FILE, serving_setup, write_stage
    from taosr1.training.rules import load_rules

    if not cfg.output_dir:
        raise ConfigError("output_dir is not set; give --output DIR or output_dir in the config")
    serving = serving_setup(cfg.label_config, cfg.labels, "post_cot")
    src = cfg.input or str(sample_path())
    df = read_pairs(src)
    check_columns(df, serving.label_config.columns, source=src)
    index = RuleIndex(load_rules(cfg.rules))
    engine = make_engine(dataclasses.replace(cfg.teacher, model=cfg.teacher.model or "base")) if cfg.attempts > 0 else None
    tok = engine.tokenizer if engine is not None else _tokenizer(cfg.teacher.model)
    builder = PromptBuilder(tok, serving.scheme, serving.prompt)
    result = build_cot(df, gold_col=cfg.gold, builder=builder, columns=serving.label_config.columns,
                       index=index, engine=engine, cfg=cfg)
    soft = {}
    if cfg.soft_labels:
        from taosr1.training.soft_labels import cosine_soft_labels  # MiniLM: the bench extra, imported on use

        probs, soft = cosine_soft_labels(result.frame, serving.scheme)
        result.frame["soft_labels"] = [list(map(float, p)) for p in probs]
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.frame.to_parquet(out / COT_FILE, index=False)
    result.quarantine.to_parquet(out / "quarantine.parquet", index=False)
    summary = {"input": src, "labels": serving.scheme.name, "teacher": getattr(engine, "model_path", None), **result.stats,
               **({"soft_labels": soft} if soft else {})}
    write_stage(out, "cot", summary, values_hash)
    return summary


def _tokenizer(model: str):
    from taosr1.labeling.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(model or "base"))
