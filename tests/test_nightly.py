"""The nightly Spark job end to end: Spark local mode, real Delta tables, the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taosr1.core import config as cfgmod
from taosr1.core.labels import load_scheme
from taosr1.core.resources import conf_dir, sample_path
from taosr1.nightly.job import NightlyConfig, run
from taosr1.storage.contracts import ContractError, output_contract

REPO = Path(__file__).resolve().parent.parent
KEYS = ["query_id", "product_id"]
D1, D2 = "2025-06-01", "2025-06-02"


def job_config(tiny_model: str, **overrides) -> NightlyConfig:
    return cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                       {"label.engine.model": tiny_model, "partitions": 2, **overrides})


def delta_frame(path, run_date: str | None = None) -> pd.DataFrame:
    from deltalake import DeltaTable

    df = DeltaTable(str(path)).to_pandas()
    if run_date is not None:
        df = df[df["run_date"].astype(str) == run_date]
    return df.sort_values(KEYS).reset_index(drop=True)


@pytest.fixture(scope="module")
def sample_run(spark, tiny_model, tmp_path_factory):
    """The README's run: the bundled CSV sample, graded once into a fresh table."""
    out = tmp_path_factory.mktemp("sample") / "grades"
    record = run(spark, job_config(tiny_model), input=str(sample_path()), output=str(out), run_date=D1)
    return record, out


def test_sample_run_counts_and_keys(sample_run, sample_df):
    record, out = sample_run
    graded = delta_frame(out)
    quarantine = delta_frame(Path(f"{out}_quarantine"))
    assert record["rows_in"] == len(sample_df) == record["graded"] + record["quarantined"]
    assert len(graded) == record["graded"] and len(quarantine) == record["quarantined"]
    both = pd.concat([graded[KEYS], quarantine[KEYS]])
    assert not both.duplicated().any()
    assert set(map(tuple, both.to_numpy())) == set(map(tuple, sample_df[KEYS].to_numpy()))
    # one engine per Python worker, however many tasks and batches ran
    # at most one load per worker; a worker kept from an earlier test of this session may hold it already
    assert 1 <= record["workers"] <= 2 and record["engine_loads"] <= record["workers"]
    assert record["partitions"] == 2 and record["writer"] == "delta-rs" and record["gpus"] == ""
    # a share of computed positions, as `taosr1 label` reports it: never above 1, even with the
    # shared prefix run once for many rows
    assert 0 < record["padding_efficiency"] <= 1


def test_sample_run_matches_contract_and_scheme(sample_run, sample_df):
    record, out = sample_run
    from deltalake import DeltaTable

    table = DeltaTable(str(out))
    proto = table.protocol()
    assert (proto.min_reader_version, proto.min_writer_version) == (1, 2)
    assert table.metadata().partition_columns == ["run_date"]
    scheme = load_scheme("taosr1")
    fields = {f["name"]: f["type"] for f in json.loads(table.schema().to_json())["fields"]}
    contract = output_contract("grades").added_columns(scheme.names)
    names = list(fields)
    assert names == [*sample_df.columns, *(c.name for c in contract)]
    assert all(fields[c.name] == c.type for c in contract)
    df = delta_frame(out)
    assert df[[c.name for c in contract if not c.nullable]].notna().all().all()
    probs = df[scheme.prob_columns].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert set(df["grade"]) <= set(scheme.grades)
    assert (df["run_id"] == record["run_id"]).all()


def test_sample_run_readable_by_polars_duckdb_and_spark(sample_run, spark):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    record, out = sample_run
    expected = delta_frame(out)
    pl_df = pl.read_delta(str(out)).to_pandas().sort_values(KEYS).reset_index(drop=True)
    assert len(pl_df) == len(expected) and (pl_df["grade"] == expected["grade"]).all()
    table = DeltaTable(str(out))
    dataset = table.to_pyarrow_dataset()  # noqa: F841 (read by DuckDB below)
    con = duckdb.connect()
    n, dates = con.execute("select count(*), list(distinct run_date::varchar) from dataset").fetchone()
    assert n == len(expected) and dates == [D1]
    # Spark without the delta-spark jars: the current version's files, partition from the folder names
    sdf = spark.read.option("basePath", str(out)).parquet(*table.file_uris())
    assert sdf.count() == len(expected)
    got = sdf.select("query_id", "product_id", "grade", "run_date").toPandas()
    assert set(got["run_date"].astype(str)) == {D1}
    merged = got.merge(expected[[*KEYS, "grade"]], on=KEYS, suffixes=("", "_delta"))
    assert len(merged) == len(expected) and (merged["grade"] == merged["grade_delta"]).all()


