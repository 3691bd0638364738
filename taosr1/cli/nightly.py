"""`taosr1 nightly`: the nightly Spark job (also `spark-submit jobs/label_relevance.py`)."""

from __future__ import annotations

import sys

import click

from taosr1.cli.tools import fail
from taosr1.core.config import ConfigError, parse_overrides


@click.command("nightly")
@click.option("--input", "input_path", required=True, help="Input: Delta folder, Parquet, CSV, JSON lines, or a catalog table name.")
@click.option("--output", required=True, help="Grades Delta table (created on the first run).")
@click.option("--run-date", required=True, metavar="YYYY-MM-DD", help="The date partition this run replaces.")
@click.option("--quarantine", help="Quarantine Delta table (default: OUTPUT_quarantine).")
@click.option("--runs", help="Runs Delta table, one row per run (default: OUTPUT_runs).")
@click.option("--config", type=click.Path(dir_okay=False), help="Job config (default conf/nightly.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. label.engine.dtype=bfloat16.")
@click.option("--model", help="Model folder every executor can read (default: the embedded SmolLM2-135M-Instruct).")
@click.option("--engine", type=click.Choice(["transformers", "vllm"]), help="Scoring engine.")
@click.option("--labels", help="Label scheme: taosr1, esci, or a YAML path.")
@click.option("--beta", type=float, help="CumPT beta in (0, 1] (default: calibrated, else 0.5).")
@click.option("--spark-profile", help="conf/spark profile: local, gpu, or a YAML path.")
@click.option("--partitions", type=int, help="Grading partitions (0: the cluster's parallelism).")
@click.option("--input-format", type=click.Choice(["auto", "csv", "parquet", "json", "delta", "table"]))
@click.option("--max-quarantine-share", type=float, metavar="SHARE", help="Alert (exit 3 after the commit) when more "
              "than this share of the rows is quarantined (config: alert.max_quarantine_share).")
@click.option("--max-psi", type=float, help="Alert (exit 3 after the commit) when the label PSI against the previous "
              "night's committed run is above this, e.g. 0.25 (config: alert.max_psi).")
@click.option("--reuse", type=click.Choice(["off", "previous"]), help="previous: carry the grades of pairs an earlier "
              "committed run graded with the same fingerprint (model files, prompt tokens, scheme, beta, dtype).")
@click.option("--fingerprints", metavar="PATH", help="Fingerprint Delta table for --reuse (default OUTPUT/_fingerprints).")
@click.option("--resume", "resume_id", metavar="RUN_ID", help="Resume a run that died before its commit: its staged "
              "partitions are reused, the rest graded (same input, date and config).")
def nightly(input_path, output, run_date, quarantine, runs, config, overrides, model, engine, labels, beta,
            spark_profile, partitions, input_format, max_quarantine_share, max_psi, reuse, fingerprints, resume_id):
    """Grade a query-product table on Spark into the RUN_DATE partition of Delta tables.

    Every input row ends in OUTPUT or in the quarantine table with a reason; each table's
    partition is replaced in one commit, and the run record (printed as JSON) is appended
    to the runs table. Over an alert threshold the run stays committed, its runs row says
    `alerted`, and the job exits 3 with one line saying why.
    """
    from taosr1.nightly.alerts import ALERT_EXIT, alert_line
    from taosr1.nightly.job import record_json, run

    values = {"label.engine.model": model, "label.engine.engine": engine, "label.labels": labels,
              "label.beta": beta, "spark_profile": spark_profile, "partitions": partitions,
              "input_format": input_format, "alert.max_quarantine_share": max_quarantine_share,
              "alert.max_psi": max_psi, "reuse": reuse, "fingerprints": fingerprints}
    cfg, where = _checked(config, values, overrides, input=input_path, output=output, run_date=run_date,
                          quarantine=quarantine, runs=runs)
    record = _run_on_spark(run, cfg, input=where["input"], output=where["output"], run_date=run_date,
                           quarantine=where["quarantine"], runs=where["runs"], run_id=resume_id, resume=bool(resume_id))
    click.echo(record_json(record))
    click.echo(f"graded {record['graded']} + quarantined {record['quarantined']} = {record['rows_in']} rows in "
               f"{record['seconds']:.1f} s ({record['items_per_s']:.1f} items/s); {output} version "
               f"{record['grades_version']}", err=True)
    line = alert_line(record)
    if line:
        click.echo(line, err=True)
        sys.exit(ALERT_EXIT)


def _checked(config, values, overrides, *, input, output, run_date, quarantine, runs):
    """The job config and its locations (nightly.night.locations: resolved, the tables proven writable),
    before Spark starts; a problem is one `error:` line and exit 2."""
    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir
    from taosr1.nightly.job import NightlyConfig, parse_run_date
    from taosr1.nightly.night import locations

    try:
        values.update(parse_overrides(overrides))
        cfg = cfgmod.load(NightlyConfig, config or conf_dir() / "nightly.yaml", values)
        parse_run_date(run_date)
        return cfg, locations(cfg, input=input, output=output, quarantine=quarantine, runs=runs)
    except (ConfigError, FileNotFoundError, ValueError) as e:  # StorageError is a ValueError
        fail(str(e))


def _run_on_spark(run, cfg, **kwargs):
    """`run(spark, cfg, **kwargs)` on the active session or one of the profile's (stopped after)."""
    from pyspark.sql import SparkSession

    from taosr1.spark.session import get_session
    from taosr1.storage.contracts import ContractError
    from taosr1.storage.delta import TableSchemaError

    ours = SparkSession.getActiveSession() is None
    try:  # writer: spark gets a delta-spark session (profile delta_jars: pip or cluster)
        spark = get_session(cfg.spark_profile, delta=cfg.writer == "spark")
    except ConfigError as e:
        fail(str(e))
    try:
        return run(spark, cfg, **kwargs)
    except (ContractError, TableSchemaError, ConfigError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    finally:
        if ours:
            spark.stop()
