"""`taosr1 train sft`: supervised fine-tuning on the CoT responses (TRL SFTTrainer).

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

from taosr1.training.common import TrainStage


@dataclass
class SFTStageConfig(TrainStage, SFTConfig):
    """SFTConfig plus the project's fields (see TrainStage); conf/train/sft.yaml.

    Parameters:
        max_length: prompt + response tokens kept (TRL truncates the end). Default 768 fits the
            default prompt budgets and a five-step response.
    """

    max_length: int | None = 768
    learning_rate: float = 2e-5
    num_train_epochs: float = 1.0


def sft_dataset(cot: pd.DataFrame, builder: Any, fmt: str) -> pd.DataFrame:
    """prompt (the serving prompt text) / completion (the response in `fmt`) rows."""
    from taosr1.training.common import field_rows

    return pd.DataFrame({"prompt": builder.texts(field_rows(cot)), "completion": cot[f"response_{fmt}"].tolist()})


def read_cot(data: str | Path, max_examples: int = 0) -> pd.DataFrame:
    from taosr1.training.common import COT_FILE, require_stage

    df = pd.read_parquet(require_stage(data, "cot", "data") / COT_FILE)
    return df.head(max_examples) if max_examples else df


def run_sft(cfg: SFTStageConfig, values_hash: str = "") -> dict[str, Any]:
    """Train, save the (merged) model and tokenizer into cfg.output_dir, write the stage marker."""
    from datasets import Dataset
    from trl import SFTTrainer

    from taosr1.prompts import PromptBuilder
    from taosr1.training.common import load_for_training, lora_config, save_model, serving_setup, train_metrics, write_stage

    serving = serving_setup(cfg.label_config, cfg.labels, cfg.format)
    cot = read_cot(cfg.data, cfg.max_examples)
    model, tok, start = load_for_training(cfg.model, lora=cfg.lora_r > 0)
    builder = PromptBuilder(tok, serving.scheme, serving.prompt)
    data = sft_dataset(cot, builder, cfg.format)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_pandas(data),
                         processing_class=tok, peft_config=lora_config(cfg))
    trainer.train()
    save_model(trainer.model, tok, cfg.output_dir)
    summary = {"start_model": start, "format": cfg.format, "labels": serving.scheme.name,
               "examples": len(data), "teacher_rows": int((cot["source"] == "teacher").sum()),
               "lora_r": cfg.lora_r, **train_metrics(trainer)}
    write_stage(cfg.output_dir, "sft", summary, values_hash)
    return summary