def test_sample_run_record_appended_to_runs_table(sample_run):
    record, out = sample_run
    from deltalake import DeltaTable

    rows = DeltaTable(f"{out}_runs").to_pandas()
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["run_id"] == record["run_id"] and str(row["run_date"]) == D1
    assert row["rows_in"] == row["graded"] + row["quarantined"] == record["rows_in"]
    assert row["config_hash"] == record["config_hash"] and row["spark_app_id"].startswith("local-")
    assert row["status"] == "succeeded" and row["alerts"] == "" and pd.isna(row["grade_psi"])  # no night before
    assert row["quarantine_share"] == pytest.approx(row["quarantined"] / row["rows_in"], abs=1e-6)
    contract = [c.name for c in output_contract("runs").columns]
    assert list(rows.columns) == contract


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, sample_df, tiny_model):
    """150 sample rows plus one row for each quarantine reason, as a typed Parquet file."""
    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder, PromptConfig
    from taosr1.core.validate import ColumnConfig, validate_rows
    from taosr1.labeling.models import load_tokenizer

    base = sample_df.head(60)[["query_id", "query", "product_id", "product_title"]].copy()
    base["product_description"] = None
    long_text = " ".join(["waterproof hiking boot with vibram sole and gore tex lining"] * 40)
    bad = pd.DataFrame([
        {"query_id": "q900", "query": "running shoes", "product_id": "p900", "product_title": None},
        {"query_id": "q901", "query": "   ", "product_id": "p901", "product_title": "Trail shoe"},
        {"query_id": "q902", "query": "desk lamp", "product_id": "p902", "product_title": "\x00\x01\x7f"},
        {"query_id": base.iloc[0]["query_id"], "query": "again", "product_id": base.iloc[0]["product_id"],
         "product_title": "a repeat of the first key"},
        {"query_id": None, "query": "kettle", "product_id": "p903", "product_title": "Electric kettle"},
        {"query_id": "q904", "query": long_text, "product_id": "p904", "product_title": long_text,
         "product_description": long_text},
        {"query_id": "q905", "query": "茶杯 ☕", "product_id": "p905", "product_title": "Porcelain tea cup 茶杯 🍵"},
    ])
    df = pd.concat([base, bad], ignore_index=True)
    builder = PromptBuilder(load_tokenizer(tiny_model), load_scheme("taosr1"), PromptConfig())
    ok = df.drop(index=[60, 61, 62, 63, 64])
    fields, _ = validate_rows(ok, ColumnConfig())
    lengths = [len(x) for x in builder.build(fields.to_dict("records")).ids]
    limit = sorted(lengths)[-2]  # every row fits but the long one
    assert lengths[-2] > limit
    path = tmp_path_factory.mktemp("crafted") / "pairs.parquet"
    df.to_parquet(path, index=False)
    return df, path, limit


@pytest.fixture(scope="module")
def crafted_run(spark, tiny_model, crafted, tmp_path_factory):
    df, path, limit = crafted
    cfg = job_config(tiny_model, **{"label.prompt.max_prompt_tokens": limit, "label.beta": 0.5})
    out = tmp_path_factory.mktemp("crafted_run") / "grades"
    record = run(spark, cfg, input=str(path), output=str(out), run_date=D1)
    return cfg, out, record


