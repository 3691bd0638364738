"""`taosr1 sample`: pass@N offline sampling, N responses per training prompt.

`sample_batch` is a pure function of a pandas batch and an engine, which a Spark
`mapInPandas` can call per partition; `pass_rates` turns the samples into each prompt's
difficulty. Two ways to draw (`draw`):
- `label` (post-CoT): each sample's label is drawn from the scorer's own distribution over
  the label tokens (`engine.score`, one forward pass per prompt, prefix reuse), at the
  temperature. The label is post-CoT's first token, so this is the first token of a sampled
  response restricted to the labels. A label-phase model puts little of its full-vocabulary
  mass on the label tokens (it was trained on their softmax, which is what serving reads),
  so free sampling from it mostly yields unparseable text: 1,006 of 1,024 samples on seed 0.
- `response`: whole responses from `engine.generate` (n=N; vLLM serves it on GPUs); the
  think-first format needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from taosr1.core.config import ConfigError
from taosr1.core.labels import LabelScheme
from taosr1.core.prompts import PromptBuilder, parse_response
from taosr1.labeling.engines.base import EngineConfig, prompt_seed

# One row per sample (the table `sample_batch` returns; a Spark job's output schema).
SAMPLE_COLUMNS = {"pair_id": "int64", "sample": "int64", "gold": "string", "response": "string",
                  "label": "string", "correct": "bool", "error": "string"}
# One row per prompt.
DIFFICULTY_COLUMNS = {"pair_id": "int64", "gold": "string", "n": "int64", "correct": "int64", "pass_rate": "float64"}
DRAWS = ("label", "response")


@dataclass
class SampleConfig:
    """`taosr1 sample` (conf/train/sample.yaml).

    Parameters:
        data: the output folder of `taosr1 cot` (the training prompts and gold labels).
        output_dir: folder for samples.parquet, difficulty.parquet and taosr1_stage.json.
        n: responses per prompt (the N of pass@N).
        temperature: sampling temperature (> 0, or every sample is the same).
        draw: `label` (post-CoT only) draws each sample's label from the scorer's distribution
            over the label tokens; `response` generates whole responses (see the module docstring).
        max_new_tokens: response budget (`draw: response`); post-CoT's label is the first token,
            so a short budget still grades every sample.
        format: the response format the model was trained on.
        label_config, labels: as for the training stages (the serving prompt).
        max_examples: sample the first N prompts (0 = all).
        batch_rows: prompts per engine call.
        seed: sampling seed; the engines seed each prompt from it and the prompt's tokens, so a
            prompt's samples do not depend on its batch (nor on the Spark job's partitions).
        engine: engine section; `engine.model` is the model sampled (the SFT model).
        training_forward: >= 0: `draw: label` scores with the training forward instead of the engine
            (taosr1/training/forward_engine.py), this many lower blocks kept, their output shared with
            the SFT stage in the same process (the pipeline sets it with `eval_forward`); -1: the engine.
    """

    data: str = ""
    output_dir: str = ""
    n: int = 4
    temperature: float = 1.0
    draw: str = "label"
    max_new_tokens: int = 160
    format: str = "post_cot"
    label_config: str = ""
    labels: str = ""
    max_examples: int = 0
    batch_rows: int = 256
    seed: int = 0
    engine: EngineConfig = field(default_factory=EngineConfig)
    training_forward: int = -1

    def __post_init__(self) -> None:
        from taosr1.training.common import check_format, coerce_floats

        coerce_floats(self)
        check_format(self.format)
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 for pass@N sampling, got {self.temperature}")
        check_draw(self.draw, self.format)
        if self.max_new_tokens < 1 or self.batch_rows < 1 or self.max_examples < 0:
            raise ConfigError(
                f"max_new_tokens and batch_rows must be >= 1 and max_examples >= 0, got "
                f"{self.max_new_tokens}, {self.batch_rows}, {self.max_examples}")


def check_draw(draw: str, fmt: str) -> None:
    if draw not in DRAWS:
        raise ConfigError(f"draw must be one of {DRAWS}, got {draw!r}")
    if draw == "label" and fmt != "post_cot":
        raise ConfigError(f"draw: label reads the label as the response's first token, which only post_cot has; "
                          f"format {fmt!r} needs draw: response")


def draw_labels(engine: Any, prompts: list[list[int]], scheme: LabelScheme, *, n: int, temperature: float,
                seed: int = 0, progress: Callable[[int], None] | None = None) -> list[list[str]]:
    """`n` post-CoT answers per prompt: labels drawn from softmax(log P(label) / temperature).

    P is the scorer's distribution (what serving grades by). Each prompt draws from its own
    generator, seeded by `seed` and the prompt's tokens, so its samples do not depend on its batch.
    """
    import numpy as np

    probs = engine.score(prompts, scheme.token_ids(engine.tokenizer), progress=progress)
    out = []
    for prompt, p in zip(prompts, probs):
        q = np.power(np.clip(p, 1e-300, None), 1.0 / temperature)
        picks = np.random.default_rng(prompt_seed(seed, prompt)).choice(len(q), size=n, p=q / q.sum())
        out.append([scheme.labels[k].token for k in picks])
    return out


def sample_batch(batch: pd.DataFrame, engine: Any, builder: PromptBuilder, *, n: int, temperature: float,
                 max_new_tokens: int, seed: int = 0, fmt: str = "post_cot", draw: str = "label",
                 progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """N sampled responses for each row of `batch` (columns pair_id, gold and the prompt fields), each parsed.

    Returns one row per sample with SAMPLE_COLUMNS; `correct` is parsed label == gold, `error`
    says why a response has no label.
    """
    from taosr1.training.common import field_rows

    scheme: LabelScheme = builder.scheme
    if batch.empty:
        return empty_samples()
    check_draw(draw, fmt)
    built = builder.build(field_rows(batch))
    if draw == "label":
        gens = draw_labels(engine, built.ids, scheme, n=n, temperature=temperature, seed=seed, progress=progress)
    else:
        gens = engine.generate(built.ids, n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                               seed=seed, progress=progress)
    recs = []
    for pid, gold, texts in zip(batch["pair_id"].tolist(), batch["gold"].tolist(), gens):
        g = scheme.parse(gold)
        for k, text in enumerate(texts):
            p = parse_response(text, scheme, fmt)
            recs.append({"pair_id": int(pid), "sample": k, "gold": g.name if g else str(gold), "response": text,
                         "label": p.label.name if p.label else None, "correct": p.label is not None and p.label == g,
                         "error": p.error})
    return pd.DataFrame.from_records(recs).astype(SAMPLE_COLUMNS)


def empty_samples() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in SAMPLE_COLUMNS.items()})


def pass_rates(samples: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: samples, correct samples, pass rate (its difficulty: low = hard)."""
    if samples.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DIFFICULTY_COLUMNS.items()})
    g = samples.groupby("pair_id", sort=True)
    out = pd.DataFrame({"gold": g["gold"].first(), "n": g.size(), "correct": g["correct"].sum()}).reset_index()
    out["pass_rate"] = out["correct"] / out["n"]
    return out.astype(DIFFICULTY_COLUMNS)


