"""`taosr1 train grpo`: GRPO with difficulty-based dynamic sampling (TRL's GRPOTrainer).

Data rules (TaoSR1 stage 3):
- difficulty = a prompt's pass rate over its pass@N samples; keep prompts with
  0 < pass rate < gamma, dropping the never-solved and the (nearly) always-solved, whose
  rollout groups would all score alike and so teach nothing;
- class-balanced downsampling: each gold class capped at `balance_ratio` x the smallest
  class, since a skewed label mix in RL data hurts macro-F1; the coefficient of variation
  of the class counts is reported before and after;
- during training, groups whose rewards all came out equal are dropped from the loss and
  from its token normaliser (TRL 1.16 has no option for it: such a group's advantages are
  all zero, and `drop_equal_reward_groups` masks its completions).
Rewards: taosr1.training.rewards (label match, and a format term for unparseable answers).
Generation: vLLM (colocated) when it is installed and CUDA is there, else `generate`.
`draw: label` (post-CoT) makes each completion the label token alone, drawn from the label
tokens' softmax, which is what serving reads; it trains on the label position
(taosr1/training/label_rl.py) rather than through TRL's generate-and-score loop. A
label-phase model puts little full-vocabulary mass on the label tokens, so free completions
from it are mostly unparseable and every reward in a group comes out equal.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from trl import GRPOConfig

from taosr1.core.config import ConfigError
from taosr1.training.common import TrainStage


def coefficient_of_variation(counts: Sequence[int] | dict[str, int]) -> float:
    """std / mean of the class counts (population std); 0 for fewer than two classes."""
    vals = np.asarray(list(counts.values()) if isinstance(counts, dict) else list(counts), dtype=float)
    if len(vals) < 2 or vals.mean() == 0:
        return 0.0
    return float(vals.std() / vals.mean())


def difficulty_filter(difficulty: pd.DataFrame, gamma: float = 1.0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Prompts with 0 < pass_rate < gamma, and how many were dropped for each reason."""
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    p = difficulty["pass_rate"]
    keep = (p > 0) & (p < gamma)
    counts = {"prompts": len(difficulty), "kept": int(keep.sum()), "never_solved": int((p == 0).sum()),
              "always_solved": int((p == 1).sum()), "above_gamma": int(((p >= gamma) & (p < 1)).sum())}
    return difficulty[keep].reset_index(drop=True), counts


