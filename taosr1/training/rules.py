"""The rules knowledge base: small "atomic rules" with tags, searched per pair with BM25.

TaoSR1 built its CoT data with retrieval-augmented generation: business rules broken into
atomic rules, the ones that apply to a pair retrieved and put in the teacher's prompt.
Retrieval is rank-bm25's BM25Okapi over each rule's text and tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from taosr1.core.config import ConfigError, read_yaml
from taosr1.core.resources import conf_dir

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-case word tokens, the same for rules and pairs."""
    return _WORD.findall((text or "").lower())


@dataclass(frozen=True)
class Rule:
    id: str
    text: str
    tags: tuple[str, ...] = ()

    @property
    def is_default(self) -> bool:
        return "default" in self.tags


def _rules_from_file(path: Path) -> list[Rule]:
    data = read_yaml(path)
    bad = sorted(set(data) - {"rules"})
    if bad:
        raise ConfigError(f"rules file {path}: unknown key(s) {bad}; the file holds one key, `rules`")
    out = []
    for i, raw in enumerate(data.get("rules") or []):
        if not isinstance(raw, dict):
            raise ConfigError(f"rules file {path}: rule #{i + 1} must be a mapping with id, text, tags")
        unknown = sorted(set(raw) - {"id", "text", "tags"})
        missing = sorted({"id", "text"} - set(raw))
        if unknown or missing:
            raise ConfigError(
                f"rules file {path}: rule #{i + 1} has unknown key(s) {unknown} / lacks {missing}; "
                "each rule needs id and text (tags optional)"
            )
        out.append(Rule(id=str(raw["id"]), text=str(raw["text"]).strip(), tags=tuple(str(t).lower() for t in raw.get("tags") or ())))
    return out


def load_rules(path: str | Path = "") -> list[Rule]:
    """Every rule in a YAML file, or in every *.yaml of a folder ("" = conf/rules)."""
    p = Path(path) if path else conf_dir() / "rules"
    if not p.exists():
        raise ConfigError(f"rules {p} does not exist; give a YAML file or a folder of them (default conf/rules)")
    files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    rules = [r for f in files for r in _rules_from_file(f)]
    if not rules:
        raise ConfigError(f"rules {p} holds no rules")
    seen: dict[str, int] = {}
    for r in rules:
        seen[r.id] = seen.get(r.id, 0) + 1
    dup = sorted(k for k, v in seen.items() if v > 1)
    if dup:
        raise ConfigError(f"rules {p}: rule ids must be unique, repeated: {dup}")
    return rules


class RuleIndex:
    """BM25 over the rules' text and tags; `search` returns the rules that apply to a text."""

    def __init__(self, rules: Sequence[Rule]):
        from rank_bm25 import BM25Okapi

        self.rules = list(rules)
        self.bm25 = BM25Okapi([words(r.text) + list(r.tags) for r in self.rules])
        self.defaults = [r for r in self.rules if r.is_default]

    def search(self, text: str, k: int = 3) -> list[Rule]:
        """The `k` best-scoring rules (score > 0), topped up with `default` rules when fewer match."""
        scores = self.bm25.get_scores(words(text))
        order = sorted(range(len(self.rules)), key=lambda i: (-scores[i], i))
        found = [self.rules[i] for i in order if scores[i] > 0][:k]
        for r in self.defaults:
            if len(found) >= k:
                break
            if r not in found:
                found.append(r)
        return found
