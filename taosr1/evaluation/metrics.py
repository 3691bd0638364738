"""Classification metrics of graded predictions, with bootstrap intervals.

Point estimates come from scikit-learn. Bootstrap resamples use the fact that every
metric here is a function of the confusion matrix: resampling n rows with replacement
is drawing the confusion counts from a multinomial over the observed cells, so one
resample costs O(k^2), not O(n), and a million-row night bootstraps as fast as a sample.
`confusion_scalars` computes the scalar metrics from confusion matrices for that; a test
holds it equal to scikit-learn.

Pairs of one query are not independent (one query's items share its wording, its intent and
often its grade), so intervals can resample whole queries instead (`clusters`): queries whose
rows fall in the same cells are interchangeable, and drawing Q queries with replacement is
drawing how many of each such kind, one multinomial again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from taosr1.core.labels import LabelScheme

SCALARS = ("accuracy", "macro_f1", "ordinal_mae", "tier_accuracy", "tier_macro_f1")


def _f(x: Any) -> float | None:
    """JSON-friendly float: NaN (undefined, e.g. precision of a class never predicted) -> None."""
    x = float(x)
    return None if np.isnan(x) else x


def tier_index(scheme: LabelScheme) -> np.ndarray:
    """For each label (scheme order), the index of its tier in `scheme.tiers`."""
    return np.array([scheme.tiers.index(lab.tier) for lab in scheme.labels], dtype=np.int64)


def present(*idx: np.ndarray) -> list[int]:
    """Classes that occur in the gold labels or the predictions: the classes macro averages run over
    (scikit-learn's default), so a scheme label nobody used neither helps nor hurts."""
    return sorted(set(np.concatenate([np.asarray(i) for i in idx]).tolist()))


def evaluate(gold: np.ndarray, pred: np.ndarray, scheme: LabelScheme) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1, confusion matrix, ordinal error and tier metrics.

    `gold` and `pred` index `scheme.labels` (best grade first). Per-class precision (recall) of a
    class never predicted (never in the gold labels) is undefined and reported as None.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        mean_absolute_error,
        precision_recall_fscore_support,
    )

    gold, pred = np.asarray(gold), np.asarray(pred)
    k = len(scheme.labels)
    grades = np.array(scheme.grades, dtype=float)
    classes = present(gold, pred)
    p, r, f1, support = precision_recall_fscore_support(gold, pred, labels=list(range(k)), zero_division=np.nan)
    predicted = np.bincount(pred, minlength=k)
    per_class = {
        lab.name: {"grade": lab.grade, "tier": lab.tier, "precision": _f(p[i]), "recall": _f(r[i]), "f1": _f(f1[i]),
                   "support": int(support[i]), "predicted": int(predicted[i])}
        for i, lab in enumerate(scheme.labels)
    }
    t_of = tier_index(scheme)
    tg, tp = t_of[gold], t_of[pred]
    t_classes = present(tg, tp)
    tk = len(scheme.tiers)
    tp_, tr_, tf_, ts_ = precision_recall_fscore_support(tg, tp, labels=list(range(tk)), zero_division=np.nan)
    t_pred = np.bincount(tp, minlength=tk)
    return {
        "n": int(len(gold)),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold, pred, labels=classes, average="weighted", zero_division=0)),
        "ordinal_mae": float(mean_absolute_error(grades[gold], grades[pred])),
        "macro_over": [scheme.labels[i].name for i in classes],
        "per_class": per_class,
        "confusion": {"labels": scheme.names, "rows": "gold", "columns": "predicted",
                      "matrix": confusion_matrix(gold, pred, labels=list(range(k))).tolist()},
        "tiers": {
            "accuracy": float(accuracy_score(tg, tp)),
            "macro_f1": float(f1_score(tg, tp, labels=t_classes, average="macro", zero_division=0)),
            "per_tier": {t: {"precision": _f(tp_[i]), "recall": _f(tr_[i]), "f1": _f(tf_[i]),
                             "support": int(ts_[i]), "predicted": int(t_pred[i])}
                         for i, t in enumerate(scheme.tiers)},
            "confusion": {"labels": scheme.tiers, "rows": "gold", "columns": "predicted",
                          "matrix": confusion_matrix(tg, tp, labels=list(range(tk))).tolist()},
        },
    }


