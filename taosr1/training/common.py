"""What the training stages share: the serving prompt setup, stage markers, model load/save.

Every stage renders prompts with `PromptBuilder` and the prompt section of the label config
that serving reads (conf/label.yaml by default), so a trained model sees in `taosr1 label`
exactly the text it was trained on. Every stage ends by writing `taosr1_stage.json` into its
output folder; the pipeline skips a stage whose marker is there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from taosr1.core.config import ConfigError
from taosr1.core.labels import LabelScheme, load_scheme
from taosr1.core.names import STAGE_FILE
from taosr1.core.prompts import FIELDS, FORMATS, PromptConfig

COT_FILE = "cot.parquet"
SAMPLES_FILE = "samples.parquet"
DIFFICULTY_FILE = "difficulty.parquet"


@dataclasses.dataclass
class Serving:
    """The label scheme and prompt config a stage trains for (those of `taosr1 label`)."""

    scheme: LabelScheme
    prompt: PromptConfig
    label_config: Any  # taosr1.labeling.labeler.LabelConfig


def serving_setup(label_config: str = "", labels: str = "", fmt: str = "post_cot") -> Serving:
    """Scheme and prompt config from the label config ("" = conf/label.yaml), prompt format set to `fmt`.

    `labels` ("" = the label config's) picks another scheme, as `taosr1 label --labels` does.
    """
    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir
    from taosr1.labeling.labeler import LabelConfig

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    lc = cfgmod.load(LabelConfig, label_config or conf_dir() / "label.yaml",
                     {"labels": labels or None, "prompt.format": fmt})
    return Serving(scheme=load_scheme(lc.labels), prompt=lc.prompt, label_config=lc)


def coerce_floats(cfg: Any) -> None:
    """YAML 1.1 reads `3e-5` (no dot) as text: turn such values of float fields into floats."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, str) and isinstance(f.default, float):
            try:
                setattr(cfg, f.name, float(v))
            except ValueError:
                raise ConfigError(f"{f.name} must be a number, got {v!r}") from None


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")


def field_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The prompt fields of a stage dataset (columns named as taosr1.core.prompts.FIELDS)."""
    cols = [f for f in FIELDS if f in df.columns]
    return [{k: (v if isinstance(v, str) and v else None) for k, v in r.items()} for r in df[cols].to_dict("records")]


# --- stage markers -----------------------------------------------------------------------


def write_stage(out: str | Path, stage: str, summary: dict[str, Any], values_hash: str = "") -> Path:
    """Mark `out` complete: written last, atomically, so a crashed stage has no marker."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"stage": stage, "complete": True, "config_hash": values_hash,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary}
    tmp = out / f".{STAGE_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
    os.replace(tmp, out / STAGE_FILE)
    return out / STAGE_FILE


def read_stage(out: str | Path) -> dict[str, Any] | None:
    f = Path(out) / STAGE_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        return None


def require_stage(path: str | Path, stage: str, what: str) -> Path:
    """`path` as the complete output folder of `stage`, or an error saying which command makes it."""
    p = Path(path)
    if not str(path):
        raise ConfigError(f"{what} is not set; give the output folder of `taosr1 {stage}`")
    marker = read_stage(p)
    if marker is None:
        raise ConfigError(f"{what} {p} is not a complete `{stage}` output (no {STAGE_FILE}); run that stage first")
    if marker.get("stage") != stage:
        raise ConfigError(f"{what} {p} is the output of stage {marker.get('stage')!r}, expected {stage!r}")
    return p


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def bf16_autocast() -> bool:
    """bf16 autocast (float32 master weights) on CUDA with bf16, and on CPUs with native bf16
    (AMX / AVX512-bf16); float32 elsewhere."""
    from taosr1.labeling.engines.hf import native_bf16

    return native_bf16()


def loop_config(cfg: Any, phase: str, *, epochs: float, batch_size: int, learning_rate: float, max_steps: int = 0,
                key: str = ""):
    """The label-position loop's settings (taosr1/training/label_loop.py) from a stage config: its seed,
    bf16 where the machine has it, and checkpoints every `save_steps` when `save_strategy` is steps,
    under OUTPUT/checkpoints/<phase>, resumed only by a run of the same settings (`key`)."""
    from taosr1.training.label_loop import LoopConfig, checkpoint_dir

    save = int(cfg.save_steps) if str(getattr(cfg.save_strategy, "value", cfg.save_strategy)) == "steps" else 0
    return LoopConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_steps=max_steps,
                      bf16=bool(cfg.bf16), seed=cfg.seed, save_steps=max(save, 0),
                      checkpoint_dir=checkpoint_dir(cfg.output_dir, phase) if cfg.output_dir else "",
                      checkpoint_key=f"{key}:{phase}")


