"""The nightly job on a real Spark standalone cluster: a master and two workers on loopback.

Executors are processes of their own, launched by the workers in their own work folders,
with none of the test's Python settings: the job must reach them through Spark settings
(spark.pyspark.python, spark.executorEnv.PYTHONPATH) and absolute paths. Its tables must
equal a local-mode run's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from spark_cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
KEYS = ["query_id", "product_id"]
D1 = "2025-06-01"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c.start(workers=2, cores=1)
    finally:
        c.stop()  # even when the test (or the start) fails
    assert not c.alive()


def spark_submit(master: str, cwd: Path, *args: str, conf: dict[str, str] | None = None) -> dict:
    """Run jobs/label_relevance.py with spark-submit from `cwd`; the run record."""
    exe = Path(sys.executable).parent / "spark-submit"
    settings = {"spark.pyspark.python": sys.executable, "spark.executorEnv.PYTHONPATH": str(REPO),
                "spark.ui.enabled": "false", **(conf or {})}
    cmd = [str(exe if exe.exists() else "spark-submit"), "--master", master]
    for k, v in settings.items():
        cmd += ["--conf", f"{k}={v}"]
    cmd += [str(REPO / "jobs" / "label_relevance.py"), *args]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env["PYTHONPATH"] = str(REPO)  # the driver's own imports
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    out = res.stdout + res.stderr
    return {"record": json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{"))), "log": out}


def frame(path: Path) -> pd.DataFrame:
    from deltalake import DeltaTable

    df = DeltaTable(str(path)).to_pandas().drop(columns=["run_id", "graded_run_id"], errors="ignore")  # run ids differ by run
    return df.sort_values(KEYS).reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(cluster, spark, tiny_model, sample_df, tmp_path_factory):
    """The same job twice: in local mode (the tests' own session, where a second spark-submit
    would only add a JVM and its Python workers' imports), then with spark-submit on the
    cluster, relative paths throughout."""
    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir
    from taosr1.nightly.job import NightlyConfig, run

    home = tmp_path_factory.mktemp("job")
    shutil.copytree(tiny_model, home / "model")
    rows = pd.concat([sample_df.head(60), sample_df.head(2)])  # two repeated keys: quarantined
    rows.to_csv(home / "pairs.csv", index=False)
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml", {"label.engine.model": str(home / "model"),
                                                                   "partitions": 4})
    local = {"record": run(spark, cfg, input=str(home / "pairs.csv"), output=str(home / "local/grades"),
                           run_date=D1, log=lambda msg: None)}
    args = ["--input", "pairs.csv", "--run-date", D1, "--model", "model", "--partitions", "4"]
    on_cluster = spark_submit(cluster.url, home, *args, "--output", "cluster/grades",
                              conf={"spark.locality.wait": "0", "spark.cores.max": "2", "spark.executor.memory": "1g",
                                    "spark.scheduler.minRegisteredResourcesRatio": "1.0",
                                    "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
                                    "spark.log.level": "INFO"})  # a submitted level wins over the profile's
    return home, local, on_cluster


def test_cluster_run_ran_on_both_workers_one_engine_each(cluster, runs):
    home, _, on_cluster = runs
    record = on_cluster["record"]
    assert record["spark_app_id"].startswith("app-")  # the standalone master's application
    assert record["rows_in"] == 62 == record["graded"] + record["quarantined"] and record["quarantined"] == 2
    # two executors, each graded with the one engine its Python worker loaded
    assert record["workers"] == 2 and record["engine_loads"] == 2
    assert on_cluster["log"].count("1 engine load(s)") == 2
    assert "INFO DAGScheduler: Job 0 finished" in on_cluster["log"]  # submitted INFO held after the start
    # each worker launched an executor in its own work folder (app-*/<executor id>/), not the driver's
    for work in cluster.work_dirs:
        executors = [d for d in work.glob(f"{record['spark_app_id']}/*") if d.is_dir()]
        assert len(executors) == 1, sorted(work.rglob("*"))
        assert (executors[0] / "stderr").is_file()
    assert not (home / "cluster" / "grades" / "_staging").exists()


def test_cluster_tables_equal_the_local_mode_run(runs):
    home, local, on_cluster = runs
    assert local["record"]["spark_app_id"].startswith("local-")
    for suffix in ("", "_quarantine"):
        a, b = frame(home / f"local/grades{suffix}"), frame(home / f"cluster/grades{suffix}")
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5)  # same batches: same floats
    from deltalake import DeltaTable

    for name in ("local", "cluster"):
        runs_table = DeltaTable(str(home / f"{name}/grades_runs")).to_pandas()
        assert len(runs_table) == 1 and runs_table.iloc[0]["rows_in"] == 62