def macro_f1_of(conf: np.ndarray, classes: list[int]) -> np.ndarray:
    """Mean F1 over `classes` from confusion matrices `conf[..., gold, pred]` (a class with no gold and
    no prediction counts 0)."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    denom = conf.sum(-1) + conf.sum(-2)  # 2tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    return f1[..., classes].mean(-1)


def label_indices(scheme: LabelScheme, names: list[str] | tuple[str, ...]) -> list[int]:
    """Scheme indices of grade names given to --macro-over; an unknown name is an error naming the scheme's labels."""
    unknown = [n for n in names if n not in scheme.names]
    if unknown:
        raise ValueError(f"--macro-over: {unknown} are not labels of scheme {scheme.name} {scheme.names}")
    return [scheme.names.index(n) for n in names]


def scalars_of(m: dict[str, Any], over: list[int] | None = None) -> dict[str, float]:
    """The SCALARS of one `evaluate` result; with `over` (class indices) also `macro_f1_over`, the mean
    F1 over those classes."""
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ordinal_mae": m["ordinal_mae"],
           "tier_accuracy": m["tiers"]["accuracy"], "tier_macro_f1": m["tiers"]["macro_f1"]}
    if over:
        out["macro_f1_over"] = float(macro_f1_of(np.asarray(m["confusion"]["matrix"]), over))
    return out


def confusion_scalars(conf: np.ndarray, scheme: LabelScheme, classes: list[int], tier_classes: list[int],
                      over: list[int] | None = None) -> dict[str, np.ndarray]:
    """The SCALARS from confusion matrices `conf[..., gold, pred]` (any leading batch shape), and
    `macro_f1_over` with `over`, as `scalars_of` gives the point estimate.

    Macro averages run over the fixed `classes` / `tier_classes`, as in the point estimate.
    """
    conf = np.asarray(conf, dtype=float)
    n = conf.sum((-2, -1))
    grades = np.array(scheme.grades, dtype=float)
    dist = np.abs(grades[:, None] - grades[None, :])
    onehot = np.eye(len(scheme.tiers))[tier_index(scheme)]  # [k, tiers]
    tconf = onehot.T @ conf @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "accuracy": np.trace(conf, axis1=-2, axis2=-1) / n,
            "macro_f1": macro_f1_of(conf, classes),
            "ordinal_mae": (conf * dist).sum((-2, -1)) / n,
            "tier_accuracy": np.trace(tconf, axis1=-2, axis2=-1) / n,
            "tier_macro_f1": macro_f1_of(tconf, tier_classes),
        }
    if over:
        out["macro_f1_over"] = macro_f1_of(conf, over)
    return out


