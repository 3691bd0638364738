"""`taosr1 train sft`: supervised fine-tuning, in two phases.

1. The label phase (`label_epochs`): cross-entropy over the label tokens' logits at the last
   prompt position, class-weighted, with the prefix every prompt shares run once per batch
   (taosr1/training/label_loss.py). This is exactly what serving reads, so this is the phase
   that teaches the grade.
2. The CoT phase (`num_train_epochs`, TRL SFTTrainer): next-token loss on the response, so the
   model can explain its grade (`taosr1 explain`). `label_weight` weighs the response's first
   token, the label, against each reasoning token, so the reasoning does not wash the grade out.

The dataset is in TRL's prompt-completion format: `prompt` is the text PromptBuilder
renders for serving (the model's own chat template, fields cut to their budgets), and
`completion` the response in the chosen format. TRL then computes the loss on the
completion only, and appends the tokenizer's EOS (the end of the assistant turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from trl import SFTConfig

from taosr1.core.config import ConfigError
from taosr1.training.common import TrainStage


@dataclass
class SFTStageConfig(TrainStage, SFTConfig):
    """SFTConfig plus the project's fields (see TrainStage); conf/train/sft.yaml.

    Parameters:
        max_length: prompt + response tokens kept (TRL truncates the end). Default 768 fits the
            default prompt budgets and a five-step response.
        num_train_epochs: epochs of the CoT phase (0 = none: a label-only model).
        label_epochs: epochs of the label phase, run first (0 = none). Post-CoT only.
        label_learning_rate, label_batch_size: its optimiser settings.
        class_weight_power: class weights of the label phase, inverse frequency to this power
            (0 = none, 1 = balanced): macro-F1 counts a rare grade as much as a common one.
        label_weight: weight of the label token in the CoT phase's loss, where each reasoning
            token weighs 1 (1 = plain SFT).
        label_loss: the label phase's loss: "ce" (cross-entropy over the label logits) or
            "ordinal" (each cumulative probability P(grade >= g), what CumPT reads).
        soft_label_weight: share of the label phase's loss given to the cot data's soft labels
            (`cot.soft_labels`: cross-entropy against P(grade) from the MiniLM cosine); the gold
            label's loss keeps the rest. 0 = gold only.
        rank_weight: weight of a pairwise ranking term in the label phase: of two rows of one query
            with different gold grades, the better one's expected grade should lead (what NDCG within
            a query reads). 0 = off.
    """

    max_length: int | None = 768
    learning_rate: float = 2e-5
    num_train_epochs: float = 1.0
    label_epochs: float = 0.0
    label_learning_rate: float = 5e-4
    label_batch_size: int = 16
    class_weight_power: float = 0.5
    label_weight: float = 1.0
    label_loss: str = "ce"
    soft_label_weight: float = 0.0
    rank_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.label_loss not in ("ce", "ordinal"):
            raise ConfigError(f"label_loss must be 'ce' or 'ordinal', got {self.label_loss!r}")
        if not 0 <= self.soft_label_weight < 1:
            raise ConfigError(f"soft_label_weight must be in [0, 1), got {self.soft_label_weight}")
        if self.label_epochs < 0 or self.label_batch_size < 1 or self.label_weight < 0:
            raise ConfigError(f"label_epochs and label_weight must be >= 0 and label_batch_size >= 1, got "
                              f"{self.label_epochs}, {self.label_weight}, {self.label_batch_size}")
        if self.label_epochs and self.format != "post_cot":
            raise ConfigError("label_epochs trains the label read at the prompt's end: it needs format post_cot, "
                              f"got {self.format!r}")
        if not self.label_epochs and not self.num_train_epochs:
            raise ConfigError("sft trains nothing: set label_epochs or num_train_epochs above 0")
        super().__post_init__()


def sft_dataset(cot: pd.DataFrame, builder: Any, fmt: str) -> pd.DataFrame:
    """prompt (the serving prompt text) / completion (the response in `fmt`) rows."""
    from taosr1.training.common import field_rows

    return pd.DataFrame({"prompt": builder.texts(field_rows(cot)), "completion": cot[f"response_{fmt}"].tolist()})


def read_cot(data: str | Path, max_examples: int = 0) -> pd.DataFrame:
    from taosr1.training.common import COT_FILE, require_stage

    df = pd.read_parquet(require_stage(data, "cot", "data") / COT_FILE)
    return df.head(max_examples) if max_examples else df


def weighted_nll(log_probs, mask, label_weight: float):
    """Mean negative log-likelihood over the response tokens (`mask`), each response's first token
    (the label) weighted `label_weight` times a reasoning token."""
    mask = mask.float()
    first = (mask.cumsum(1) == 1) & (mask > 0)
    w = mask + (label_weight - 1.0) * first.float()
    return (-log_probs * w).sum() / w.sum().clamp(min=1.0)


def label_weighted_trainer(label_weight: float):
    """An SFTTrainer class whose loss is `weighted_nll` (TRL's fused per-token log-probs: no
    full-vocabulary logits); label_weight 1 is TRL's own loss."""
    from trl import SFTTrainer

    class LabelWeightedSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if label_weight == 1.0:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            loss = weighted_nll(outputs.log_probs, outputs.label_mask, label_weight)
            return (loss, outputs) if return_outputs else loss

    return LabelWeightedSFTTrainer


