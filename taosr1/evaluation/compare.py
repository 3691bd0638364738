"""Two prediction sets on the same pairs: is the difference real?

Each metric's difference comes with a paired bootstrap interval (both sides see the same
resampled pairs; whole queries are drawn, `bootstrap_unit`), and McNemar's exact test asks
whether the pairs only one side gets right lean one way more than chance would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taosr1.core.labels import LabelScheme
from taosr1.evaluation.metrics import (
    clusters_of,
    confusion_scalars,
    evaluate,
    label_indices,
    percentile_interval,
    present,
    resample_confusions,
    scalars_of,
    tier_index,
)


def align(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], source_a: str, source_b: str) -> pd.DataFrame:
    """B's rows in A's row order; refuses when the two do not hold exactly the same pairs."""
    from taosr1.evaluation.data import _key_frame

    ka, kb = _key_frame(a, keys, source_a), _key_frame(b, keys, source_b)
    m = ka.reset_index().merge(kb.reset_index(), on=keys, how="outer", indicator=True, suffixes=("_a", "_b"))
    only_a, only_b = int((m["_merge"] == "left_only").sum()), int((m["_merge"] == "right_only").sum())
    if only_a or only_b:
        ex = m.loc[m["_merge"] != "both", keys + ["_merge"]].head(5)
        ex = ex.assign(_merge=ex["_merge"].map({"left_only": "only in A", "right_only": "only in B"})).to_dict("records")
        raise ValueError(f"{source_a} and {source_b} do not hold the same pairs on keys {keys} (keys compared as text): "
                         f"{only_a} only in A, {only_b} only in B, {int((m['_merge'] == 'both').sum())} in both; e.g. {ex}. "
                         f"Compare predictions of the same pairs.")
    order = m.set_index("index_a").loc[a.index, "index_b"].astype(int).to_numpy()
    return b.loc[order].reset_index(drop=True)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's test on the pairs exactly one side gets right: exact binomial p (two-sided) and
    the continuity-corrected chi-square, with the 2x2 counts."""
    from scipy.stats import binomtest, chi2

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    d = only_a + only_b
    stat = (abs(only_a - only_b) - 1) ** 2 / d if d else 0.0
    return {"both_correct": int((a & b).sum()), "only_a_correct": only_a, "only_b_correct": only_b,
            "both_wrong": int((~a & ~b).sum()), "discordant": d,
            "p_value": float(binomtest(only_b, d, 0.5).pvalue) if d else 1.0, "method": "exact binomial (two-sided)",
            "chi2_corrected": float(stat), "p_value_chi2": float(chi2.sf(stat, 1)) if d else 1.0}


def compare(gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, scheme: LabelScheme, *, n_boot: int = 1000,
            level: float = 0.95, seed: int = 0, clusters: np.ndarray | None = None,
            macro_over: list[int] | None = None) -> dict[str, Any]:
    """Both sides' metrics, the difference B - A of each scalar with a paired interval (rows, or
    whole clusters), McNemar. `macro_over` adds `macro_f1_over`: the mean F1 over those classes
    only (a grade too rare to resolve left out), with its own paired interval."""
    from sklearn.metrics import cohen_kappa_score

    gold, pred_a, pred_b = (np.asarray(x) for x in (gold, pred_a, pred_b))
    ma, mb = evaluate(gold, pred_a, scheme), evaluate(gold, pred_b, scheme)
    sa, sb = scalars_of(ma, macro_over), scalars_of(mb, macro_over)
    diffs = {}
    if n_boot:
        k = len(scheme.labels)
        codes = (gold * k + pred_a) * k + pred_b
        draws = resample_confusions(codes, k ** 3, n_boot, seed, clusters).reshape(n_boot, k, k, k)
        t = tier_index(scheme)
        va = confusion_scalars(draws.sum(3), scheme, present(gold, pred_a), present(t[gold], t[pred_a]), macro_over)
        vb = confusion_scalars(draws.sum(2), scheme, present(gold, pred_b), present(t[gold], t[pred_b]), macro_over)
    for name in sa:
        lo, hi = percentile_interval(vb[name] - va[name], level) if n_boot else (None, None)
        diffs[name] = {"a": sa[name], "b": sb[name], "difference": sb[name] - sa[name], "low": lo, "high": hi,
                       "interval_excludes_zero": None if lo is None else bool(lo > 0 or hi < 0)}
    return {
        "n": int(len(gold)), "differences": diffs,
        "mcnemar": mcnemar(pred_a == gold, pred_b == gold),
        "agreement": float((pred_a == pred_b).mean()),
        "cohen_kappa_a_b": float(cohen_kappa_score(pred_a, pred_b, labels=list(range(len(scheme.labels))))),
        "a": ma, "b": mb,
        "a_vs_b": pd.crosstab(pd.Categorical(pred_a, range(len(scheme.labels))),
                              pd.Categorical(pred_b, range(len(scheme.labels))), dropna=False).to_numpy().tolist(),
    }


