"""Predictions joined to gold labels, both parsed into one label scheme.

Gold labels come in any spelling (`scheme.parse`); rows that do not join or do not parse
are refused with counts and examples, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from taosr1.core.labels import LabelScheme, load_scheme


@dataclass
class Labelled:
    """Rows with a prediction and a gold label, as indices into `scheme.labels` (best first)."""

    frame: pd.DataFrame  # the prediction rows kept, with the raw gold value in column `gold`
    scheme: LabelScheme
    gold: np.ndarray
    pred: np.ndarray
    probs: np.ndarray | None  # [n, k] P(label) in scheme order, when the p_<label> columns are there
    excluded_unparsed: int = 0  # rows left out because their gold value is not a label (--drop-unparsed)
    gold_without_prediction: int = 0  # gold rows (from --gold) that no prediction matched

    @property
    def n(self) -> int:
        return len(self.gold)


def scheme_of(df: pd.DataFrame, labels: str | None, source: str) -> LabelScheme:
    """`labels` when given, else the one scheme named in the `label_scheme` column, else `taosr1`."""
    if labels:
        return load_scheme(labels)
    if "label_scheme" in df.columns:
        names = sorted({str(v) for v in df["label_scheme"].dropna().unique()})
        if len(names) > 1:
            raise ValueError(f"{source}: column label_scheme holds several schemes {names}; evaluate one at a time "
                             f"or pass --labels")
        if names:
            return load_scheme(names[0])
    return load_scheme("taosr1")


def common_scheme(a: pd.DataFrame, b: pd.DataFrame, labels: str | None, source_a: str, source_b: str) -> LabelScheme:
    """The scheme of two prediction sets compared with each other (scheme_of each); they must agree."""
    scheme = scheme_of(a, labels, source_a)
    if not labels and "label_scheme" in b.columns:
        other = scheme_of(b, None, source_b)
        if other.name != scheme.name:
            raise ValueError(f"{source_a} uses label scheme {scheme.name}, {source_b} uses {other.name}; "
                             f"compare predictions in one scheme (or force one with --labels)")
    return scheme


def parse_labels(values: pd.Series, scheme: LabelScheme) -> np.ndarray:
    """Index of each value's label in `scheme.labels`, -1 where the value is not a label."""
    index = {lab.name: i for i, lab in enumerate(scheme.labels)}
    out = np.full(len(values), -1, dtype=np.int64)
    for j, v in enumerate(values.to_numpy(dtype=object)):
        lab = scheme.parse(v)
        if lab is not None:
            out[j] = index[lab.name]
    return out


def _examples(values, limit: int = 5) -> list[str]:
    seen: list[str] = []
    for v in values:
        s = repr(v)
        if s not in seen:
            seen.append(s)
        if len(seen) == limit:
            break
    return seen


def _key_frame(df: pd.DataFrame, keys: list[str], source: str) -> pd.DataFrame:
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise ValueError(f"{source}: key column(s) {missing} not found (columns: {list(df.columns)}); "
                         f"name the keys with --key-col")
    # Keys compare as text: a CSV reads ids as strings, Parquet may hold them as integers.
    k = df[keys].astype(str)
    dup = k.duplicated(keep=False)
    if dup.any():
        ex = k[dup].drop_duplicates().head(3).to_dict("records")
        raise ValueError(f"{source}: {int(k.duplicated().sum())} row(s) repeat a key {keys}, e.g. {ex}; "
                         f"each pair must appear once")
    return k


