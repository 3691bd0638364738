"""Quality of a model on labelled pairs: macro-F1, per-class F1, accuracy (scikit-learn).

Post-CoT models are graded the way `taosr1 label` grades (one forward pass, P(label), CumPT);
think-first models must decode their reasoning before the answer, so they are graded by
generating and parsing the response.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import pandas as pd

from taosr1.core.labels import LabelScheme


def classification_metrics(gold: Sequence[str], pred: Sequence[str | None], scheme: LabelScheme) -> dict[str, Any]:
    """macro-F1 and per-class F1 over the classes present in `gold`; a missing prediction counts as wrong."""
    from sklearn.metrics import accuracy_score, f1_score

    names = [n for n in scheme.names if n in set(gold)]
    pred_ = [p if isinstance(p, str) else "<none>" for p in pred]  # None, or NaN from a pandas 3 string column
    per = f1_score(gold, pred_, labels=names, average=None, zero_division=0) if len(gold) else []
    return {
        "n": len(gold),
        "macro_f1": round(float(per.mean()), 4) if len(gold) else 0.0,
        "accuracy": round(float(accuracy_score(gold, pred_)), 4) if len(gold) else 0.0,
        "per_class_f1": {n: round(float(f), 4) for n, f in zip(names, per)},
        "unparsed": pred_.count("<none>"),
        "pred_counts": pd.Series(pred_).value_counts().to_dict() if len(pred_) else {},
    }


def _gold(df: pd.DataFrame, gold_col: str, scheme: LabelScheme) -> list[str]:
    if gold_col not in df.columns:
        raise ValueError(f"evaluation data: gold column {gold_col!r} is missing; found {list(df.columns)}")
    out = []
    for i, v in enumerate(df[gold_col].tolist()):
        lab = scheme.parse(v)
        if lab is None:
            raise ValueError(f"evaluation data row {i}: {gold_col} value {v!r} is not a label of scheme {scheme.name}")
        out.append(lab.name)
    return out


def evaluate_scoring(model: str, df: pd.DataFrame, *, gold_col: str, label_config: str = "", labels: str = "",
                     threads: int = 0, beta: float | None = None,
                     forward: tuple[int, bool] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grade `df` as `taosr1 label --model MODEL` does (post-CoT scoring, CumPT), then score against gold.

    `forward` (frozen blocks, bf16): score with the training forward instead of the transformers engine
    (taosr1/training/forward_engine.py): the same rows, prompts and CumPT, the lower blocks' output shared
    by every model graded in the process."""
    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir
    from taosr1.labeling.calibration import resolve_beta
    from taosr1.labeling.labeler import LabelConfig, Labeler, label_frame

    cfg = cfgmod.load(LabelConfig, label_config or conf_dir() / "label.yaml",
                      {"labels": labels or None, "beta": beta, "engine.model": model, "engine.threads": threads or None,
                       "prompt.format": "post_cot"})
    if forward is None:
        labeler = Labeler.from_config(cfg)
    else:
        from taosr1.core.labels import load_scheme
        from taosr1.training.forward_engine import ForwardEngine

        engine = ForwardEngine(model, frozen=forward[0], bf16=forward[1])
        scheme = load_scheme(cfg.labels)
        labeler = Labeler(engine, scheme, cfg.prompt, resolve_beta(cfg.beta, model, scheme))
    result = label_frame(df, labeler, cfg.columns, chunk_rows=cfg.chunk_rows)
    graded = result.graded
    gold = _gold(graded, gold_col, labeler.scheme)
    m = classification_metrics(gold, graded["label"].tolist(), labeler.scheme)
    m.update({"mode": "score", "beta": labeler.beta, "quarantined": len(result.quarantine), "seconds": round(result.seconds, 1)})
    return m, graded


def evaluate_generation(model: str, df: pd.DataFrame, *, gold_col: str, fmt: str, label_config: str = "",
                        labels: str = "", threads: int = 0, max_new_tokens: int = 160,
                        engine: dict[str, Any] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Generate each response greedily (`taosr1 explain` does the same), parse its label, score against gold.

    `engine`: further EngineConfig keys (max_batch_tokens, max_batch_size, ...); a GPU takes far larger
    generation batches than the CPU-sized defaults."""
    from tqdm import tqdm

    from taosr1.core.prompts import PromptBuilder, parse_response
    from taosr1.core.validate import validate_rows
    from taosr1.labeling.engines import EngineConfig, make_engine
    from taosr1.training.common import serving_setup

    serving = serving_setup(label_config, labels, fmt)
    cols = serving.label_config.columns
    fields, reasons = validate_rows(df.reset_index(drop=True), cols)
    ok = [i for i, r in enumerate(reasons) if r is None]
    eng = make_engine(EngineConfig(**{**(engine or {}), "model": model, "threads": threads}))
    builder = PromptBuilder(eng.tokenizer, serving.scheme, serving.prompt)
    start = time.perf_counter()
    built = builder.build(fields.iloc[ok].to_dict("records"))
    # a long generation (think-first on a CPU: ~40 min) reports each batch, also into a log file
    with tqdm(total=len(built.ids), desc=f"generating ({fmt})", unit="pair", mininterval=10) as bar:
        texts = [g[0] for g in eng.generate(built.ids, n=1, temperature=0.0, max_new_tokens=max_new_tokens,
                                            progress=bar.update)]
    parsed = [parse_response(t, serving.scheme, fmt) for t in texts]
    out = df.reset_index(drop=True).iloc[ok].copy()
    out["response"] = texts
    out["label"] = [p.label.name if p.label else None for p in parsed]
    gold = _gold(out, gold_col, serving.scheme)
    m = classification_metrics(gold, out["label"].tolist(), serving.scheme)
    m.update({"mode": f"generate_{fmt}", "max_new_tokens": max_new_tokens, "seconds": round(time.perf_counter() - start, 1)})
    return m, out.reset_index(drop=True)
