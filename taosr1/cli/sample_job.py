"""`spark-submit jobs/sample_responses.py`: pass@N sampling on Spark, a thin click command over
taosr1/training/sample_job.py."""

from __future__ import annotations

import json

import click

from taosr1.cli.tools import fail, writable
from taosr1.core.config import ConfigError
from taosr1.training.sample_job import check_inputs, run_job


@click.command("sample-job")
@click.option("--config", type=click.Path(dir_okay=False), help="SampleConfig YAML (default conf/train/sample.yaml).")
@click.option("--output", help="Output folder (the config's output_dir).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. n=8 or engine.engine=vllm.")
@click.option("--master", default="",
              help="Spark master (local[4], yarn, ...); wins over spark-submit's and the profile's.")
@click.option("--spark-profile", default="local", show_default=True,
              help="conf/spark profile: local, gpu, or a YAML path.")
@click.option("--partitions", type=int, default=0, help="Sampling partitions (0: the cluster's parallelism).")
def sample_job(config, output, overrides, master, spark_profile, partitions):
    """pass@N sampling on Spark: N responses per CoT prompt, each parsed; per-prompt pass rates.

    Writes samples.parquet, difficulty.parquet, quarantine.parquet and taosr1_stage.json into
    OUTPUT, as `taosr1 sample` does; the summary is printed as JSON.
    """
    from taosr1.core.config import merge, parse_overrides, read_yaml
    from taosr1.core.resources import conf_dir
    from taosr1.spark.session import SparkProfile, load_profile
    from taosr1.training.pipeline import stage_config, values_hash

    try:
        path = config or str(conf_dir() / "train" / "sample.yaml")
        extra = parse_overrides(overrides)
        if output:
            extra["output_dir"] = output
        values = merge(read_yaml(path), extra)  # as `taosr1 sample`: the same values give the same marker hash
        cfg = stage_config("sample", values, source=path)
        if partitions < 0:
            raise ConfigError(f"--partitions must be >= 0 (0: the cluster's parallelism), got {partitions}")
        inputs = check_inputs(cfg)  # before any Spark work
        profile = load_profile(spark_profile)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    writable(cfg.output_dir, "sample output folder", folder=True)  # before Spark starts (check_inputs: it is set)
    if profile.app_name == SparkProfile.app_name:
        profile.app_name = "taosr1-sample"

    from pyspark.sql import SparkSession

    from taosr1.spark.session import get_session

    ours = SparkSession.getActiveSession() is None
    spark = get_session(profile, master=master)
    try:
        summary = run_job(spark, cfg, partitions=partitions, values_hash=values_hash(values), inputs=inputs)
    except (ConfigError, FileNotFoundError) as e:
        fail(str(e))
    finally:
        if ours:
            spark.stop()
    click.echo(json.dumps(summary, default=str))