def label_phase(model, tok, builder, cot: pd.DataFrame, cfg: SFTStageConfig, key: str = "") -> dict[str, Any]:
    """Train the label logits serving reads on every CoT row's prompt and gold label."""
    from taosr1.training.common import field_rows, loop_config
    from taosr1.training.label_loss import train_labels

    scheme = builder.scheme
    ids = builder.build(field_rows(cot)).ids
    gold = [scheme.names.index(g) for g in cot["gold"]]
    label_ids = [tok.convert_tokens_to_ids(lab.token) for lab in scheme.labels]
    soft = [list(p) for p in cot["soft_labels"]] if cfg.soft_label_weight else None  # run_sft checked the column
    queries = pd.factorize(cot["query"].astype(str).str.strip().str.lower())[0].tolist() if cfg.rank_weight else None
    loop = loop_config(cfg, "label_phase", epochs=cfg.label_epochs, batch_size=cfg.label_batch_size,
                       learning_rate=cfg.label_learning_rate, key=key)
    return train_labels(model, ids, gold, label_ids, pad_id=tok.pad_token_id, loop=loop,
                        class_weight_power=cfg.class_weight_power, loss=cfg.label_loss, soft=soft,
                        soft_weight=cfg.soft_label_weight, queries=queries, rank_weight=cfg.rank_weight)


def run_sft(cfg: SFTStageConfig, values_hash: str = "") -> dict[str, Any]:
    """Label phase, CoT phase; save the (merged) model and tokenizer into cfg.output_dir; write the marker."""
    from datasets import Dataset

    from taosr1.core.prompts import PromptBuilder
    from taosr1.training.common import (
        finish_stage,
        last_checkpoint,
        load_for_training,
        serving_setup,
        start_stage,
        train_metrics,
        with_lora,
    )

    serving = serving_setup(cfg.label_config, cfg.labels, cfg.format)
    cot = read_cot(cfg.data, cfg.max_examples)
    if cfg.soft_label_weight and cfg.label_epochs and "soft_labels" not in cot.columns:
        raise ConfigError(f"soft_label_weight {cfg.soft_label_weight} needs soft labels in the cot data ({cfg.data}): "
                          "build it with soft_labels: cosine (pipeline: --set cot.soft_labels=cosine)")
    start_stage(cfg, values_hash)
    model, tok, start = load_for_training(cfg.model, lora=cfg.lora_r > 0)
    model = with_lora(model, cfg)
    builder = PromptBuilder(tok, serving.scheme, serving.prompt)
    summary: dict[str, Any] = {"start_model": start, "format": cfg.format, "labels": serving.scheme.name,
                               "examples": len(cot), "sources": cot["source"].value_counts().to_dict(),
                               "lora_r": cfg.lora_r, "lora_layers": cfg.lora_layers}
    if cfg.label_epochs:
        summary.update(label_phase(model, tok, builder, cot, cfg, values_hash))
    if cfg.num_train_epochs:
        data = sft_dataset(cot, builder, cfg.format)
        trainer = label_weighted_trainer(cfg.label_weight)(model=model, args=cfg, train_dataset=Dataset.from_pandas(data),
                                                           processing_class=tok)
        trainer.train(resume_from_checkpoint=last_checkpoint(cfg, values_hash))
        model = trainer.model
        summary.update(train_metrics(trainer))
    finish_stage(model, tok, cfg, "sft", summary, values_hash)
    return summary
