"""Did tonight's grades move? Compare one run of the grades Delta table with the run before it.

Population stability index (PSI) of the label and the tier distribution, and of the score
(in the previous night's deciles): PSI = sum over categories of (a - e) * ln(a / e), shares
floored at `epsilon`. Rules of thumb: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25
a large one. Also the share of the pairs graded on both nights whose grade changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taosr1.core.labels import LabelScheme, load_scheme
from taosr1.evaluation.config import DriftConfig


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float = 1e-4) -> tuple[float, np.ndarray]:
    """PSI of two share (or count) vectors over the same categories, and each category's term."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = np.maximum(e / e.sum(), epsilon)
    a = np.maximum(a / a.sum(), epsilon)
    terms = (a - e) * np.log(a / e)
    return float(terms.sum()), terms


def run_dates(table: str) -> list[str]:
    from taosr1.storage.tables import delta_table

    dt = delta_table(table)
    if "run_date" not in dt.metadata().partition_columns:
        raise ValueError(f"{table}: the grades table must be partitioned by run_date; its partition columns are "
                         f"{dt.metadata().partition_columns}")
    return sorted({p["run_date"] for p in dt.partitions()})


def read_run(table: str, run_date: str, keys: list[str]) -> pd.DataFrame:
    """One night's rows: keys and whichever of grade, label, tier, score, label_scheme the table has."""
    from taosr1.storage.tables import delta_table

    dt = delta_table(table)
    have = [f.name for f in dt.schema().fields]
    missing = [c for c in [*keys, "label"] if c not in have]
    if missing:
        raise ValueError(f"{table}: column(s) {missing} not found (columns: {have}); name the keys with --key-col")
    cols = [*keys, *[c for c in ("grade", "label", "tier", "score", "label_scheme") if c in have]]
    return dt.to_pandas(partitions=[("run_date", "=", run_date)], columns=cols)


def _scheme(prev: pd.DataFrame, cur: pd.DataFrame, labels: str | None, table: str) -> LabelScheme:
    if labels:
        return load_scheme(labels)
    names = set()
    for df in (prev, cur):
        if "label_scheme" in df.columns:
            names |= {str(v) for v in df["label_scheme"].dropna().unique()}
    if len(names) > 1:
        raise ValueError(f"{table}: the two runs use different label schemes {sorted(names)}; their grades do not compare")
    return load_scheme(names.pop() if names else "taosr1")


def _shares(values: pd.Series, categories: list[str]) -> np.ndarray:
    counts = values.astype(str).value_counts()
    return np.array([counts.get(c, 0) for c in categories], dtype=float) / max(len(values), 1)