def test_bad_rows_quarantined_like_the_cli(tiny_engine, crafted, crafted_run):
    from taosr1.core.prompts import PromptConfig
    from taosr1.labeling.labeler import Labeler, label_frame

    df, path, limit = crafted
    cfg, out, record = crafted_run
    assert record["rows_in"] == len(df) == record["graded"] + record["quarantined"] and record["quarantined"] == 6
    q = delta_frame(Path(f"{out}_quarantine"))
    codes = dict(zip(q["product_id"], q["reason"].str.split(":").str[0]))
    assert codes == {"p900": "missing_title", "p901": "empty_query", "p902": "empty_title",
                     df.iloc[0]["product_id"]: "duplicate_key", "p903": "missing_key", "p904": "prompt_too_long"}
    assert (q.loc[q["product_id"] == df.iloc[0]["product_id"], "product_title"] == "a repeat of the first key").all()
    assert q["reason"].str.contains(": ").all() and (q["run_id"] == record["run_id"]).all()

    # the CLI's path on the same rows: same split, same probabilities (one scoring path)
    labeler = Labeler(tiny_engine, load_scheme("taosr1"), PromptConfig(max_prompt_tokens=limit), beta=0.5)
    cli = label_frame(df, labeler, cfg.label.columns)
    cli_codes = dict(zip(cli.quarantine["product_id"], cli.quarantine["reason"].str.split(":").str[0]))
    assert cli_codes == codes
    graded = delta_frame(out)
    expected = cli.graded.sort_values(KEYS).reset_index(drop=True)
    assert list(graded[KEYS].itertuples(index=False)) == list(expected[KEYS].itertuples(index=False))
    cols = labeler.scheme.prob_columns
    assert np.allclose(graded[cols].to_numpy(), expected[cols].to_numpy(), atol=1e-5)
    assert (graded["grade"].to_numpy() == expected["grade"].to_numpy()).mean() > 0.95
    assert (graded["prompt_tokens"].to_numpy() == expected["prompt_tokens"].to_numpy()).all()
    assert graded.loc[graded["product_id"] == "p905", "product_title"].item() == "Porcelain tea cup 茶杯 🍵"


def test_rerun_replaces_its_date_in_one_commit_and_other_dates_stay(spark, crafted, crafted_run):
    from deltalake import DeltaTable

    df, path, limit = crafted
    cfg, out, first = crafted_run
    before = delta_frame(out, D1)
    v0 = DeltaTable(str(out)).version()

    second = run(spark, cfg, input=str(path), output=str(out), run_date=D1)
    table = DeltaTable(str(out))
    assert table.version() == v0 + 1 == second["grades_version"]  # one commit per run
    assert table.history(1)[0]["taosr1.run_id"] == second["run_id"]
    after = delta_frame(out, D1)
    assert len(after) == len(before) == first["graded"]  # replaced, not appended
    same = [c for c in before.columns if c not in ("run_id", "graded_run_id")]
    pd.testing.assert_frame_equal(after[same], before[same])
    assert (after["run_id"] == second["run_id"]).all() and (after["graded_run_id"] == second["run_id"]).all()
    assert all(f.split("/")[-1].startswith(second["run_id"]) for f in table.file_uris())  # first run's files removed

    third = run(spark, cfg, input=str(path), output=str(out), run_date=D2)
    assert DeltaTable(str(out)).version() == v0 + 2
    pd.testing.assert_frame_equal(delta_frame(out, D1), after)  # the other date is untouched
    assert len(delta_frame(out, D2)) == third["graded"]
    q = delta_frame(Path(f"{out}_quarantine"))
    assert q.groupby(q["run_date"].astype(str)).size().to_dict() == {D1: 6, D2: 6}
    assert len(DeltaTable(f"{out}_runs").to_pandas()) == 3
    assert not (out / "_staging").exists()


def test_schema_mismatch_fails_before_work_and_writes_nothing(spark, tiny_model, sample_run, tmp_path):
    from deltalake import DeltaTable

    _, out = sample_run
    bad = pd.DataFrame({"query_id": ["1"], "product_id": ["p"], "product_title": [7], "grade": [1]})
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)
    version = DeltaTable(str(out)).version()
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ContractError) as err:
        run(spark, job_config(tiny_model), input=str(path), output=str(out), run_date=D2)
    msg = str(err.value)
    assert "column 'query' (query): expected string, found no such column" in msg
    assert "column 'product_title' (title): expected string, found long" in msg
    assert "column 'grade': the job writes a column of that name" in msg
    assert DeltaTable(str(out)).version() == version
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == files
    fresh = tmp_path / "fresh"
    with pytest.raises(ContractError):
        run(spark, job_config(tiny_model), input=str(path), output=str(fresh), run_date=D2)
    assert not fresh.exists() and not Path(f"{fresh}_quarantine").exists() and not Path(f"{fresh}_runs").exists()


