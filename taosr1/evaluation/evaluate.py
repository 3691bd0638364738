"""One evaluation of graded predictions against gold labels, as metrics, figures and tables
ready for `write_report` (used by `taosr1 eval` and `taosr1 calibrate --out`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taosr1.core.labels import LabelScheme
from taosr1.evaluation import plots
from taosr1.evaluation.calibration import calibration_report, cumpt_curve
from taosr1.evaluation.config import EvalConfig
from taosr1.evaluation.data import Labelled
from taosr1.evaluation.metrics import bootstrap_intervals, by_segment, clusters_of, evaluate, label_indices, scalars_of
from taosr1.evaluation.ranking import ranking_metrics


def _single(frame: pd.DataFrame, column: str) -> Any:
    """The one value of a column that is constant across the predictions (model, beta), else None."""
    if column not in frame.columns:
        return None
    values = frame[column].dropna().unique()
    if len(values) != 1:
        return None
    return values[0].item() if isinstance(values[0], np.generic) else values[0]


def _beta(frame: pd.DataFrame) -> float | None:
    """The beta the predictions were graded with (a CSV round trip leaves it as text)."""
    value = _single(frame, "beta")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def per_class_table(m: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"label": k, **v} for k, v in m["per_class"].items()])


def tier_table(m: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"tier": k, **v} for k, v in m["tiers"]["per_tier"].items()])


CAPTIONS = {
    "confusion": "Rows: gold label; columns: predicted label. Each cell: count and share of its row (the row's recall "
                 "on the diagonal).",
    "tier_confusion": "The same with labels folded into tiers: confusing two labels of one tier costs nothing here.",
    "reliability": "Left: rows binned by their highest P(label); a bar below the diagonal means the model is "
                   "overconfident there. Right: each label's P against how often gold is that label.",
    "cumpt_curve": "CumPT picks the first grade (best first) where the running sum of P reaches beta. Higher beta: "
                   "fewer, more precise Good calls. The solid line marks the beta of best macro-F1 on these rows.",
    "per_class": "precision / recall are empty where undefined (a label never predicted / never gold).",
}


def with_interval(value: float, ci: dict[str, float | None] | None) -> str:
    if not ci or ci.get("low") is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"


def calibration_section(probs: np.ndarray, gold: np.ndarray, scheme: LabelScheme, cfg: EvalConfig,
                        used_beta: float | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, pd.DataFrame]]:
    """Calibration metrics, the CumPT curve with the best beta; their figures and tables."""
    from taosr1.core.cumpt import best_beta

    cal, top_bins, class_bins = calibration_report(probs, gold, scheme, cfg.calibration_bins)
    curve = cumpt_curve(probs, gold, scheme, min_support=cfg.min_support)
    chosen = best_beta(list(curve[["beta", "macro_f1", "accuracy"]].itertuples(index=False, name=None)))
    best = curve.loc[(curve["beta"] - chosen).abs().idxmin()]
    cumpt = {"best_beta": chosen, "macro_f1_at_best_beta": float(best["macro_f1"]),
             "accuracy_at_best_beta": float(best["accuracy"]), "beta_of_predictions": used_beta,
             "curve": curve.to_dict("records")}
    figures = {"reliability": plots.reliability_figure(top_bins, class_bins, cal["ece"]),
               "cumpt_curve": plots.cumpt_figure(curve, chosen, used_beta)}
    tables = {"reliability_bins": top_bins, "cumpt_curve": curve}
    return {**cal, "cumpt": cumpt}, figures, tables


def ranking_column(frame: pd.DataFrame, unit: str) -> str | None:
    """The column that groups a query's items: the bootstrap unit (query_id), else `query`."""
    return next((c for c in (unit, "query_id", "query") if c in frame.columns and c != "pair"), None)


