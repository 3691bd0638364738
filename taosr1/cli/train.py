"""Training commands: `taosr1 cot`, `taosr1 sample`, `taosr1 train sft|dpo|grpo`, `taosr1 pipeline`.

Thin: each reads its YAML config (conf/train/<stage>.yaml by default) with `--set key=value`
overrides, and calls the stage's `run_*`. Heavy imports happen inside the commands. Inputs and
outputs may be object-store paths (taosr1/storage/local_copy.py: fetched before, uploaded after).
"""

from __future__ import annotations

import json

import click

from taosr1.cli.tools import fail as _fail
from taosr1.cli.tools import writable


def processes_options(f):
    f = click.option("--accelerate-config", default="", type=click.Path(dir_okay=False),
                     help="accelerate config file for --processes (conf/train/accelerate/: cpu, ddp, fsdp, zero3).")(f)
    f = click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Train on this many processes of this machine (accelerate launch: gloo on CPUs, NCCL on GPUs).")(f)
    return f


def config_options(f):
    f = click.option("--output", "output", help="Output folder (the config's output_dir).")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config key, e.g. max_steps=10 or engine.dtype=bfloat16.")(f)
    f = click.option("--config", type=click.Path(dir_okay=False), help="YAML config (default conf/train/<stage>.yaml).")(f)
    return f


def _run(stage: str, config: str | None, overrides: tuple[str, ...], output: str | None, processes: int = 1,
         accelerate_config: str = "") -> None:
    from taosr1.core.config import ConfigError, merge, parse_overrides, read_yaml
    from taosr1.core.resources import conf_dir
    from taosr1.storage.local_copy import localized, published
    from taosr1.storage.stores import StorageError
    from taosr1.training.launch import StageFailed, launch_stage, launched, stage_hash
    from taosr1.training.pipeline import run_stage, stage_config, values_hash

    try:
        path = config or str(conf_dir() / "train" / f"{stage}.yaml")
        extra = parse_overrides(overrides)
        if output:
            extra["output_dir"] = output
        values = merge(read_yaml(path), extra)
        cfg = stage_config(stage, values, source=path)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    where = writable(cfg.output_dir, f"{stage} output", folder=True) if cfg.output_dir else cfg.output_dir
    try:
        with localized(cfg) as cfg, published(where) as out:
            cfg.output_dir = out  # set, not dataclasses.replace: TRL configs' __post_init__ runs once
            h = stage_hash(values_hash(values))
            if processes > 1 and not launched():
                summary = launch_stage(stage, values, h, out, processes, accelerate_config,
                                       log=lambda m: click.echo(m, err=True))
            else:
                summary = run_stage(stage, cfg, h)
    except (ConfigError, FileNotFoundError, StorageError) as e:  # missing inputs found once the stage looks
        _fail(str(e))
    except StageFailed as e:
        _fail(str(e), code=1)
    click.echo(json.dumps(summary, default=str))


@click.command()
@config_options
def cot(config, overrides, output):
    """Write CoT training data: teacher reasoning (retrieved rules in its prompt) kept when its
    label equals the gold label, a template stating the gold judgement where it never does."""
    _run("cot", config, overrides, output)


@click.command()
@config_options
def sample(config, overrides, output):
    """pass@N sampling: N responses per training prompt, each parsed; per-prompt pass rates."""
    _run("sample", config, overrides, output)


@click.group()
def train():
    """Train a model: sft, dpo, grpo (TRL trainers; the saved folder serves in `taosr1 label --model`)."""


@train.command()
@config_options
@processes_options
def sft(config, overrides, output, processes, accelerate_config):
    """Supervised fine-tuning on the CoT responses (loss on the response only)."""
    _run("sft", config, overrides, output, processes, accelerate_config)


@train.command()
@config_options
@processes_options
def dpo(config, overrides, output, processes, accelerate_config):
    """DPO on preference pairs from the pass@N samples."""
    _run("dpo", config, overrides, output, processes, accelerate_config)


@train.command()
@config_options
@processes_options
def grpo(config, overrides, output, processes, accelerate_config):
    """GRPO on the prompts the difficulty filter and class balancing keep."""
    _run("grpo", config, overrides, output, processes, accelerate_config)


@click.command()
@click.option("--config", type=click.Path(dir_okay=False), required=True, help="Pipeline YAML, e.g. conf/train/smoke.yaml.")
@click.option("--output", required=True, help="Folder for every stage's output (OUTPUT/<stage>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key, e.g. sft.max_steps=4.")
@processes_options
def pipeline(config, output, overrides, processes, accelerate_config):
    """Run the training stages in order (split, cot, sft, sample, dpo, grpo, eval), skipping complete ones."""
    from taosr1.core import config as cfgmod
    from taosr1.core.config import ConfigError, parse_overrides
    from taosr1.storage.local_copy import localized, published
    from taosr1.training.launch import StageFailed
    from taosr1.training.pipeline import PipelineConfig, run_pipeline

    try:
        cfg = cfgmod.load(PipelineConfig, config, parse_overrides(overrides))
    except (ConfigError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    where = writable(output, "pipeline output", folder=True)  # before any stage runs
    try:
        with localized(cfg) as cfg, published(where, resume=True) as out:  # an s3:// output resumes from the store
            summary = run_pipeline(cfg, out, log=lambda m: click.echo(m, err=True), source=config,
                                   output_name=output, processes=processes, accelerate_config=accelerate_config)
    except (ConfigError, ValueError, FileNotFoundError) as e:  # StorageError is a ValueError
        _fail(str(e))
    except StageFailed as e:
        _fail(str(e), code=1)
    click.echo(json.dumps({k: summary[k] for k in ("output", "split", "stages", "eval") if k in summary}, default=str))


def register(main: click.Group) -> None:
    for cmd in (cot, sample, train, pipeline):
        main.add_command(cmd)
