"""Each trained model's CumPT beta, fitted on pairs it never trained on and recorded beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from taosr1.core.cumpt import MIN_SUPPORT


def calibrate_model(cfg, model: str, calib_file: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Fit CumPT beta for `model` on the calibration slice (macro-F1, as `taosr1 calibrate`) and record it beside it."""
    import pandas as pd

    from taosr1.training.evaluate import evaluate_scoring

    _, graded = evaluate_scoring(model, pd.read_parquet(calib_file), gold_col=cfg.gold, label_config=cfg.label_config,
                                 labels=cfg.labels, threads=cfg.eval_threads, beta=0.5)
    return fit_beta(cfg, model, graded, "pipeline calibration slice", "calibration pairs", log)


def fit_beta(cfg, model: str, graded, source: str, what: str,
             log: Callable[[str], None]) -> dict[str, Any]:
    """The beta of best macro-F1 on `graded` (scored pairs with gold), written beside `model`."""
    from taosr1.labeling.calibration import write_calibration

    scheme = scheme_of(cfg)
    beta, f1 = slice_beta(graded, cfg.gold, scheme, cfg.calib_min_support)
    write_calibration(model, scheme.name, beta, macro_f1=f1, n=len(graded), source=source)
    log(f"calibrate {Path(model).name}: beta {beta} (macro-F1 {f1:.4f} on {len(graded)} {what})")
    return {"beta": beta, "macro_f1": f1, "n": len(graded)}


def slice_beta(graded, gold_col: str, scheme, min_support: int = MIN_SUPPORT) -> tuple[float, float]:
    """(beta, macro-F1): the CumPT beta of best macro-F1 on scored pairs with gold, over the grades
    with at least `min_support` pairs there."""
    import numpy as np

    from taosr1.core.cumpt import best_beta, beta_curve

    gold = np.array([scheme.labels.index(scheme.parse(v)) for v in graded[gold_col]])
    curve = beta_curve(graded[scheme.prob_columns].to_numpy(dtype=float), gold, scheme, min_support=min_support)
    beta = best_beta(curve)
    return beta, next(r[1] for r in curve if r[0] == beta)


def scheme_of(cfg):
    from taosr1.training.common import serving_setup

    return serving_setup(cfg.label_config, cfg.labels).scheme
