"""`taosr1 train dpo`: preference pairs from the pass@N samples, trained with TRL's DPOTrainer.

Pairs, per prompt (TaoSR1 stage 2):
- some samples right, some wrong: chosen = a right sample, rejected = a wrong one (`right_vs_wrong`);
- no sample right: chosen = the reference response from the CoT data (the teacher's, or the
  gold template), rejected = a sample (`reference_vs_sample`); when the samples are labels
  alone (`draw: label`), the reference is the gold label alone;
- every sample right: no pair (`all_right`, nothing to prefer).
A wrong sample is any sample whose label is not the gold label, an unparseable one included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from trl import DPOConfig

from taosr1.core.config import ConfigError
from taosr1.core.labels import LabelScheme
from taosr1.training.common import TrainStage

PAIR_KINDS = ("right_vs_wrong", "reference_vs_sample")


def build_pairs(samples: pd.DataFrame, reference: pd.DataFrame, *, pairs_per_prompt: int = 1, seed: int = 0
                ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Preference pairs (pair_id, kind, chosen, rejected) and how many prompts fell in each case.

    `samples`: pair_id, sample, response, correct. `reference`: pair_id, response (the CoT
    response in the same format). Up to `pairs_per_prompt` pairs per prompt, drawn with `seed`.
    """
    if pairs_per_prompt < 1:
        raise ValueError(f"pairs_per_prompt must be >= 1, got {pairs_per_prompt}")
    rng = np.random.default_rng(seed)
    ref = dict(zip(reference["pair_id"].astype(int), reference["response"]))
    counts = {"right_vs_wrong": 0, "reference_vs_sample": 0, "all_right": 0, "no_reference": 0,
              "pairs": 0, "prompts": 0}
    recs = []
    for pid, g in samples.sort_values(["pair_id", "sample"]).groupby("pair_id", sort=True):
        counts["prompts"] += 1
        right = g.loc[g["correct"], "response"].tolist()
        wrong = g.loc[~g["correct"], "response"].tolist()
        if not wrong:
            counts["all_right"] += 1
            continue
        rng.shuffle(wrong)
        if right:
            rng.shuffle(right)
            kind, chosen = "right_vs_wrong", right
        elif int(pid) in ref:
            kind, chosen = "reference_vs_sample", [ref[int(pid)]]
        else:
            counts["no_reference"] += 1
            continue
        counts[kind] += 1
        for k in range(min(pairs_per_prompt, len(wrong))):
            recs.append({"pair_id": int(pid), "kind": kind, "chosen": chosen[k % len(chosen)], "rejected": wrong[k]})
    pairs = pd.DataFrame.from_records(recs, columns=["pair_id", "kind", "chosen", "rejected"])
    counts["pairs"] = len(pairs)
    return pairs, counts


def reference_responses(cot: pd.DataFrame, scheme: LabelScheme, fmt: str, *, label_only: bool) -> pd.DataFrame:
    """pair_id, response: the chosen answer where no sample was right.

    The CoT data's response in `fmt`; with label-only samples (`draw: label`), the gold label
    alone, so that every pair, whatever its kind, differs in the judgement and in nothing else.
    """
    if label_only:
        return cot[["pair_id"]].assign(response=[scheme.parse(g).token for g in cot["gold"]])
    return cot[["pair_id", f"response_{fmt}"]].rename(columns={f"response_{fmt}": "response"})


@dataclass
class DPOStageConfig(TrainStage, DPOConfig):
    """DPOConfig plus the project's fields (see TrainStage); conf/train/dpo.yaml.

    Parameters:
        model: the policy to improve (the SFT model); it is also the frozen reference.
        samples: the output folder of `taosr1 sample` (pass@N samples of that model).
        pairs_per_prompt: preference pairs per prompt at most.
        class_weight_power: with `draw: label` samples, each pair's loss is weighed by its gold
            class's inverse frequency to this power (0 = unweighted; 1 = balanced). Balanced by
            default: lowering a rejected label lowers it for every prompt, and pairs with the common
            gold grade would otherwise push every prompt toward it.
    """

    samples: str = ""
    pairs_per_prompt: int = 1
    class_weight_power: float = 1.0
    max_length: int | None = 768
    learning_rate: float = 5e-6

    def __post_init__(self) -> None:
        if self.pairs_per_prompt < 1:
            raise ConfigError(f"pairs_per_prompt must be >= 1, got {self.pairs_per_prompt}")
        super().__post_init__()


