"""Training commands: `taosr1 cot`, `taosr1 sample`, `taosr1 train sft|dpo|grpo`, `taosr1 pipeline`.

Thin: each reads its YAML config (conf/train/<stage>.yaml by default) with `--set key=value`
overrides, and calls the stage's `run_*`. Heavy imports happen inside the commands. Inputs and
outputs may be object-store paths (taosr1/storage/local_copy.py: fetched before, uploaded after).
"""

from __future__ import annotations

import json

import click

from taosr1.cli.tools import fail as _fail


def config_options(f):
    f = click.option("--output", "output", help="Output folder (the config's output_dir).")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config key, e.g. max_steps=10 or engine.dtype=bfloat16.")(f)
    f = click.option("--config", type=click.Path(dir_okay=False), help="YAML config (default conf/train/<stage>.yaml).")(f)
    return f


def _run(stage: str, config: str | None, overrides: tuple[str, ...], output: str | None) -> None:
    from taosr1.core.config import ConfigError, merge, parse_overrides, read_yaml
    from taosr1.core.resources import conf_dir
    from taosr1.storage.local_copy import localized, published
    from taosr1.storage.stores import StorageError
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
    try:
        with localized(cfg) as cfg, published(cfg.output_dir) as out:
            cfg.output_dir = out  # set, not dataclasses.replace: TRL configs' __post_init__ runs once
            summary = run_stage(stage, cfg, values_hash(values))
    except (ConfigError, FileNotFoundError, StorageError) as e:  # missing inputs found once the stage looks
        _fail(str(e))
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
def sft(config, overrides, output):
    """Supervised fine-tuning on the CoT responses (loss on the response only)."""
    _run("sft", config, overrides, output)


@train.command()
@config_options
def dpo(config, overrides, output):
    """DPO on preference pairs from the pass@N samples."""
    _run("dpo", config, overrides, output)


@train.command()
@config_options
def grpo(config, overrides, output):
    """GRPO on the prompts the difficulty filter and class balancing keep."""
    _run("grpo", config, overrides, output)


@click.command()
@click.option("--config", type=click.Path(dir_okay=False), required=True, help="Pipeline YAML, e.g. conf/train/smoke.yaml.")
@click.option("--output", required=True, help="Folder for every stage's output (OUTPUT/<stage>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key, e.g. sft.max_steps=4.")
def pipeline(config, output, overrides):
    """Run the training stages in order (split, cot, sft, sample, dpo, grpo, eval), skipping complete ones."""
    from taosr1.core import config as cfgmod
    from taosr1.core.config import ConfigError, parse_overrides
    from taosr1.storage.local_copy import localized, published
    from taosr1.training.pipeline import PipelineConfig, run_pipeline

    try:
        cfg = cfgmod.load(PipelineConfig, config, parse_overrides(overrides))
        with localized(cfg) as cfg, published(output, resume=True) as out:  # an s3:// output resumes from the store
            summary = run_pipeline(cfg, out, log=lambda m: click.echo(m, err=True), source=config,
                                   output_name=output)
    except (ConfigError, ValueError, FileNotFoundError) as e:  # StorageError is a ValueError
        _fail(str(e))
    click.echo(json.dumps({k: summary[k] for k in ("output", "split", "stages", "eval") if k in summary}, default=str))


def register(main: click.Group) -> None:
    for cmd in (cot, sample, train, pipeline):
        main.add_command(cmd)