def drift(prev: pd.DataFrame, cur: pd.DataFrame, keys: list[str], cfg: DriftConfig, scheme: LabelScheme) -> dict[str, Any]:
    """PSI per label / tier / score, changed-grade share, and the verdict against `cfg`'s thresholds."""
    from taosr1.evaluation.data import _key_frame

    names = scheme.names
    for which, df in (("previous", prev), ("current", cur)):
        _key_frame(df, keys, f"{which} run")  # a pair graded twice in one run would skew every share
        odd = sorted(set(df["label"].astype(str)) - set(names))
        if odd:
            raise ValueError(f"{which} run: labels {odd[:5]} are not in scheme {scheme.name} {names}; pass --labels")
    e, a = _shares(prev["label"], names), _shares(cur["label"], names)
    grade_psi, grade_terms = psi(e, a, cfg.epsilon)
    tier_of = {lab.name: lab.tier for lab in scheme.labels}
    te, ta = _shares(prev["label"].astype(str).map(tier_of), scheme.tiers), _shares(cur["label"].astype(str).map(tier_of), scheme.tiers)
    tier_psi, tier_terms = psi(te, ta, cfg.epsilon)
    out: dict[str, Any] = {
        "rows_previous": len(prev), "rows_current": len(cur),
        "grade_psi": grade_psi, "tier_psi": tier_psi,
        "labels": [{"label": n, "share_previous": float(x), "share_current": float(y), "psi_term": float(t)}
                   for n, x, y, t in zip(names, e, a, grade_terms)],
        "tiers": [{"tier": n, "share_previous": float(x), "share_current": float(y), "psi_term": float(t)}
                  for n, x, y, t in zip(scheme.tiers, te, ta, tier_terms)],
    }
    if "score" in prev.columns and "score" in cur.columns and len(prev) and len(cur):
        edges = np.unique(np.quantile(prev["score"].astype(float), np.linspace(0, 1, cfg.score_bins + 1))[1:-1])
        se = np.bincount(np.searchsorted(edges, prev["score"].astype(float), side="right"), minlength=len(edges) + 1)
        sa = np.bincount(np.searchsorted(edges, cur["score"].astype(float), side="right"), minlength=len(edges) + 1)
        out["score_psi"] = psi(se, sa, cfg.epsilon)[0]
    both = prev.astype({k: str for k in keys}).merge(cur.astype({k: str for k in keys}), on=keys,
                                                     suffixes=("_prev", "_cur"))
    out["pairs_in_both"] = len(both)
    out["pairs_only_previous"] = len(prev) - len(both)
    out["pairs_only_current"] = len(cur) - len(both)
    changed = both["label_prev"].astype(str) != both["label_cur"].astype(str)
    out["changed_share"] = float(changed.mean()) if len(both) else None
    out["transitions"] = {"labels": names, "rows": "previous", "columns": "current",
                          "matrix": pd.crosstab(pd.Categorical(both["label_prev"].astype(str), names),
                                                pd.Categorical(both["label_cur"].astype(str), names),
                                                dropna=False).to_numpy().tolist()}
    reasons = []
    if grade_psi > cfg.psi_threshold:
        reasons.append(f"grade PSI {grade_psi:.3f} > psi_threshold {cfg.psi_threshold}")
    if tier_psi > cfg.psi_threshold:
        reasons.append(f"tier PSI {tier_psi:.3f} > psi_threshold {cfg.psi_threshold}")
    if out.get("score_psi") is not None and out["score_psi"] > cfg.score_psi_threshold:
        reasons.append(f"score PSI {out['score_psi']:.3f} > score_psi_threshold {cfg.score_psi_threshold}")
    if out["changed_share"] is not None and out["changed_share"] > cfg.changed_share_threshold:
        reasons.append(f"{out['changed_share']:.1%} of the {len(both)} pairs graded on both nights changed grade "
                       f"> changed_share_threshold {cfg.changed_share_threshold:.1%}")
    out["drifted"] = bool(reasons)
    out["reasons"] = reasons
    out["thresholds"] = {"psi_threshold": cfg.psi_threshold, "score_psi_threshold": cfg.score_psi_threshold,
                         "changed_share_threshold": cfg.changed_share_threshold}
    return out


def previous_run(dates: list[str], run_date: str, table: str) -> str | None:
    if run_date not in dates:
        raise ValueError(f"{table}: no run_date {run_date!r}; runs in the table: {dates[-10:]}"
                         f"{' (last 10)' if len(dates) > 10 else ''}")
    earlier = [d for d in dates if d < run_date]
    return earlier[-1] if earlier else None


def drift_report_parts(result: dict[str, Any], scheme: LabelScheme) -> dict[str, Any]:
    """Figures, tables, headline and notes of a drift result, as keyword arguments of `write_report`."""
    from taosr1.evaluation import plots

    prev, cur = result["previous"], result["run_date"]
    labels = pd.DataFrame(result["labels"])
    tiers = pd.DataFrame(result["tiers"])
    figures = {
        "grades": plots.distribution_figure({prev: labels["share_previous"], cur: labels["share_current"]},
                                            scheme.names, f"Grade distribution (PSI {result['grade_psi']:.3f})", "label"),
        "tiers": plots.distribution_figure({prev: tiers["share_previous"], cur: tiers["share_current"]},
                                           scheme.tiers, f"Tier distribution (PSI {result['tier_psi']:.3f})", "tier"),
        "transitions": plots.confusion_figure(result["transitions"]["matrix"], scheme.names,
                                              "Grade of the same pair on both nights", ylabel=f"label on {prev}",
                                              xlabel=f"label on {cur}"),
    }
    verdict = "DRIFT: " + "; ".join(result["reasons"]) if result["drifted"] else "no drift: all within thresholds"
    summary = {"verdict": verdict, "runs": f"{cur} against {prev}", "rows (previous / current)":
               f"{result['rows_previous']} / {result['rows_current']}", "grade PSI": result["grade_psi"],
               "tier PSI": result["tier_psi"], "score PSI": result.get("score_psi"),
               "changed grade share": result["changed_share"], "pairs in both runs": result["pairs_in_both"]}
    notes = [f"Thresholds: {result['thresholds']}.",
             "PSI = sum of (current share - previous share) x ln(current / previous); below 0.1 is usually stable, "
             "above 0.25 a large shift."]
    return {"figures": figures, "tables": {"grades": labels, "tiers": tiers}, "summary": summary, "notes": notes}
