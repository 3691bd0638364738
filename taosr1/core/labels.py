"""Label schemes: the label set, its order, the token that answers each label, the tiers.

A scheme is configuration (`conf/labels/*.yaml`). Labels are kept best grade first,
the order CumPT walks them in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taosr1.core.config import ConfigError, read_yaml
from taosr1.core.resources import find_conf


@dataclass(frozen=True)
class Label:
    name: str  # identifier in outputs: the `label` column and `p_<name>`
    grade: int  # ordinal grade, higher is better
    token: str  # the one-token answer the model gives
    tier: str
    description: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelScheme:
    name: str
    labels: tuple[Label, ...]  # best grade first
    source: str = ""
    _lookup: dict[str, Label] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = f"label scheme {self.name!r} ({self.source or 'inline'})"
        if len(self.labels) < 2:
            raise ConfigError(f"{where}: needs at least two labels, found {len(self.labels)}")
        for attr in ("name", "grade", "token"):
            values = [getattr(lab, attr) for lab in self.labels]
            dup = sorted({str(v) for v in values if values.count(v) > 1})
            if dup:
                raise ConfigError(f"{where}: label {attr}s must be distinct, repeated: {dup}")
        grades = [lab.grade for lab in self.labels]
        if grades != sorted(grades, reverse=True):
            raise ConfigError(f"{where}: list labels best grade first; grades in file order are {grades}")
        lookup: dict[str, Label] = {}
        for lab in self.labels:
            for key in (lab.name, lab.token, str(lab.grade), *lab.aliases):
                k = str(key).strip().lower()
                if k in lookup and lookup[k] is not lab:
                    raise ConfigError(f"{where}: {key!r} names both {lookup[k].name} and {lab.name}")
                lookup[k] = lab
        object.__setattr__(self, "_lookup", lookup)

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def grades(self) -> list[int]:
        return [lab.grade for lab in self.labels]

    @property
    def tiers(self) -> list[str]:
        seen: list[str] = []
        for lab in self.labels:
            if lab.tier not in seen:
                seen.append(lab.tier)
        return seen

    @property
    def prob_columns(self) -> list[str]:
        return [f"p_{lab.name}" for lab in self.labels]

    def by_grade(self, grade: int) -> Label:
        for lab in self.labels:
            if lab.grade == grade:
                return lab
        raise KeyError(f"grade {grade} is not in scheme {self.name} (grades {self.grades})")

    def parse(self, value: Any) -> Label | None:
        """A gold or generated label in any accepted spelling (name, token, grade, alias)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return self._lookup.get(str(value).strip().lower())

    def answer(self, value: str) -> Label | None:
        """The label a model's answer names: its token or its name only, never a gold alias
        (in the taosr1 scheme "I" is an alias of Irrelevant, and "I think..." is no answer)."""
        v = str(value).strip().lower()
        for lab in self.labels:
            if v in (lab.token.lower(), lab.name.lower()):
                return lab
        return None

    def token_ids(self, tokenizer: Any) -> list[int]:
        """The one token id that answers each label, checked against `tokenizer`.

        Fails naming the label when its answer is not exactly one token, or when two
        labels share a token, since post-CoT scoring reads a single position.
        """
        ids: list[int] = []
        for lab in self.labels:
            pieces = tokenizer.encode(lab.token, add_special_tokens=False)
            if len(pieces) != 1:
                shown = tokenizer.convert_ids_to_tokens(pieces)
                raise ConfigError(
                    f"label scheme {self.name!r}: label {lab.name!r} answers with {lab.token!r}, which this "
                    f"tokenizer splits into {len(pieces)} tokens {shown}; post-CoT scoring needs exactly one. "
                    f"Pick a `token` that is a single token for this model (e.g. a digit or a capital letter)."
                )
            ids.append(pieces[0])
        if len(set(ids)) != len(ids):
            clash = [lab.name for lab, i in zip(self.labels, ids) if ids.count(i) > 1]
            raise ConfigError(
                f"label scheme {self.name!r}: labels {clash} map to the same token id; give them distinct tokens"
            )
        return ids


def scheme_from_dict(data: dict[str, Any], source: str = "") -> LabelScheme:
    unknown = sorted(set(data) - {"name", "labels"})
    if unknown:
        raise ConfigError(f"label scheme {source}: unknown key(s) {unknown}; valid keys are ['labels', 'name']")
    labels = []
    for i, raw in enumerate(data.get("labels") or []):
        allowed = {"name", "grade", "token", "tier", "description", "aliases"}
        bad = sorted(set(raw) - allowed)
        missing = sorted({"name", "grade", "token", "tier"} - set(raw))
        if bad or missing:
            raise ConfigError(
                f"label scheme {source}: label #{i + 1} has unknown keys {bad} / lacks {missing}; "
                f"each label needs name, grade, token, tier (description, aliases optional)"
            )
        labels.append(
            Label(
                name=str(raw["name"]),
                grade=int(raw["grade"]),
                token=str(raw["token"]),
                tier=str(raw["tier"]),
                description=str(raw.get("description", "")),
                aliases=tuple(str(a) for a in raw.get("aliases", ())),
            )
        )
    return LabelScheme(name=str(data.get("name", Path(source).stem)), labels=tuple(labels), source=source)


def load_scheme(name_or_path: str | Path = "taosr1") -> LabelScheme:
    """A scheme by name (`taosr1`, `esci`, ... under conf/labels) or by YAML path."""
    path = find_conf("labels", name_or_path)
    return scheme_from_dict(read_yaml(path), source=str(path))
