"""How well `score` orders the items of each query: what ranking teams read the grades for.

- NDCG@10 per query with gains grade - worst grade (ESCI: E 3 / S 2 / C 1 / I 0), averaged over the
  queries with at least one item of positive gain (a query of Irrelevant items only has no ideal
  order to reach). Items with equal scores count at their average position (sklearn's `ndcg_score`
  without `ignore_ties`), so a constant score earns what a random order earns on average.
- Spearman's rank correlation of `score` with the gold grade over all pairs.

Intervals resample whole queries (as the classification metrics do); `paired_ranking` resamples
the same queries on both sides of a comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

K = 10


def per_query_ndcg(query: np.ndarray, gain: np.ndarray, score: np.ndarray, k: int = K) -> pd.Series:
    """NDCG@k of each query with a positive gain somewhere, indexed by query."""
    from sklearn.metrics import ndcg_score

    out = {}
    frame = pd.DataFrame({"q": query, "g": gain, "s": score})
    for q, rows in frame.groupby("q", sort=True):
        g = rows["g"].to_numpy(float)
        if g.max() <= 0:
            continue
        out[q] = 1.0 if len(g) == 1 else float(ndcg_score([g], [rows["s"].to_numpy(float)], k=k))
    return pd.Series(out, dtype=float)


def gains(gold: np.ndarray, scheme) -> np.ndarray:
    """Each gold label's gain: its grade above the scheme's worst grade."""
    grades = np.asarray(scheme.grades, dtype=float)
    return grades[np.asarray(gold)] - grades.min()


def spearman(score: np.ndarray, grade: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if np.ptp(score) == 0 or np.ptp(grade) == 0:
        return None
    return float(spearmanr(score, grade).statistic)


def ranking_metrics(query: np.ndarray, gold: np.ndarray, score: np.ndarray, scheme, *, n_boot: int = 0,
                    level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """NDCG@10 over queries and Spearman(score, grade), with query-bootstrap intervals."""
    g = gains(gold, scheme)
    nd = per_query_ndcg(query, g, score)
    out: dict[str, Any] = {f"ndcg_at_{K}": float(nd.mean()) if len(nd) else None, "spearman": spearman(score, g),
                           "queries": int(len(nd)), "queries_without_gain": int(pd.Series(query).nunique() - len(nd)),
                           "ci": {}}
    if n_boot and len(nd):
        draws = _query_draws(nd.index.to_numpy(), n_boot, seed)
        vals = nd.to_numpy()[draws].mean(1)
        out["ci"][f"ndcg_at_{K}"] = _interval(vals, level)
    return out


def paired_ranking(query: np.ndarray, gold: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, scheme, *,
                   n_boot: int = 0, level: float = 0.95, seed: int = 0) -> dict[str, dict[str, Any]]:
    """B - A in NDCG@10 and Spearman, each with an interval over the same resampled queries."""
    g = gains(gold, scheme)
    nd_a, nd_b = per_query_ndcg(query, g, score_a), per_query_ndcg(query, g, score_b)
    sa, sb = spearman(score_a, g), spearman(score_b, g)
    out = {f"ndcg_at_{K}": _diff(nd_a.mean(), nd_b.mean()), "spearman": _diff(sa, sb)}
    if not n_boot or not len(nd_a):
        return out
    qs = nd_a.index.to_numpy()
    draws = _query_draws(qs, n_boot, seed)
    d = nd_b.to_numpy()[draws].mean(1) - nd_a.to_numpy()[draws].mean(1)
    out[f"ndcg_at_{K}"].update(_interval(d, level))
    if sa is not None and sb is not None:
        rows = pd.Series(np.arange(len(query))).groupby(pd.Series(query).to_numpy()).apply(np.asarray)
        spear = [_spearman_draw(rows, qs_draw, score_a, score_b, g) for qs_draw in qs[draws[: min(n_boot, 200)]]]
        out["spearman"].update(_interval(np.array([x for x in spear if x is not None]), level))
    return out


def _spearman_draw(rows: pd.Series, queries, score_a, score_b, g) -> float | None:
    idx = np.concatenate([rows[q] for q in queries])
    a, b = spearman(score_a[idx], g[idx]), spearman(score_b[idx], g[idx])
    return None if a is None or b is None else b - a


def _diff(a, b) -> dict[str, Any]:
    a = None if a is None or (isinstance(a, float) and np.isnan(a)) else float(a)
    b = None if b is None or (isinstance(b, float) and np.isnan(b)) else float(b)
    return {"a": a, "b": b, "difference": None if a is None or b is None else b - a, "low": None, "high": None,
            "interval_excludes_zero": None}


def _query_draws(queries: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(queries), size=(n_boot, len(queries)))


def _interval(values: np.ndarray, level: float) -> dict[str, Any]:
    if not len(values):
        return {"low": None, "high": None, "interval_excludes_zero": None}
    a = (1 - level) / 2
    lo, hi = (float(x) for x in np.quantile(values, [a, 1 - a]))
    return {"low": lo, "high": hi, "interval_excludes_zero": bool(lo > 0 or hi < 0)}