# --- models --------------------------------------------------------------------------------


def load_for_training(model: str, lora: bool = False):
    """(model, tokenizer, path) for a trainer.

    Full fine-tuning keeps float32 master weights (on CUDA the trainer's bf16 autocast does
    the matmuls): in bfloat16 weights an update below ~1/256 of a weight rounds away, which
    at learning rates of 1e-6..1e-4 is most of them. With LoRA the frozen base is bfloat16
    on CUDA; peft keeps the adapters in float32. The model is put on the GPU here, not by a TRL
    trainer: the label phase and label DPO/GRPO run their own loop before (or without) one.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from taosr1.labeling.engines.hf import pick_device
    from taosr1.labeling.models import load_tokenizer, resolve_model

    path = resolve_model(model or "base")  # training starts from the untrained base unless told otherwise
    dtype = torch.bfloat16 if (lora and torch.cuda.is_available()) else torch.float32
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(pick_device("auto"))
    tok = load_tokenizer(path)
    if m.generation_config.pad_token_id is None:
        m.generation_config.pad_token_id = tok.pad_token_id
    return m, tok, path


LINEAR_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # Llama/Qwen/SmolLM blocks


def lora_config(cfg: Any, n_layers: int = 0):
    """A peft LoraConfig when `cfg.lora_r` > 0, else None (full fine-tuning).

    `cfg.lora_layers` > 0 puts adapters on the last that many of the model's `n_layers` blocks
    only: the frozen blocks below need no backward pass, which halves a CPU step.
    """
    if cfg.lora_r <= 0:
        return None
    from peft import LoraConfig

    targets: Any = cfg.lora_target_modules
    layers = getattr(cfg, "lora_layers", 0)
    if layers and targets == "all-linear":  # peft takes a layer range only with named modules
        targets = LINEAR_MODULES
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    extra = {"layers_to_transform": list(range(max(n_layers - layers, 0), n_layers))} if layers and n_layers else {}
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", **extra)


def with_lora(model: Any, cfg: Any) -> Any:
    """`model` with trainable LoRA adapters per `cfg` (a peft model), or unchanged for full fine-tuning.

    The adapters' random init is seeded by `cfg.seed`: unseeded, two runs of one config trained
    different models (seed-0 SFT served 0.360-0.372 macro-F1 over three runs)."""
    lc = lora_config(cfg, model.config.num_hidden_layers)
    if lc is None:
        return model
    import torch
    from peft import get_peft_model

    torch.manual_seed(getattr(cfg, "seed", 0))
    return get_peft_model(model, lc)


def save_model(model: Any, tokenizer: Any, out: str | Path) -> Path:
    """A plain Hugging Face folder `taosr1 label --model` loads: LoRA adapters merged in."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):  # a peft model
        model = model.merge_and_unload()
    model = model.to(torch.float32) if not torch.cuda.is_available() else model
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def world() -> tuple[int, int]:
    """(rank, world size) of this process in a launched run (`accelerate launch`, torchrun), else (0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def finish_stage(model: Any, tokenizer: Any, cfg: Any, stage: str, summary: dict[str, Any], values_hash: str) -> None:
    """A stage's end, on the main process only (the others return): the model folder, the marker
    last, and the checkpoints gone. The summary records how many processes trained."""
    from taosr1.training.label_loop import clear_checkpoints

    rank, size = world()
    summary.setdefault("world_size", size)
    if rank:
        return
    save_model(model, tokenizer, cfg.output_dir)
    write_stage(cfg.output_dir, stage, summary, values_hash)
    clear_checkpoints(cfg.output_dir)


def start_stage(cfg: Any, values_hash: str) -> None:
    """Before a stage trains: checkpoints in its folder made with other settings go (taosr1 pipeline
    and `taosr1 train --processes N` do it once before the processes start; a lone process here)."""
    from taosr1.training.label_loop import prepare_checkpoints

    if world()[1] > 1:
        die_with_launcher()
    elif cfg.output_dir:
        prepare_checkpoints(cfg.output_dir, values_hash)


def die_with_launcher() -> None:
    """A launched process ends when its launcher does (Linux PR_SET_PDEATHSIG). torchrun starts each
    process in its own session, so a launcher killed by SIGKILL (OOM killer, a scheduler's kill)
    would leave them training on, writing the checkpoints a rerun resumes from."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the launcher died before the call: nothing would signal us
        os._exit(1)


def last_checkpoint(cfg: Any, values_hash: str) -> str | None:
    """The newest checkpoint a TRL trainer left in the stage's folder, when it was made with these
    settings (a killed run resumes from it), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    from taosr1.training.label_loop import checkpoints_key

    out = cfg.output_dir
    if not out or not Path(out).is_dir() or checkpoints_key(out) != values_hash:
        return None
    return get_last_checkpoint(out)


def train_metrics(trainer: Any) -> dict[str, Any]:
    """Steps, the last logged loss and the train summary from a finished TRL trainer."""
    hist = trainer.state.log_history
    losses = [h["loss"] for h in hist if "loss" in h]
    summary = next((h for h in reversed(hist) if "train_runtime" in h), {})
    a = trainer.args
    out = {"steps": trainer.state.global_step,
           "batch_size": a.per_device_train_batch_size * a.gradient_accumulation_steps * max(a.world_size, 1),
           "first_loss": round(losses[0], 4) if losses else None,
           "last_loss": round(losses[-1], 4) if losses else None,
           "train_seconds": round(summary.get("train_runtime", 0.0), 1)}
    for k in ("rewards/label_reward/mean", "rewards/format_reward/mean", "frac_reward_zero_std",
              "rewards/chosen", "rewards/margins", "rewards/accuracies"):
        vals = [h[k] for h in hist if k in h]
        if vals:
            out[f"first_{k}"] = round(vals[0], 4)
            out[f"last_{k}"] = round(vals[-1], 4)
    return out


# --- the fields every training stage adds to its TRL config -------------------------------


@dataclasses.dataclass
class TrainStage:
    """Mixed into SFTConfig / DPOConfig / GRPOConfig: the project's fields, and TRL defaults changed.

    Parameters:
        model: the model folder training starts from ("" or "base" = the untrained embedded base;
            the embedded default is a trained model: name its folder to train it further).
        data: the output folder of `taosr1 cot` (pairs, gold labels, reference responses).
        label_config: the LabelConfig YAML serving uses ("" = conf/label.yaml): its scheme and
            prompt section render the training prompts, so `taosr1 label` sees the same text.
        labels: label scheme ("" = the label config's).
        format: `post_cot` (label first; the default) or `think_first` (the ablation).
        max_examples: train on the first N examples (0 = all).
        lora_r: LoRA rank; 0 = full fine-tuning. The saved model has the adapters merged in.
        lora_alpha, lora_dropout, lora_target_modules: LoRA options (`all-linear` or comma-separated names).
        lora_layers: adapters on the last N transformer blocks only (0 = every block).

    Changed TRL defaults: no gradient checkpointing (small models; set it for big ones), report_to
    none, a checkpoint every 50 steps (`save_steps`; the newest kept; `save_strategy: "no"` for none),
    from which a rerun of a killed stage resumes, in the TRL trainers and the label-position loops
    alike (taosr1/training/label_loop.py), log every step; on a machine without CUDA, use_cpu, with
    bf16 autocast where the CPU has native bf16 (AMX / AVX512-bf16: the CoT phase runs 1.6x
    faster) and fp32 elsewhere (TRL's bf16 default fails there).
    """

    model: str = ""
    data: str = ""
    label_config: str = ""
    labels: str = ""
    format: str = "post_cot"
    max_examples: int = 0
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"
    lora_layers: int = 0
    # TrainingArguments fields with defaults changed for this project
    gradient_checkpointing: bool = False
    report_to: Any = "none"
    save_strategy: Any = "steps"
    save_steps: float = 50
    save_total_limit: int | None = 1
    logging_steps: float = 1
    bf16: bool | None = None

    def __post_init__(self) -> None:
        import torch

        coerce_floats(self)
        if self.save_strategy is False:  # YAML 1.1 reads a bare `no` as false
            self.save_strategy = "no"
        check_format(self.format)
        if self.max_examples < 0:
            raise ConfigError(f"max_examples must be >= 0, got {self.max_examples}")
        if self.lora_r < 0:
            raise ConfigError(f"lora_r must be >= 0 (0 = full fine-tuning), got {self.lora_r}")
        if self.lora_layers < 0:
            raise ConfigError(f"lora_layers must be >= 0 (0 = every block), got {self.lora_layers}")
        if not torch.cuda.is_available():
            self.use_cpu = True  # type: ignore[attr-defined]
            if self.bf16 is None:
                self.bf16 = bf16_autocast()
        super().__post_init__()  # type: ignore[misc]
