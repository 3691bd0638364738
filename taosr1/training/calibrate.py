"""Each trained model's CumPT beta, fitted on pairs it never trained on and recorded beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from taosr1.core.cumpt import MIN_SUPPORT


def eval_forward(cfg) -> tuple[int, bool] | None:
    """(frozen blocks, bf16) when the pipeline grades with the training forward (`eval_forward`), else None:
    the blocks below every stage's LoRA layers are the start model's in every model of the run."""
    if not cfg.eval_forward:
        return None
    from transformers import AutoConfig

    from taosr1.labeling.models import resolve_model
    from taosr1.training.common import bf16_autocast

    n = AutoConfig.from_pretrained(resolve_model(cfg.model)).num_hidden_layers
    sections = [getattr(cfg, s) for s in ("sft", "dpo", "grpo") if s in cfg.stages]
    trained = [int(s.get("lora_layers", 0)) if int(s.get("lora_r", 0)) > 0 else 0 for s in sections]
    frozen = 0 if not trained or 0 in trained else max(n - max(trained), 0)
    return frozen, bool(cfg.sft.get("bf16", bf16_autocast()))


def calibrate_model(cfg, model: str, calib_file: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Fit CumPT beta for `model` on the calibration slice (macro-F1, as `taosr1 calibrate`) and record it beside it."""
    import pandas as pd

    from taosr1.training.evaluate import evaluate_scoring

    _, graded = evaluate_scoring(model, pd.read_parquet(calib_file), gold_col=cfg.gold, label_config=cfg.label_config,
                                 forward=eval_forward(cfg),
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