def class_balance(df: pd.DataFrame, label_col: str = "gold", ratio: float = 1.0, seed: int = 0
                  ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Downsample each class to at most ceil(ratio x the smallest class); ratio 0 leaves the data as is.

    Returns the kept rows (input order) and class counts with their CV before and after.
    """
    if ratio != 0 and ratio < 1:
        raise ValueError(f"balance_ratio must be 0 (off) or >= 1, got {ratio}")
    before = df[label_col].value_counts().sort_index().to_dict()
    out = df
    if ratio and before:
        cap = math.ceil(ratio * min(before.values()))
        rng = np.random.default_rng(seed)
        keep = []
        for _, idx in df.groupby(label_col, sort=True).groups.items():
            idx = list(idx)
            keep += list(rng.choice(idx, size=cap, replace=False)) if len(idx) > cap else idx
        out = df.loc[sorted(keep)].reset_index(drop=True)
    after = out[label_col].value_counts().sort_index().to_dict()
    info = {"counts_before": before, "counts_after": after, "cv_before": round(coefficient_of_variation(before), 4),
            "cv_after": round(coefficient_of_variation(after), 4)}
    return out, info


@dataclass
class GRPOStageConfig(TrainStage, GRPOConfig):
    """GRPOConfig plus the project's fields (see TrainStage); conf/train/grpo.yaml.

    Parameters:
        samples: the output folder of `taosr1 sample` whose pass rates give each prompt's
            difficulty; "" trains on every CoT prompt (no difficulty filter).
        gamma: keep prompts with pass rate in (0, gamma); 1 drops only the always-solved.
        balance_ratio: cap each class at ratio x the smallest class; 0 = no balancing.
        drop_equal_reward_groups: drop rollout groups whose rewards are all equal from the loss.
        class_weight_power: with `draw: label`, each prompt's advantages are scaled by its gold
            class's inverse frequency to this power (0 = unweighted), as the SFT label phase is.
        draw: `label` (post-CoT only): each completion is one label token drawn from the label
            tokens' softmax, trained on the label position; `response`: free completions (TRL).
        use_vllm: None = vLLM when it is installed and CUDA is available (TRL's field otherwise).
        vllm_mode: `colocate` (one process shares its GPU with vLLM) by default.
        max_completion_length: 256; a post-CoT answer is graded on its first token, so RL
            can run with far shorter completions than the reasoning needs.
    """

    samples: str = ""
    gamma: float = 1.0
    balance_ratio: float = 1.0
    drop_equal_reward_groups: bool = True
    class_weight_power: float = 0.5
    draw: str = "label"
    use_vllm: bool | None = None  # type: ignore[assignment]
    vllm_mode: str = "colocate"
    max_completion_length: int | None = 256

    def __post_init__(self) -> None:
        import torch

        from taosr1.training.sampling import check_draw

        check_draw(self.draw, self.format)
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.balance_ratio != 0 and self.balance_ratio < 1:
            raise ConfigError(f"balance_ratio must be 0 (off) or >= 1, got {self.balance_ratio}")
        if self.use_vllm is None:
            self.use_vllm = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
        super().__post_init__()
        if self.drop_equal_reward_groups and self.multi_objective_aggregation != "sum_then_normalize":
            raise ConfigError("drop_equal_reward_groups needs multi_objective_aggregation=sum_then_normalize "
                              f"(equal-reward groups have zero advantages only there), got {self.multi_objective_aggregation!r}")


def group_filter_trainer():
    """GRPOTrainer that drops rollout groups whose rewards are all equal (see the module docstring)."""
    import torch
    from trl import GRPOTrainer

    class GroupFilterGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if not self.model.training or not self.args.drop_equal_reward_groups:
                return out
            adv = self.accelerator.gather(out["advantages"])  # all processes, in group order
            flat = torch.isclose(adv.view(-1, self.num_generations), torch.zeros((), device=adv.device), atol=1e-6).all(dim=1)
            keep = (~flat).repeat_interleave(self.num_generations)
            n = out["advantages"].size(0)
            local = keep[self.accelerator.process_index * n: (self.accelerator.process_index + 1) * n]
            mask = out["completion_mask"] * local.unsqueeze(1).to(out["completion_mask"].dtype)
            out["completion_mask"] = mask
            loss_mask = mask if out.get("tool_mask") is None else mask * out["tool_mask"]
            out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
            self._metrics["train"]["dropped_equal_reward_groups"].append(flat.float().mean().item())
            return out

    return GroupFilterGRPOTrainer


def label_grpo(model, tok, builder, rows: pd.DataFrame, cfg: GRPOStageConfig, key: str = "") -> dict[str, Any]:
    """GRPO on the label position (taosr1/training/label_rl.py) of `model` (its LoRA adapters, if any)."""
    from taosr1.training.common import field_rows, loop_config
    from taosr1.training.label_loss import class_weights
    from taosr1.training.label_rl import train_label_grpo

    scheme = builder.scheme
    if cfg.per_device_train_batch_size % cfg.num_generations:
        raise ConfigError(f"per_device_train_batch_size ({cfg.per_device_train_batch_size}) must be a multiple of "
                          f"num_generations ({cfg.num_generations})")
    per_step = cfg.per_device_train_batch_size // cfg.num_generations
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(len(rows) / per_step * cfg.num_train_epochs)
    gold = [scheme.names.index(g) for g in rows["gold"]]
    weights = class_weights(gold, len(scheme.names), cfg.class_weight_power)
    out = train_label_grpo(model, builder.build(field_rows(rows)).ids, gold, scheme.token_ids(tok), pad_id=tok.pad_token_id,
                           num_generations=cfg.num_generations, temperature=cfg.temperature,
                           row_weights=[weights[g] for g in gold],
                           loop=loop_config(cfg, "label_grpo", epochs=0, max_steps=steps, batch_size=per_step,
                                            learning_rate=cfg.learning_rate, key=key))
    return {"class_weights": [round(w, 3) for w in weights], **out}


def grpo_prompts(cot: pd.DataFrame, difficulty: pd.DataFrame | None, cfg: GRPOStageConfig
                 ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The CoT rows GRPO trains on: difficulty filter, then class balance."""
    info: dict[str, Any] = {}
    rows = cot
    if difficulty is not None:
        kept, info["difficulty"] = difficulty_filter(difficulty, cfg.gamma)
        rows = cot[cot["pair_id"].isin(kept["pair_id"])].reset_index(drop=True)
    rows, info["balance"] = class_balance(rows, "gold", cfg.balance_ratio, cfg.seed)
    if cfg.max_examples:
        rows = rows.head(cfg.max_examples)
    return rows, info


def run_grpo(cfg: GRPOStageConfig, values_hash: str = "") -> dict[str, Any]:
    """Select the prompts, train GRPO, save the (merged) model and the stage marker."""
    from datasets import Dataset

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
    from taosr1.training.dpo import read_samples
    from taosr1.training.rewards import make_rewards
    from taosr1.training.sft import read_cot

    serving = serving_setup(cfg.label_config, cfg.labels, cfg.format)
    cot = read_cot(cfg.data)
    difficulty = None
    if cfg.samples:
        _, difficulty, sample_info = read_samples(cfg.samples)
        if sample_info.get("format", cfg.format) != cfg.format:
            raise ConfigError(f"samples {cfg.samples} are in format {sample_info.get('format')!r}, this stage trains {cfg.format!r}")
    rows, info = grpo_prompts(cot, difficulty, cfg)
    if rows.empty:
        raise ConfigError(f"no prompt left for GRPO after the data rules: {info}; sample with a larger n, "
                          "raise gamma, or start from a model that solves some prompts")
    start_stage(cfg, values_hash)
    model, tok, start = load_for_training(cfg.model, lora=cfg.lora_r > 0)
    builder = PromptBuilder(tok, serving.scheme, serving.prompt)
    if cfg.draw == "label":  # one label token per completion: GRPO on the label position
        model = with_lora(model, cfg)
        summary = {"start_model": start, "format": cfg.format, "labels": serving.scheme.name, "prompts": len(rows),
                   **info, "draw": cfg.draw, "trainer": "label position", "num_generations": cfg.num_generations,
                   "lora_r": cfg.lora_r, **label_grpo(model, tok, builder, rows, cfg, values_hash)}
        finish_stage(model, tok, cfg, "grpo", summary, values_hash)
        return summary
    data = pd.DataFrame({"prompt": builder.texts(field_rows(rows)), "gold": rows["gold"].tolist()})
    trainer_cls = group_filter_trainer()
    trainer = trainer_cls(model=model, reward_funcs=make_rewards(serving.scheme, cfg.format), args=cfg,
                          train_dataset=Dataset.from_pandas(data), processing_class=tok, peft_config=lora_config(cfg, model.config.num_hidden_layers))
    trainer.train(resume_from_checkpoint=last_checkpoint(cfg, values_hash))
    dropped = [h["dropped_equal_reward_groups"] for h in trainer.state.log_history if "dropped_equal_reward_groups" in h]
    summary = {"start_model": start, "format": cfg.format, "labels": serving.scheme.name, "prompts": len(data),
               **info, "draw": cfg.draw, "use_vllm": cfg.use_vllm, "num_generations": cfg.num_generations, "lora_r": cfg.lora_r,
               "mean_dropped_equal_reward_groups": round(float(np.mean(dropped)), 4) if dropped else None,
               **train_metrics(trainer)}
    finish_stage(trainer.model, tok, cfg, "grpo", summary, values_hash)
    return summary
