"""writer: spark sessions: the delta-spark settings they get, and the clear error without the jars.

The jars cannot be fetched on this machine (no Maven access), so the session a pip-installed
delta-spark asks for is checked by its settings, and both ways of getting the jars are run
to their failure: the job stops before reading its input, saying what to fix.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pyspark
import pytest

from taosr1.core.config import ConfigError
from taosr1.spark import delta_spark
from taosr1.spark.session import SparkProfile

REPO = Path(__file__).resolve().parent.parent
ARTIFACT = f"io.delta:delta-spark_{'.'.join(pyspark.__version__.split('.')[:2])}_2.13:{version('delta_spark')}"


def test_pip_settings_are_configure_spark_with_delta_pips():
    settings = delta_spark.delta_settings("pip")
    assert settings == {"spark.sql.extensions": delta_spark.EXTENSION,
                        "spark.sql.catalog.spark_catalog": delta_spark.CATALOG,
                        "spark.jars.packages": ARTIFACT}
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    assert configure_spark_with_delta_pip(SparkSession.builder)._options["spark.jars.packages"] == ARTIFACT


def test_settings_keep_the_sessions_own_extensions_and_packages():
    conf = {"spark.sql.extensions": "com.example.Ext", "spark.jars.packages": "org.example:lib:1.0"}
    settings = delta_spark.delta_settings("pip", conf)
    assert settings["spark.sql.extensions"] == f"com.example.Ext,{delta_spark.EXTENSION}"
    assert settings["spark.jars.packages"] == f"{ARTIFACT},org.example:lib:1.0"
    cluster = delta_spark.delta_settings("cluster", conf)
    assert "spark.jars.packages" not in cluster  # the cluster's own jars: nothing to fetch
    assert cluster["spark.sql.catalog.spark_catalog"] == delta_spark.CATALOG
    with pytest.raises(ConfigError, match="delta_jars must be one of"):
        SparkProfile(delta_jars="maven")


def nightly_with_spark_writer(tmp_path, delta_jars: str, conf: dict[str, str] | None = None, timeout: int = 900):
    profile = tmp_path / f"{delta_jars}.yaml"
    settings = {"spark.ui.enabled": "false", **(conf or {})}
    profile.write_text(f"master: local[1]\nlog_level: ERROR\ndelta_jars: {delta_jars}\nconf:\n"
                       + "".join(f"  {k}: {v}\n" for k, v in settings.items()))
    out = tmp_path / "grades"
    cmd = [sys.executable, "-c", "from taosr1.cli.main import main; main()", "nightly", "--input",
           str(REPO / "taosr1" / "data" / "esci_us_sample.csv"), "--output", str(out), "--run-date", "2025-06-01",
           "--set", "writer=spark", "--spark-profile", str(profile)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           "JAVA_HOME": __import__("os").environ.get("JAVA_HOME", "")}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={k: v for k, v in env.items() if v})
    return res, out


def test_cluster_jars_absent_stop_the_job_before_it_reads(tmp_path):
    res, out = nightly_with_spark_writer(tmp_path, "cluster")
    assert res.returncode == 2, res.stderr[-3000:]
    assert "writer: spark needs the delta-spark jars" in res.stderr
    assert "delta_jars: cluster, but the session has no delta-spark classes" in res.stderr
    assert "writer: delta-rs" in res.stderr and not out.exists()


def test_pip_jars_that_cannot_be_fetched_stop_the_job_with_what_to_do(tmp_path):
    """Ivy resolves the delta-spark artifact against an empty local repository only (ivySettings),
    as a cluster behind a mirror without it would: the fetch fails the same way with or without network."""
    repo = tmp_path / "empty-repo"
    repo.mkdir()
    settings = tmp_path / "ivysettings.xml"
    settings.write_text(f"""<ivysettings>
  <settings defaultResolver="mirror"/>
  <resolvers>
    <filesystem name="mirror" m2compatible="true">
      <ivy pattern="{repo}/[organisation]/[module]/[revision]/[module]-[revision].pom"/>
      <artifact pattern="{repo}/[organisation]/[module]/[revision]/[artifact]-[revision].[ext]"/>
    </filesystem>
  </resolvers>
</ivysettings>
""")
    res, out = nightly_with_spark_writer(tmp_path, "pip", {"spark.jars.ivySettings": str(settings)})
    assert res.returncode == 2, res.stderr[-3000:]
    assert f"unresolved dependency: {ARTIFACT.replace(':', '#', 1).replace(':', ';', 1)}" in res.stderr
    assert f"fetching {ARTIFACT} from Maven failed" in res.stderr
    assert f"--packages {ARTIFACT}" in res.stderr and "delta_jars: cluster" in res.stderr and not out.exists()