def disagreements(frame: pd.DataFrame, gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                  scheme: LabelScheme, keys: list[str], prob_a: np.ndarray | None = None,
                  prob_b: np.ndarray | None = None) -> pd.DataFrame:
    """The rows where A and B give different labels, to read: the ones only one side gets right first."""
    names = np.array(scheme.names, dtype=object)
    cols = [c for c in [*keys, "query", "product_title"] if c in frame.columns]
    out = frame[cols].copy()
    out["gold"], out["label_a"], out["label_b"] = names[gold], names[pred_a], names[pred_b]
    out["correct"] = np.select([(pred_a == gold) & (pred_b != gold), (pred_b == gold) & (pred_a != gold)],
                               ["only A", "only B"], "neither")
    if prob_a is not None:
        out["p_a_of_gold"] = prob_a[np.arange(len(gold)), gold]
    if prob_b is not None:
        out["p_b_of_gold"] = prob_b[np.arange(len(gold)), gold]
    out = out[pred_a != pred_b]
    rank = out["correct"].map({"only A": 0, "only B": 1, "neither": 2})
    return out.assign(_r=rank).sort_values(["_r", *cols[:1]], kind="stable").drop(columns="_r").reset_index(drop=True)


def _ranking_differences(la, cfg) -> dict[str, Any]:
    """B - A in NDCG@10 and Spearman over the same resampled queries, when both sides have a score."""
    from taosr1.evaluation.evaluate import ranking_column
    from taosr1.evaluation.ranking import paired_ranking

    qcol = ranking_column(la.frame, cfg.bootstrap_unit)
    if qcol is None or "score" not in la.frame.columns or "_score_b" not in la.frame.columns:
        return {}
    sa = pd.to_numeric(la.frame["score"], errors="coerce").to_numpy(float)
    sb = la.frame["_score_b"].to_numpy(float)
    if np.isnan(sa).any() or np.isnan(sb).any():
        return {}
    return paired_ranking(la.frame[qcol].astype(str).to_numpy(), la.gold, sa, sb, la.scheme, n_boot=cfg.bootstrap,
                          level=cfg.ci_level, seed=cfg.seed)


def compare_report(a: pd.DataFrame, b: pd.DataFrame, cfg, *, gold_col: str, gold: pd.DataFrame | None = None,
                   labels: str | None = None, drop_unparsed: bool = False, source_a: str = "A", source_b: str = "B",
                   gold_source: str = "", name_a: str = "A", name_b: str = "B", macro_over: list[str] | None = None):
    """Metrics, figures, tables, headline and notes comparing A and B (for `write_report`);
    `macro_over`: grade names whose mean F1 is compared too."""
    from taosr1.evaluation.data import common_scheme, labelled

    scheme = common_scheme(a, b, labels, source_a, source_b)
    over = label_indices(scheme, macro_over or [])
    a = a.reset_index(drop=True)
    b = align(a, b, cfg.keys, source_a, source_b)
    pred_b = _predictions(b, scheme, source_b)
    if gold is None:
        _same_gold(a, b, gold_col, scheme, source_a, source_b)
    # B's predictions ride along as columns of A, so rows left out for A (--drop-unparsed) leave B too.
    extra = {"_pred_b": pred_b}
    if "score" in b.columns:
        extra["_score_b"] = pd.to_numeric(b["score"], errors="coerce").to_numpy(float)
    has_probs_b = all(c in b.columns for c in scheme.prob_columns)
    if has_probs_b:
        extra.update({f"_b_{c}": b[c].to_numpy(float) for c in scheme.prob_columns})
    la = labelled(a.assign(**extra), gold_col=gold_col, source=source_a, gold=gold, gold_source=gold_source,
                  keys=cfg.keys, labels=scheme.source, drop_unparsed=drop_unparsed)
    pred_b = la.frame["_pred_b"].to_numpy()
    probs_b = la.frame[[f"_b_{c}" for c in scheme.prob_columns]].to_numpy(float) if has_probs_b else None
    clusters, unit = clusters_of(la.frame, cfg.bootstrap_unit)
    r = compare(la.gold, la.pred, pred_b, scheme, n_boot=cfg.bootstrap, level=cfg.ci_level, seed=cfg.seed,
                clusters=clusters, macro_over=over)
    r["differences"].update(_ranking_differences(la, cfg))
    dis = disagreements(la.frame, la.gold, la.pred, pred_b, scheme, cfg.keys, la.probs, probs_b)
    diffs = pd.DataFrame([{"metric": k, **v} for k, v in r["differences"].items()])
    per_class = pd.DataFrame([{"label": n, f"f1 {name_a}": r["a"]["per_class"][n]["f1"],
                               f"f1 {name_b}": r["b"]["per_class"][n]["f1"],
                               "support": r["a"]["per_class"][n]["support"]} for n in scheme.names])
    mc = r["mcnemar"]
    metrics = {"n": r["n"], "a": name_a, "b": name_b, "source_a": source_a, "source_b": source_b,
               "label_scheme": scheme.name, "differences": r["differences"], "mcnemar": mc,
               "agreement": r["agreement"], "cohen_kappa_a_b": r["cohen_kappa_a_b"], "disagreements": len(dis),
               "bootstrap": {"resamples": cfg.bootstrap, "level": cfg.ci_level, "seed": cfg.seed, "unit": unit},
               "metrics_a": r["a"], "metrics_b": r["b"], "a_vs_b": r["a_vs_b"], "macro_over": list(macro_over or [])}
    summary = _summary(r, name_a, name_b, macro_over)
    notes = [f"A = {source_a}; B = {source_b}; {r['n']} pairs in both.",
             f"Intervals: paired {cfg.ci_level:.0%} percentile bootstrap of B - A ({cfg.bootstrap} resamples of "
             f"{unit}, seed {cfg.seed}). An interval that excludes 0 says the difference is unlikely to be resampling noise.",
             "McNemar: exact two-sided binomial test on the pairs exactly one side gets right."]
    figures = _figures(r, diffs, scheme, name_a, name_b)
    tables = {"differences": diffs, "per_class_f1": per_class, "disagreements": dis}
    return metrics, figures, tables, summary, notes