def ranking_section(lab: Labelled, cfg: EvalConfig) -> tuple[dict[str, Any] | None, str]:
    """NDCG@10 and Spearman of the `score` column (taosr1.evaluation.ranking), or None and why not."""
    qcol = ranking_column(lab.frame, cfg.bootstrap_unit)
    if "score" not in lab.frame.columns or qcol is None:
        return None, "the predictions need a `score` column and a query column (query_id or query)"
    score = pd.to_numeric(lab.frame["score"], errors="coerce").to_numpy(float)
    if np.isnan(score).any():
        return None, f"{int(np.isnan(score).sum())} row(s) have no score"
    out = ranking_metrics(lab.frame[qcol].astype(str).to_numpy(), lab.gold, score, lab.scheme, n_boot=cfg.bootstrap,
                          level=cfg.ci_level, seed=cfg.seed)
    return {**out, "query_column": qcol}, ""


def eval_report(lab: Labelled, cfg: EvalConfig, segments: list[str] | tuple[str, ...] = (), *,
                predictions: str = "", gold: str = "", macro_over: list[str] | tuple[str, ...] = ()
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, pd.DataFrame], dict[str, Any], list[str]]:
    """Metrics, figures, tables, headline and notes of one evaluation; `macro_over` (grade names) adds
    `macro_f1_over`, the mean F1 over those grades, with its interval."""
    missing = [c for c in segments if c not in lab.frame.columns]
    if missing:
        raise ValueError(f"{predictions}: segment column(s) {missing} not found (columns: {list(lab.frame.columns)})")
    scheme = lab.scheme
    over = label_indices(scheme, macro_over)
    m = evaluate(lab.gold, lab.pred, scheme)
    clusters, unit = clusters_of(lab.frame, cfg.bootstrap_unit)
    ci = bootstrap_intervals(lab.gold, lab.pred, scheme, n_boot=cfg.bootstrap, level=cfg.ci_level,
                             seed=cfg.seed, clusters=clusters, over=over) if cfg.bootstrap else {}
    scalars = scalars_of(m, over)
    metrics: dict[str, Any] = {
        "n": m["n"], **scalars, **({"macro_f1_over_labels": list(macro_over)} if over else {}), "weighted_f1": m["weighted_f1"],
        "label_scheme": scheme.name, "model": _single(lab.frame, "model"), "beta": _beta(lab.frame),
        "predictions": predictions, "gold": gold,
        "excluded_unparsed_gold": lab.excluded_unparsed, "gold_without_prediction": lab.gold_without_prediction,
        "ci": ci, "bootstrap": {"resamples": cfg.bootstrap, "level": cfg.ci_level, "seed": cfg.seed, "unit": unit},
        "per_class": m["per_class"], "macro_over": m["macro_over"], "confusion": m["confusion"], "tiers": m["tiers"],
        "distribution": {"gold": {n: int((lab.gold == i).sum()) for i, n in enumerate(scheme.names)},
                         "predicted": {n: int((lab.pred == i).sum()) for i, n in enumerate(scheme.names)}},
    }
    figures: dict[str, Any] = {
        "confusion": plots.confusion_figure(m["confusion"]["matrix"], scheme.names,
                                            f"Confusion ({scheme.name}, n={m['n']})"),
        "tier_confusion": plots.confusion_figure(m["tiers"]["confusion"]["matrix"], scheme.tiers, "Tier confusion",
                                                 ylabel="gold tier", xlabel="predicted tier"),
    }
    tables: dict[str, pd.DataFrame] = {"per_class": per_class_table(m), "tiers": tier_table(m)}
    summary: dict[str, Any] = {"pairs evaluated": m["n"], "label scheme": scheme.name,
                               "model": metrics["model"], "beta": metrics["beta"]}
    summary.update({(f"macro-F1 over {', '.join(macro_over)}" if name == "macro_f1_over" else name):
                    with_interval(v, ci.get(name)) for name, v in scalars.items()})
    notes = [f"Predictions: {predictions}; gold labels: {gold}.",
             f"Intervals: {cfg.ci_level:.0%} percentile bootstrap, {cfg.bootstrap} resamples of {unit}, seed {cfg.seed}.",
             f"Macro averages run over the labels present in gold or predictions: {m['macro_over']}."]
    if lab.excluded_unparsed:
        notes.append(f"{lab.excluded_unparsed} row(s) left out because their gold value is not a label (--drop-unparsed).")
    if lab.gold_without_prediction:
        notes.append(f"{lab.gold_without_prediction} gold row(s) have no prediction (quarantined or not graded).")
    _add_ranking(lab, cfg, metrics, summary, notes)
    _add_calibration(lab, cfg, metrics, summary, notes, figures, tables)
    _add_segments(lab, cfg, segments, clusters, metrics, figures, tables)
    return metrics, figures, tables, summary, notes