def label_dpo(model, tok, builder, cot: pd.DataFrame, pairs: pd.DataFrame, cfg: DPOStageConfig,
              key: str = "") -> dict[str, Any]:
    """DPO on the label position (taosr1/training/label_rl.py) of `model` (its LoRA adapters, if any)."""
    from taosr1.training.common import field_rows, loop_config
    from taosr1.training.label_loss import class_weights
    from taosr1.training.label_rl import train_label_dpo

    scheme = builder.scheme
    ids = dict(zip(cot["pair_id"].astype(int), builder.build(field_rows(cot)).ids))
    index = {lab.token: k for k, lab in enumerate(scheme.labels)}
    chosen = [index[c] for c in pairs["chosen"]]  # the gold label: every label-only pair prefers it
    weights = class_weights(chosen, len(index), cfg.class_weight_power)
    try:
        out = train_label_dpo(model, [ids[int(p)] for p in pairs["pair_id"]], chosen, [index[r] for r in pairs["rejected"]],
                              scheme.token_ids(tok), pad_id=tok.pad_token_id, beta=cfg.beta, loss_type=cfg.loss_type,
                              loss_weights=cfg.loss_weights, row_weights=[weights[c] for c in chosen],
                              loop=loop_config(cfg, "label_dpo", epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
                                               batch_size=cfg.per_device_train_batch_size,
                                               learning_rate=cfg.learning_rate, key=key))
    except ValueError as e:
        raise ConfigError(f"dpo: {e}") from e
    return {"trainer": "label position", "pairs_trained": len(pairs), "loss_type": list(cfg.loss_type),
            "class_weights": [round(w, 3) for w in weights], "pairs_trained_by_kind": pairs["kind"].value_counts().to_dict(), **out}


def read_samples(path: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    from taosr1.training.common import DIFFICULTY_FILE, SAMPLES_FILE, read_stage, require_stage

    p = require_stage(path, "sample", "samples")
    return pd.read_parquet(p / SAMPLES_FILE), pd.read_parquet(p / DIFFICULTY_FILE), read_stage(p) or {}


def run_dpo(cfg: DPOStageConfig, values_hash: str = "") -> dict[str, Any]:
    """Build the pairs, train DPO, save the (merged) model and the stage marker."""
    from datasets import Dataset
    from trl import DPOTrainer

    from taosr1.core.prompts import PromptBuilder
    from taosr1.training.common import (
        field_rows,
        finish_stage,
        last_checkpoint,
        load_for_training,
        lora_config,
        serving_setup,
        start_stage,
        train_metrics,
        with_lora,
    )
    from taosr1.training.sft import read_cot

    serving = serving_setup(cfg.label_config, cfg.labels, cfg.format)
    cot = read_cot(cfg.data)
    samples, _, sample_info = read_samples(cfg.samples)
    if sample_info.get("format", cfg.format) != cfg.format:
        raise ConfigError(f"samples {cfg.samples} are in format {sample_info.get('format')!r}, this stage trains {cfg.format!r}")
    label_only = sample_info.get("draw") == "label"  # one label token per sample
    reference = reference_responses(cot, serving.scheme, cfg.format, label_only=label_only)
    pairs, counts = build_pairs(samples, reference, pairs_per_prompt=cfg.pairs_per_prompt, seed=cfg.seed)
    if cfg.max_examples:
        pairs = pairs.head(cfg.max_examples)
    if pairs.empty:
        raise ConfigError(f"no preference pairs from {cfg.samples}: {counts} (every prompt was always solved?)")
    start_stage(cfg, values_hash)
    model, tok, start = load_for_training(cfg.model, lora=cfg.lora_r > 0)
    builder = PromptBuilder(tok, serving.scheme, serving.prompt)
    summary = {"start_model": start, "format": cfg.format, "labels": serving.scheme.name, "pair_counts": counts,
               "lora_r": cfg.lora_r}
    if label_only:  # DPO on the label position
        model = with_lora(model, cfg)
        summary.update(label_dpo(model, tok, builder, cot, pairs, cfg, values_hash))
        finish_stage(model, tok, cfg, "dpo", summary, values_hash)
        return summary
    prompts = dict(zip(cot["pair_id"].astype(int), builder.texts(field_rows(cot))))
    data = pd.DataFrame({"prompt": [prompts[int(p)] for p in pairs["pair_id"]],
                         "chosen": pairs["chosen"].tolist(), "rejected": pairs["rejected"].tolist()})
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_pandas(data), processing_class=tok,
                         peft_config=lora_config(cfg, model.config.num_hidden_layers))
    trainer.train(resume_from_checkpoint=last_checkpoint(cfg, values_hash))
    trained = pairs.head(len(data))
    summary.update({"pairs_trained": len(data), "pairs_trained_by_kind": trained["kind"].value_counts().to_dict(),
                    **train_metrics(trainer)})
    finish_stage(trainer.model, tok, cfg, "dpo", summary, values_hash)
    return summary