def _predictions(b: pd.DataFrame, scheme, source_b: str):
    """B's predicted label indices, from its `label` (or `grade`) column; every value must be a label."""
    from taosr1.evaluation.data import parse_labels

    col_b = "label" if "label" in b.columns else "grade" if "grade" in b.columns else None
    if col_b is None:
        raise ValueError(f"{source_b}: no `label` (or `grade`) column of predictions (columns: {list(b.columns)})")
    pred_b = parse_labels(b[col_b], scheme)
    if (pred_b < 0).any():
        raise ValueError(f"{source_b}: {int((pred_b < 0).sum())} predicted value(s) in column {col_b} are not labels "
                         f"of scheme {scheme.name} {scheme.names}")
    return pred_b


def _same_gold(a: pd.DataFrame, b: pd.DataFrame, gold_col: str, scheme, source_a: str, source_b: str) -> None:
    """Two files that both carry the gold column must agree on it (else one --gold table is needed)."""
    from taosr1.evaluation.data import parse_labels

    if gold_col in b.columns and gold_col in a.columns:
        ga, gb = parse_labels(a[gold_col], scheme), parse_labels(b[gold_col], scheme)
        if (ga != gb).any():
            raise ValueError(f"{source_a} and {source_b} disagree on the gold label ({gold_col}) of "
                             f"{int((ga != gb).sum())} pair(s); give one gold table with --gold")


def _summary(r: dict, name_a: str, name_b: str, macro_over: list[str] | None) -> dict:
    """The headline: A / B / B - A [interval] of each metric, McNemar and the label agreement."""
    d, mc = r["differences"], r["mcnemar"]
    summary = {"pairs": r["n"], "A": name_a, "B": name_b}
    for k in ("accuracy", "macro_f1", "ordinal_mae", "macro_f1_over", "ndcg_at_10", "spearman"):
        if k not in d or d[k]["difference"] is None:
            continue
        v = d[k]
        ci = "" if v["low"] is None else f" [{v['low']:+.4f}, {v['high']:+.4f}]"
        key = f"macro-F1 over {', '.join(macro_over or [])}" if k == "macro_f1_over" else k
        summary[f"{key}: A / B / B - A"] = f"{v['a']:.4f} / {v['b']:.4f} / {v['difference']:+.4f}{ci}"
    summary["McNemar: only A right / only B right / p"] = (
        f"{mc['only_a_correct']} / {mc['only_b_correct']} / {mc['p_value']:.4g}")
    summary["label agreement (Cohen's kappa)"] = f"{r['agreement']:.1%} ({r['cohen_kappa_a_b']:.3f})"
    return summary


def _figures(r: dict, diffs: pd.DataFrame, scheme, name_a: str, name_b: str) -> dict:
    from taosr1.evaluation import plots

    return {"differences": plots.difference_figure(diffs, name_a, name_b),
            "a_vs_b": plots.confusion_figure(r["a_vs_b"], scheme.names, f"Labels: {name_a} (rows) and {name_b} (columns)",
                                             ylabel=f"label by {name_a}", xlabel=f"label by {name_b}"),
            "confusion_a": plots.confusion_figure(r["a"]["confusion"]["matrix"], scheme.names, f"Confusion: {name_a}"),
            "confusion_b": plots.confusion_figure(r["b"]["confusion"]["matrix"], scheme.names, f"Confusion: {name_b}")}
