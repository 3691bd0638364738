"""Cross-fitted calibration: beta fitted on every training pair, each scored by a model that never saw it.

A calibration slice (`calib_size`) is ~50 queries: its class mix swings from split to split, and
the beta it picks swings with it. Cross-fitting splits the training queries into K folds, runs the
pipeline's own stages on K-1 of them (OUTPUT/crossfit/fold<k>) and scores the held-out fold with
each stage's model. Each stage's beta is fitted on all out-of-fold scores, and the models that ship
train on every training query. The price: K more runs of the stages, each on (K-1)/K of the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

OOF_FILE = "oof_{stage}.parquet"


def _fold_scores(cfg, model: Path, held: pd.DataFrame, cache: Path) -> pd.DataFrame:
    """The held-out fold graded by `model` at beta 0.5 (probabilities only), cached per model version."""
    from taosr1.training.common import read_stage
    from taosr1.training.evaluate import evaluate_scoring

    version = (read_stage(model) or {}).get("finished", "")
    if cache.is_file():
        cached = pd.read_parquet(cache)
        if len(cached) == len(held) and (cached["model_finished"] == version).all():
            return cached
    _, graded = evaluate_scoring(str(model), held, gold_col=cfg.gold, label_config=cfg.label_config,
                                 labels=cfg.labels, threads=cfg.eval_threads, beta=0.5)
    graded = graded.assign(model_finished=version)
    graded.to_parquet(cache, index=False)
    return graded


def crossfit_calibration(cfg, out: Path, train_input: str, trained: dict[str, str],
                         log: Callable[[str], None], run: Callable[..., Any]) -> dict[str, Any]:
    """Fit and record each trained model's beta on out-of-fold scores; returns {stage: beta, macro_f1, n}.

    `run(cfg, folder, log=...)` runs the stages on a fold's training queries (the pipeline's own runner)."""
    from taosr1.core.split import query_fold_ids
    from taosr1.storage.tables import read_table
    from taosr1.training.calibrate import fit_beta
    from taosr1.training.common import read_stage, serving_setup

    serving = serving_setup(cfg.label_config, cfg.labels)
    train = read_table(train_input)
    if cfg.train_rows:  # the pairs the main run's stages train on (cot's limit)
        train = train.head(cfg.train_rows)
    fold = query_fold_ids(train, serving.label_config.columns.query, cfg.calib_folds, cfg.seed)
    scores: dict[str, list[pd.DataFrame]] = {s: [] for s in trained}
    for k in range(cfg.calib_folds):
        d = out / "crossfit" / f"fold{k}"
        d.mkdir(parents=True, exist_ok=True)
        part = train[fold != k].reset_index(drop=True)
        # named by its content: the path is in the fold stages' settings, so new data reruns them
        digest = hashlib.sha256(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes()).hexdigest()
        fold_train = d / f"train-{digest[:12]}.parquet"
        if not fold_train.is_file():
            part.to_parquet(fold_train, index=False)
        sub = replace(cfg, input=str(fold_train), test_size=0.0, test_folds=0, calib_size=0.0, calib_folds=0,
                      train_rows=0, evaluate=False, export_rank=0, ship_to="")
        run(sub, d, log=lambda m, k=k: log(f"crossfit fold {k + 1}/{cfg.calib_folds}: {m}"))
        held = train[fold == k].reset_index(drop=True)
        for stage in trained:
            if read_stage(d / stage) is not None:
                scores[stage].append(_fold_scores(cfg, d / stage, held, d / OOF_FILE.format(stage=stage)))
    result = {}
    for stage, model in trained.items():
        if len(scores[stage]) != cfg.calib_folds:  # a stage outside `stages`, left from an earlier run
            log(f"calibrate {Path(model).name}: not in every fold's stages, beta left as it is")
            continue
        graded = pd.concat(scores[stage], ignore_index=True)
        source = f"cross-fitted: {cfg.calib_folds} query folds of the training split, out-of-fold scores"
        fitted = fit_beta(cfg, model, graded, source, f"out-of-fold pairs, {cfg.calib_folds} folds", log)
        result[stage] = {**fitted, "folds": cfg.calib_folds}
    return result
