"""Row validation: every input row is either fit to grade or quarantined with a reason.

Rules (the same for the CLI and the nightly job):
- query and title are required text; null/NaN -> `missing_<field>`, empty or whitespace
  only (after cleaning) -> `empty_<field>`, a number, list or other non-text -> `wrong_type_<field>`.
- optional item fields: null or empty is fine (left out of the prompt); non-text -> `wrong_type_<field>`.
- a null key -> `missing_key`; repeats of a key within one run -> `duplicate_key` (the first is graded).
- text is cleaned, not rejected: control characters dropped, lone surrogates replaced by U+FFFD;
  emoji, CJK, right-to-left and zero-width characters are kept as they are.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from taosr1.core.prompts import FIELDS

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass
class ColumnConfig:
    """Which input columns hold the keys and the pair's fields.

    Parameters:
        keys: columns that identify a pair; each key appears once in the output.
        query, title: required text columns.
        brand, color, category, attributes, bullets, description: optional item columns, used when
            present (defaults fit ESCI's product catalogue columns).
    """

    keys: list[str] = field(default_factory=lambda: ["query_id", "product_id"])
    query: str = "query"
    title: str = "product_title"
    brand: str = "product_brand"
    color: str = "product_color"
    category: str = "product_category"
    attributes: str = "product_attributes"
    bullets: str = "product_bullet_point"
    description: str = "product_description"

    def field_columns(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FIELDS}


def clean_text(value: str) -> str:
    return _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", value))


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def check_columns(df: pd.DataFrame, cols: ColumnConfig, source: str = "input") -> None:
    """Fail, naming each one, when a key or required column is absent."""
    missing = [c for c in [*cols.keys, cols.query, cols.title] if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; found {list(df.columns)}. "
            "Map your columns with --query-col / --title-col / --key-col (or the `columns` config section)."
        )


def validate_rows(df: pd.DataFrame, cols: ColumnConfig) -> tuple[pd.DataFrame, list[str | None]]:
    """Clean fields and a reason per row (None when the row can be graded).

    Returns a frame with columns `query`, `title`, ... (clean text or None), in input order,
    and the reasons. Duplicate keys are found separately (`duplicate_mask`), since on Spark
    they need a global view.
    """
    n = len(df)
    reasons: list[str | None] = [None] * n
    out: dict[str, list[Any]] = {}
    for f, col in cols.field_columns().items():
        required = f in ("query", "title")
        if col not in df.columns:
            out[f] = [None] * n
            continue
        values = df[col].tolist()
        clean: list[Any] = []
        for i, v in enumerate(values):
            if _is_null(v):
                clean.append(None)
                if required and reasons[i] is None:
                    reasons[i] = f"missing_{f}: {col} is null"
            elif not isinstance(v, str):
                clean.append(None)
                if reasons[i] is None:
                    reasons[i] = f"wrong_type_{f}: {col} holds {type(v).__name__} {str(v)[:40]!r}, expected text"
            else:
                c = clean_text(v).strip()
                clean.append(c or None)
                if required and not c and reasons[i] is None:
                    reasons[i] = f"empty_{f}: {col} is empty or whitespace only"
        out[f] = clean
    for key in cols.keys:
        for i, v in enumerate(df[key].tolist()):
            if _is_null(v) and reasons[i] is None:
                reasons[i] = f"missing_key: key column {key} is null"
    return pd.DataFrame(out, index=df.index), reasons


def duplicate_mask(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """True for every repeat of a key after its first occurrence."""
    return df.duplicated(subset=keys, keep="first")