def join_gold(pred: pd.DataFrame, gold: pd.DataFrame, keys: list[str], gold_col: str,
              pred_source: str, gold_source: str) -> tuple[pd.DataFrame, int]:
    """Predictions with the gold value in column `gold`; refuses predictions without a gold row.

    Returns the joined frame and the number of gold rows no prediction matched (pairs that were
    quarantined or not graded: reported, not an error).
    """
    if gold_col not in gold.columns:
        raise ValueError(f"{gold_source}: gold column {gold_col!r} not found (columns: {list(gold.columns)})")
    pk = _key_frame(pred, keys, pred_source)
    gk = _key_frame(gold, keys, gold_source)
    gk = gk.assign(gold=gold[gold_col].to_numpy(dtype=object))
    joined = pk.reset_index().merge(gk, on=keys, how="left", indicator=True)
    lost = joined["_merge"] != "both"
    if lost.any():
        ex = joined.loc[lost, keys].head(5).to_dict("records")
        raise ValueError(
            f"{int(lost.sum())} of {len(pred)} prediction row(s) in {pred_source} have no gold label in {gold_source} "
            f"on keys {keys} (keys compared as text), e.g. {ex}; evaluate only pairs that have gold labels, or fix "
            f"the keys (--key-col)")
    out = pred.copy()
    out["gold"] = joined.set_index("index").loc[pred.index, "gold"].to_numpy(dtype=object)
    return out, len(gold) - len(pred)


def labelled(pred: pd.DataFrame, *, gold_col: str, source: str, gold: pd.DataFrame | None = None,
             gold_source: str = "", keys: list[str] | None = None, labels: str | None = None,
             drop_unparsed: bool = False) -> Labelled:
    """Parse predictions (column `label`, else `grade`) and gold labels into one scheme.

    Gold values that are not labels of the scheme are refused with their count and examples;
    with `drop_unparsed` those rows are left out and counted in `excluded_unparsed`.
    """
    scheme = scheme_of(pred, labels, source)
    if "run_date" in pred.columns and pred["run_date"].nunique() > 1:
        dates = sorted(map(str, pred["run_date"].dropna().unique()))
        raise ValueError(f"{source}: holds {len(dates)} runs ({dates[0]} .. {dates[-1]}); evaluate one at a time "
                         f"with --run-date")
    gold_only = 0
    if gold is not None:
        frame, gold_only = join_gold(pred, gold, keys or ["query_id", "product_id"], gold_col, source, gold_source)
    else:
        if gold_col not in pred.columns:
            raise ValueError(f"{source}: gold column {gold_col!r} not found (columns: {list(pred.columns)}); "
                             f"name it with --gold-col, or join gold labels from a table with --gold")
        frame = pred.copy()
        frame["gold"] = pred[gold_col].to_numpy(dtype=object)
    frame = frame.reset_index(drop=True)
    if len(frame) == 0:
        raise ValueError(f"{source}: no prediction rows to evaluate")
    pred_col = "label" if "label" in frame.columns else "grade" if "grade" in frame.columns else None
    if pred_col is None:
        raise ValueError(f"{source}: no `label` (or `grade`) column of predictions (columns: {list(pred.columns)})")
    p = parse_labels(frame[pred_col], scheme)
    if (p < 0).any():
        bad = frame.loc[p < 0, pred_col]
        raise ValueError(f"{source}: {len(bad)} predicted value(s) in column {pred_col} are not labels of scheme "
                         f"{scheme.name} {scheme.names}, e.g. {_examples(bad)}; pass the scheme with --labels")
    g = parse_labels(frame["gold"], scheme)
    excluded = int((g < 0).sum())
    if excluded:
        bad = frame.loc[g < 0, "gold"]
        if not drop_unparsed:
            raise ValueError(
                f"{source}: {excluded} of {len(frame)} gold value(s) ({gold_col}) are not labels of scheme "
                f"{scheme.name} (names, tokens, grades or aliases of {scheme.names}), e.g. {_examples(bad)}; "
                f"fix them, pass the right scheme with --labels, or leave those rows out with --drop-unparsed")
        keep = g >= 0
        if not keep.any():
            raise ValueError(f"{source}: none of the {len(frame)} gold value(s) ({gold_col}) is a label of scheme "
                             f"{scheme.name}, e.g. {_examples(bad)}")
        frame, p, g = frame[keep].reset_index(drop=True), p[keep], g[keep]
    probs = None
    if all(c in frame.columns for c in scheme.prob_columns):
        probs = frame[scheme.prob_columns].to_numpy(dtype=float)
    return Labelled(frame=frame, scheme=scheme, gold=g, pred=p, probs=probs, excluded_unparsed=excluded,
                    gold_without_prediction=gold_only)