def resample_confusions(codes: np.ndarray, n_cells: int, n_boot: int, seed: int,
                        clusters: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap draws of cell counts: codes[i] is row i's cell; returns [n_boot, n_cells] counts.

    Resampling n rows with replacement = multinomial(n, observed cell shares). With `clusters`
    (a cluster id per row, e.g. the query), whole clusters are drawn with replacement: each
    cluster is its vector of cell counts, identical vectors are one kind, and Q draws of
    clusters are multinomial(Q, share of each kind) times the kinds' vectors."""
    codes = np.asarray(codes, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if clusters is None:
        counts = np.bincount(codes, minlength=n_cells)
        n = int(counts.sum())
        return rng.multinomial(n, counts / n, size=n_boot)
    _, ids = np.unique(np.asarray(clusters), return_inverse=True)
    ids = ids.reshape(-1)
    per = np.bincount(ids * n_cells + codes, minlength=(ids.max() + 1) * n_cells).reshape(-1, n_cells)
    kinds, count = np.unique(per, axis=0, return_counts=True)
    out = np.empty((n_boot, n_cells), dtype=np.int64)
    kinds_f = kinds.astype(np.float64)  # a BLAS product; counts stay exact far below 2^53
    for lo in range(0, n_boot, 256):  # bounded memory however many kinds there are
        draws = rng.multinomial(len(per), count / len(per), size=min(256, n_boot - lo))
        out[lo:lo + len(draws)] = np.rint(draws @ kinds_f)
    return out


def clusters_of(frame, unit: str) -> tuple[np.ndarray | None, str]:
    """The cluster id per row that intervals resample by, and how they were drawn, for the report.

    `unit` is a column (default `query_id`: a query's pairs move together) or `pair`. A frame
    without that column resamples pairs, and the description says why; a row without a value
    is a cluster of its own."""
    if unit == "pair":
        return None, "pairs"
    if unit not in frame.columns:
        return None, f"pairs (no column {unit} to resample whole clusters by)"
    missing = frame[unit].isna().to_numpy()
    ids = frame[unit].astype(str).to_numpy(dtype=object)
    ids[missing] = [f"\0row{i}" for i in np.flatnonzero(missing)]
    return ids, f"whole {unit} clusters ({len(set(ids))} of them)"


def percentile_interval(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return None, None
    a = (1 - level) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_intervals(gold: np.ndarray, pred: np.ndarray, scheme: LabelScheme, *, n_boot: int = 1000,
                        level: float = 0.95, seed: int = 0,
                        clusters: np.ndarray | None = None,
                        over: list[int] | None = None) -> dict[str, dict[str, float | None]]:
    """Percentile bootstrap interval of each of SCALARS: {name: {low, high}}; rows, or whole clusters.
    `over` (class indices) adds `macro_f1_over`, the mean F1 over those classes, from the same draws."""
    gold, pred = np.asarray(gold), np.asarray(pred)
    k = len(scheme.labels)
    draws = resample_confusions(gold * k + pred, k * k, n_boot, seed, clusters).reshape(n_boot, k, k)
    t = tier_index(scheme)
    vals = confusion_scalars(draws, scheme, present(gold, pred), present(t[gold], t[pred]), over)
    out = {}
    for name in vals:
        lo, hi = percentile_interval(vals[name], level)
        out[name] = {"low": lo, "high": hi}
    return out


def by_segment(gold: np.ndarray, pred: np.ndarray, segments, scheme: LabelScheme, *, n_boot: int = 1000,
               level: float = 0.95, seed: int = 0, clusters: np.ndarray | None = None):
    """One row per segment value: n, accuracy and macro-F1 with intervals, ordinal error, tier accuracy."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

    seg = pd.Series(segments).astype(object).where(pd.Series(segments).notna(), "(missing)").astype(str).to_numpy()
    grades = np.array(scheme.grades, dtype=float)
    t = tier_index(scheme)
    rows = []
    for value in sorted(set(seg)):
        m = seg == value
        g, p = gold[m], pred[m]
        ci = bootstrap_intervals(g, p, scheme, n_boot=n_boot, level=level, seed=seed,
                                 clusters=None if clusters is None else np.asarray(clusters)[m]) if n_boot else {}
        rows.append({
            "segment": value, "n": int(m.sum()),
            "accuracy": float(accuracy_score(g, p)),
            "accuracy_low": ci.get("accuracy", {}).get("low"), "accuracy_high": ci.get("accuracy", {}).get("high"),
            "macro_f1": float(f1_score(g, p, labels=present(g, p), average="macro", zero_division=0)),
            "macro_f1_low": ci.get("macro_f1", {}).get("low"), "macro_f1_high": ci.get("macro_f1", {}).get("high"),
            "ordinal_mae": float(mean_absolute_error(grades[g], grades[p])),
            "tier_accuracy": float(accuracy_score(t[g], t[p])),
        })
    return pd.DataFrame(rows)
