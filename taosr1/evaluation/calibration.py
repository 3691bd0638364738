"""Is P(label) a probability? Reliability bins, expected calibration error, and the CumPT curve.

ECE (top-label): rows binned by their highest P(label) into equal-width bins;
ECE = sum over bins of (bin share) x |accuracy of the argmax - mean confidence|.
Classwise ECE does the same for each label's P against "gold is this label".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taosr1.core.labels import LabelScheme


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width bins [lo, hi) over [0, 1] (the last one closed): n, mean confidence, accuracy."""
    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    hit = np.asarray(correct, dtype=float)
    ids = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(ids, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(ids, weights=conf, minlength=n_bins) / n
        acc = np.bincount(ids, weights=hit, minlength=n_bins) / n
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "n": n, "confidence": mean_conf, "accuracy": acc})


def ece(bins: pd.DataFrame) -> float:
    used = bins[bins["n"] > 0]
    w = used["n"] / used["n"].sum()
    return float((w * (used["accuracy"] - used["confidence"]).abs()).sum())


def calibration_report(probs: np.ndarray, gold: np.ndarray, scheme: LabelScheme,
                       n_bins: int = 10) -> tuple[dict[str, Any], pd.DataFrame, dict[str, pd.DataFrame]]:
    """ECE (top-label, max gap, classwise), Brier score and log loss of P(label); and the bins of the
    reliability diagram: top-label bins, and per label."""
    from sklearn.metrics import brier_score_loss, log_loss

    probs = np.asarray(probs, dtype=float)
    probs = probs / probs.sum(axis=1, keepdims=True)  # stored float32 sums drift a hair from 1
    gold = np.asarray(gold)
    top = probs.argmax(axis=1)
    bins = reliability_bins(probs.max(axis=1), top == gold, n_bins)
    classwise = {lab.name: reliability_bins(probs[:, i], gold == i, n_bins) for i, lab in enumerate(scheme.labels)}
    used = bins[bins["n"] > 0]
    labels = list(range(len(scheme.labels)))
    metrics = {
        "ece": ece(bins),
        "max_calibration_error": float((used["accuracy"] - used["confidence"]).abs().max()),
        "classwise_ece": {name: ece(b) for name, b in classwise.items()},
        "mean_classwise_ece": float(np.mean([ece(b) for b in classwise.values()])),
        "brier": float(brier_score_loss(gold, probs, labels=labels)),
        "log_loss": float(log_loss(gold, probs, labels=labels)),
        "argmax_accuracy": float((top == gold).mean()),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "bins": n_bins,
    }
    return metrics, bins, classwise


def cumpt_curve(probs: np.ndarray, gold: np.ndarray, scheme: LabelScheme, betas: np.ndarray | None = None,
                min_support: int = 0) -> pd.DataFrame:
    """Per beta: macro-F1 (over the grades with `min_support` gold rows) and accuracy of CumPT
    (taosr1.core.cumpt.beta_curve, what `calibrate` maximises), plus each tier's precision and the tier macro-F1."""
    from sklearn.metrics import f1_score, precision_score

    from taosr1.core.cumpt import beta_curve, cumpt_index
    from taosr1.evaluation.metrics import present, tier_index

    curve = beta_curve(probs, gold, scheme, betas, min_support)
    t = tier_index(scheme)
    tiers = list(range(len(scheme.tiers)))
    rows = []
    for beta, f1, acc in curve:
        tp, tg = t[cumpt_index(probs, beta)], t[gold]
        prec = precision_score(tg, tp, labels=tiers, average=None, zero_division=np.nan)
        row = {"beta": beta, "macro_f1": f1, "accuracy": acc,
               "tier_macro_f1": float(f1_score(tg, tp, labels=present(tg, tp), average="macro", zero_division=0))}
        row.update({f"precision_{name}": float(p) for name, p in zip(scheme.tiers, prec)})
        rows.append(row)
    return pd.DataFrame(rows)
