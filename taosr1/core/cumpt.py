"""Cumulative-probability tiering (CumPT) and the expected grade.

One parameter beta replaces a threshold per grade: walk the grades best to worst,
summing P(grade); the first grade where the running sum reaches beta is the grade.
beta = 0.5 picks the median of the predicted grade distribution.
"""

from __future__ import annotations

import numpy as np

from taosr1.core.config import ConfigError
from taosr1.core.labels import LabelScheme

_EPS = 1e-9  # running sums of float32 probabilities may fall a hair short of 1.0
# Calibration's macro-F1 leaves out grades with fewer gold pairs than this: on a 101-pair slice
# with 2 Mismatch pairs, one lucky Mismatch hit adds ~0.17 and picks beta by itself.
MIN_SUPPORT = 10


def check_beta(beta: float) -> float:
    if not (0.0 < float(beta) <= 1.0):
        raise ConfigError(f"beta must be in (0, 1], got {beta}; 0.5 picks the median grade")
    return float(beta)


def cumpt_index(probs: np.ndarray, beta: float) -> np.ndarray:
    """Index (into the scheme's best-first labels) of the CumPT grade of each row."""
    check_beta(beta)
    probs = np.asarray(probs, dtype=np.float64)
    cum = np.cumsum(probs, axis=1)
    reached = cum >= beta - _EPS
    reached[:, -1] = True  # the worst grade is always reached
    return reached.argmax(axis=1)


def expected_grade(probs: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Sum of grade x P(grade): a continuous score for ranking."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(scheme.grades, dtype=np.float64)


def grade_rows(probs: np.ndarray, scheme: LabelScheme, beta: float) -> dict[str, np.ndarray]:
    """Columns grade, label, tier, score for P(label) rows ordered like `scheme.labels`."""
    idx = cumpt_index(probs, beta)
    labels = scheme.labels
    return {
        "grade": np.array([labels[i].grade for i in idx], dtype=np.int64),
        "label": np.array([labels[i].name for i in idx], dtype=object),
        "tier": np.array([labels[i].tier for i in idx], dtype=object),
        "score": expected_grade(probs, scheme),
    }


def supported_classes(gold_idx: np.ndarray, n_labels: int, min_support: int) -> list[int]:
    """Label indices with at least `min_support` gold rows (every label when none has)."""
    counts = np.bincount(np.asarray(gold_idx, dtype=np.int64), minlength=n_labels)
    kept = [i for i in range(n_labels) if counts[i] >= min_support]
    return kept or list(range(n_labels))


def beta_curve(probs: np.ndarray, gold_idx: np.ndarray, scheme: LabelScheme, betas: np.ndarray | None = None,
               min_support: int = 0):
    """Macro-F1 and accuracy of CumPT for each beta; rows (beta, macro_f1, accuracy).

    The macro average runs over the labels with at least `min_support` gold rows (0: all)."""
    from sklearn.metrics import accuracy_score, f1_score

    if betas is None:
        betas = np.round(np.arange(0.05, 1.0001, 0.05), 4)
    classes = supported_classes(gold_idx, len(scheme.labels), min_support)
    rows = []
    for b in betas:
        pred = cumpt_index(probs, float(b))
        rows.append(
            (
                float(b),
                float(f1_score(gold_idx, pred, labels=classes, average="macro", zero_division=0)),
                float(accuracy_score(gold_idx, pred)),
            )
        )
    return rows


def best_beta(curve: list[tuple[float, float, float]]) -> float:
    """The beta of highest macro-F1; ties go to the beta nearest 0.5 (the median rule)."""
    top = max(r[1] for r in curve)
    tied = [r[0] for r in curve if r[1] >= top - 1e-12]
    return min(tied, key=lambda b: abs(b - 0.5))