def pass_at_k(samples: pd.DataFrame) -> dict[str, float]:
    """pass@k for k = 1..N: the share of prompts with a right answer among their first k samples."""
    if samples.empty:
        return {}
    n = int(samples.groupby("pair_id").size().min())
    out = {}
    for k in range(1, n + 1):
        hit = samples[samples["sample"] < k].groupby("pair_id")["correct"].any()
        out[f"pass@{k}"] = round(float(hit.mean()), 4)
    return out


def sampler(cfg: SampleConfig):
    """The engine that samples: the configured one, or the training forward for label draws."""
    from taosr1.labeling.engines import make_engine

    if cfg.training_forward < 0 or cfg.draw != "label":
        return make_engine(cfg.engine)
    from taosr1.labeling.models import resolve_model
    from taosr1.training.common import bf16_autocast
    from taosr1.training.forward_engine import ForwardEngine

    return ForwardEngine(resolve_model(cfg.engine.model), frozen=cfg.training_forward, bf16=bf16_autocast())


def run_sampling(cfg: SampleConfig, values_hash: str = "") -> dict[str, Any]:
    """Sample every training prompt, write samples.parquet, difficulty.parquet and the stage marker."""
    from tqdm import tqdm

    from taosr1.training.common import DIFFICULTY_FILE, SAMPLES_FILE, serving_setup, write_stage
    from taosr1.training.sft import read_cot

    if not cfg.output_dir:
        raise ConfigError("output_dir is not set; give --output DIR or output_dir in the config")
    serving = serving_setup(cfg.label_config, cfg.labels, cfg.format)
    cot = read_cot(cfg.data, cfg.max_examples)
    engine = sampler(cfg)
    builder = PromptBuilder(engine.tokenizer, serving.scheme, serving.prompt)
    parts = []
    with tqdm(total=len(cot), desc="sampling", unit="prompt", disable=None) as bar:
        for s in range(0, len(cot), cfg.batch_rows):
            parts.append(sample_batch(cot.iloc[s: s + cfg.batch_rows], engine, builder, n=cfg.n,
                                      temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                      seed=cfg.seed, fmt=cfg.format, draw=cfg.draw, progress=bar.update))
    samples = pd.concat(parts, ignore_index=True) if parts else empty_samples()
    diff = pass_rates(samples)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples.to_parquet(out / SAMPLES_FILE, index=False)
    diff.to_parquet(out / DIFFICULTY_FILE, index=False)
    summary = {"model": engine.model_path, "format": cfg.format, "draw": cfg.draw, "prompts": len(diff), "n": cfg.n,
               "temperature": cfg.temperature, "samples": len(samples),
               "unparseable": int(samples["label"].isna().sum()), **pass_at_k(samples),
               "all_right": int((diff["pass_rate"] == 1).sum()), "none_right": int((diff["pass_rate"] == 0).sum()),
               "mixed": int(((diff["pass_rate"] > 0) & (diff["pass_rate"] < 1)).sum())}
    write_stage(out, "sample", summary, values_hash)
    return summary
