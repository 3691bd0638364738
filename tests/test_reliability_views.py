"""One consistent view per run: a run killed between its commits is invisible to readers.

The driver is killed (fault injection, a real process exiting 137) after the quarantine
commit and before the grades commit, then after both commits and before the runs row. The
tables' newest versions then mix runs; `taosr1.read_run` / `read_grades` and `taosr1 runs`
never do. Spark local mode, real Delta tables, the tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

import taosr1
from taosr1.cli.main import main
from taosr1.core import config as cfgmod
from taosr1.core.resources import conf_dir
from taosr1.nightly.job import NightlyConfig, run

REPO = Path(__file__).resolve().parent.parent
KEYS = ["query_id", "product_id"]
D1 = "2025-09-01"


def job_config(tiny_model: str, **overrides) -> NightlyConfig:
    return cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                       {"label.engine.model": tiny_model, "partitions": 2, "label.beta": 0.5, **overrides})


def with_bad_titles(df: pd.DataFrame, n_bad: int) -> pd.DataFrame:
    df = df.copy()
    df.iloc[:n_bad, df.columns.get_loc("product_title")] = ""  # quarantined: empty_title
    return df


def raw_run_ids(path) -> set[str]:
    from deltalake import DeltaTable

    return set(DeltaTable(str(path)).to_pandas(columns=["run_id"])["run_id"])


def killed_run(tiny_model: str, src: str, out: Path, fault: str, cwd: Path) -> None:
    cmd = [sys.executable, "-c", "from taosr1.cli.main import main; main()", "nightly", "--input", src, "--output", str(out),
           "--run-date", D1, "--model", tiny_model, "--beta", "0.5", "--partitions", "2", "--set", f"fault.{fault}=true"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYSPARK_PYTHON": sys.executable}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert res.returncode == 137, res.stderr[-2000:]
    assert "fault injection: the driver dies" in res.stderr


def assert_one_run(view: dict, record: dict) -> None:
    """The view is exactly `record`'s run: its row, its grades, its quarantine, nothing else."""
    assert view["run"]["run_id"] == record["run_id"]
    assert set(view["grades"]["run_id"]) == {record["run_id"]} and len(view["grades"]) == record["graded"]
    assert set(view["quarantine"]["run_id"]) == {record["run_id"]}
    assert len(view["quarantine"]) == record["quarantined"]


def runs_json(out: Path) -> list[dict]:
    res = CliRunner().invoke(main, ["runs", "--output", str(out), "--json"])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.output.splitlines()]


def test_run_killed_between_commits_never_mixes_runs_for_readers(spark, tiny_model, sample_df, tmp_path):
    out, quarantine = tmp_path / "grades", tmp_path / "grades_quarantine"
    old_df, new_df = with_bad_titles(sample_df.head(20), 1), with_bad_titles(sample_df.iloc[20:50], 4)
    old_src, new_src = str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet")
    old_df.to_parquet(old_src, index=False)
    new_df.to_parquet(new_src, index=False)
    old = run(spark, job_config(tiny_model), input=old_src, output=str(out), run_date=D1)
    assert old["quarantined"] == 1 and old["status"] == "succeeded"
    old_keys = set(map(tuple, taosr1.read_grades(str(out), D1)[KEYS].to_numpy()))

    # 1. killed after the quarantine commit: the newest quarantine is the new run's, the grades the old run's
    killed_run(tiny_model, new_src, out, "die_between_commits", tmp_path)
    assert len(raw_run_ids(quarantine)) == 1 and raw_run_ids(quarantine) != {old["run_id"]}
    assert raw_run_ids(out) == {old["run_id"]}
    (dead,) = raw_run_ids(quarantine)
    assert_one_run(taosr1.read_run(str(out), D1), old)
    assert set(taosr1.read_quarantine(str(out), D1)["run_id"]) == {old["run_id"]}
    listed = runs_json(out)
    assert [(r["run_id"], r.get("current")) for r in listed if r["status"] != "incomplete"] == [(old["run_id"], True)]
    (inc,) = [r for r in listed if r["status"] == "incomplete"]
    assert inc["run_id"] == dead and inc["quarantine_version"] == old["quarantine_version"] + 1
    assert inc.get("grades_version") is None

    # 2. killed after both commits, before the runs row: both tables hold the new run, still invisible
    killed_run(tiny_model, new_src, out, "die_before_run_record", tmp_path)
    assert raw_run_ids(out) != {old["run_id"]} and raw_run_ids(out) == raw_run_ids(quarantine)
    view = taosr1.read_run(str(out), D1)
    assert_one_run(view, old)
    assert set(map(tuple, taosr1.read_grades(str(out), D1)[KEYS].to_numpy())) == old_keys
    assert {r["status"] for r in runs_json(out)} == {"succeeded", "incomplete"}

    # 3. a rerun that commits becomes the date's one view, whole
    new = run(spark, job_config(tiny_model), input=new_src, output=str(out), run_date=D1)
    assert new["quarantined"] == 4 and new["graded"] == 26
    assert_one_run(taosr1.read_run(str(out), D1), new)
    assert_one_run(taosr1.read_run(str(out), run_id=old["run_id"]), old)  # the old run stays readable by id
    listed = runs_json(out)
    assert [(r["run_id"], r["current"]) for r in listed if r["status"] != "incomplete"] == [
        (new["run_id"], True), (old["run_id"], False)]