def _add_ranking(lab: Labelled, cfg: EvalConfig, metrics: dict, summary: dict, notes: list) -> None:
    """NDCG@10 and Spearman of `score` per query, when the predictions have a score and queries."""
    rank, why = ranking_section(lab, cfg)
    if rank is None:
        notes.append(f"No ranking metrics: {why}.")
        return
    metrics["ranking"] = rank
    metrics["ndcg_at_10"], metrics["spearman"] = rank["ndcg_at_10"], rank["spearman"]
    summary["NDCG@10 (per query)"] = with_interval(rank["ndcg_at_10"], rank["ci"].get("ndcg_at_10")) \
        if rank["ndcg_at_10"] is not None else None
    summary["Spearman(score, grade)"] = None if rank["spearman"] is None else round(rank["spearman"], 4)
    notes.append(f"Ranking: `score` orders each {rank['query_column']}'s items; NDCG@10 with gains grade - worst "
                 f"grade over the {rank['queries']} queries with a relevant item ({rank['queries_without_gain']} "
                 f"without one left out).")


def _add_calibration(lab: Labelled, cfg: EvalConfig, metrics: dict, summary: dict, notes: list,
                     figures: dict, tables: dict) -> None:
    """ECE and the in-sample CumPT sweep, when the predictions carry P(label) columns."""
    if lab.probs is None:
        notes.append(f"No calibration: the predictions lack the columns {lab.scheme.prob_columns}.")
        return
    cal, f, t = calibration_section(lab.probs, lab.gold, lab.scheme, cfg, metrics["beta"])
    metrics["ece"] = cal["ece"]
    metrics["calibration"] = cal
    summary["ECE (top-label)"] = round(cal["ece"], 4)
    summary["best CumPT beta (in-sample)"] = cal["cumpt"]["best_beta"]
    figures.update(f)
    tables.update(t)


def _add_segments(lab: Labelled, cfg: EvalConfig, segments, clusters, metrics: dict, figures: dict,
                  tables: dict) -> None:
    """The metrics per value of each segment column."""
    metrics["segments"] = {}
    for col in segments:
        seg = by_segment(lab.gold, lab.pred, lab.frame[col], lab.scheme, n_boot=cfg.bootstrap, level=cfg.ci_level,
                         seed=cfg.seed, clusters=clusters)
        metrics["segments"][col] = seg.to_dict("records")
        figures[f"by_{col}"] = plots.segment_figure(seg, col)
        tables[f"by_{col}"] = seg


def write_calibration_report(out_dir, probs: np.ndarray, gold: np.ndarray, scheme: LabelScheme, *,
                             predictions: str = "", cfg: EvalConfig | None = None, written_to: str | None = None):
    """The report of `taosr1 calibrate --out`: CumPT curve with the chosen beta, reliability diagram, ECE."""
    from taosr1.evaluation.report import write_report

    cfg = cfg or EvalConfig()
    cal, figures, tables = calibration_section(probs, gold, scheme, cfg, None)
    c = cal.pop("cumpt")
    metrics = {"n": int(len(gold)), "label_scheme": scheme.name, "beta": c["best_beta"],
               "macro_f1": c["macro_f1_at_best_beta"], "accuracy": c["accuracy_at_best_beta"], **cal,
               "predictions": predictions, "written_to": written_to, "curve": c["curve"]}
    summary = {"pairs": len(gold), "chosen beta": c["best_beta"], "macro-F1 at beta": c["macro_f1_at_best_beta"],
               "accuracy at beta": c["accuracy_at_best_beta"], "ECE (top-label)": cal["ece"],
               "Brier score": cal["brier"], "beta recorded in": written_to or "(not written: --no-write)"}
    notes = [f"Predictions: {predictions}. beta maximises macro-F1 over the curve (ties: nearest 0.5); "
             "in-sample, so expect a little less on new data."]
    return write_report(out_dir, f"CumPT calibration ({scheme.name})", metrics, figures, tables, summary=summary,
                        notes=notes, captions=CAPTIONS)