def test_run_with_other_columns_than_the_table_fails_before_work(spark, tiny_model, sample_run):
    from deltalake import DeltaTable

    from taosr1.storage.delta import TableSchemaError

    _, out = sample_run
    version = DeltaTable(str(out)).version()
    with pytest.raises(TableSchemaError) as err:  # the esci scheme writes p_E.. where the table has p_Excellent..
        run(spark, job_config(tiny_model, **{"label.labels": "esci"}), input=str(sample_path()), output=str(out),
            run_date=D2)
    assert "column 'p_E' is new" in str(err.value) and "column 'p_Excellent' is missing" in str(err.value)
    assert DeltaTable(str(out)).version() == version and not (out / "_staging").exists()


def test_nightly_cli_prints_the_run_record(spark, tiny_model, sample_df, tmp_path):
    from click.testing import CliRunner

    from taosr1.cli.main import main

    src = tmp_path / "pairs.csv"
    sample_df.head(10).to_csv(src, index=False)
    out = tmp_path / "grades"
    args = ["nightly", "--input", str(src), "--output", str(out), "--run-date", D1, "--model", tiny_model,
            "--set", "partitions=1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout.strip().splitlines()[-1])
    assert record["rows_in"] == 10 == record["graded"] + record["quarantined"] and record["partitions"] == 1
    res = CliRunner().invoke(main, [*args[:5], "--run-date", "June 1st", "--model", tiny_model])
    assert res.exit_code == 2 and "not a date in the form YYYY-MM-DD" in res.output
    res = CliRunner().invoke(main, [*args[:6], D2, "--model", tiny_model, "--set", "label.columns.title=name"])
    assert res.exit_code == 2 and "column 'name' (title): expected string, found no such column" in res.output


def test_spark_submit_job_on_a_gpu_cluster_profile(tiny_model, sample_df, tmp_path):
    """spark-submit runs the job file; local-cluster mode with two (fake) GPUs: each worker
    pins the GPU its task was given, and settings passed to spark-submit win over the profile."""
    spark_submit = Path(sys.executable).parent / "spark-submit"
    if not spark_submit.exists():
        spark_submit = "spark-submit"
    discover = tmp_path / "gpus.sh"
    discover.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    discover.chmod(0o755)
    src = tmp_path / "pairs.csv"
    sample_df.head(20).to_csv(src, index=False)
    out = tmp_path / "grades"
    gpu = ["--conf", "spark.worker.resource.gpu.amount=2", "--conf", f"spark.worker.resource.gpu.discoveryScript={discover}",
           "--conf", "spark.executor.resource.gpu.amount=2", "--conf", "spark.task.resource.gpu.amount=1",
           "--conf", f"spark.executor.resource.gpu.discoveryScript={discover}"]
    cmd = [str(spark_submit), "--master", "local-cluster[1,2,1024]", *gpu, str(REPO / "jobs" / "label_relevance.py"),
           "--input", str(src), "--output", str(out), "--run-date", D1, "--model", tiny_model, "--partitions", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_WORKER_DIR": str(tmp_path / "work")}  # local-cluster's executor folders, else under SPARK_HOME
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    # spark-submit merges the driver's stderr into stdout: the record is the line that starts with {
    record = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert record["rows_in"] == 20 == record["graded"] + record["quarantined"]
    assert record["spark_app_id"].startswith("app-")  # spark-submit's --master won over the local profile
    assert record["gpus"] and set(record["gpus"].split(",")) <= {"0", "1"}
    assert record["engine_loads"] == record["workers"] >= 1
    # the profile's log level (local: ERROR) holds from the context's start: no INFO start-up lines
    assert "INFO SparkContext: Submitted application" not in res.stdout + res.stderr
