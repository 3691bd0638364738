"""A SparkSession from a profile in conf/spark/ (local mode, GPU cluster).

Under spark-submit the submitted settings (--master, --conf) win and the profile fills
only what they leave unset; from plain Python (tests, `taosr1 nightly`) the profile is
the whole configuration, driver settings included. A session that already runs (a
test's shared session) is returned as it is.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taosr1.core import config as cfgmod
from taosr1.core.config import ConfigError
from taosr1.core.resources import find_conf

LOG_LEVELS = ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF")


@dataclass
class SparkProfile:
    """A Spark profile (conf/spark/<name>.yaml).

    Parameters:
        master: Spark master for runs outside spark-submit; "" leaves it to spark-submit.
        app_name: application name.
        log_level: Spark's log level from the context's start (`spark.log.level`; a level given to
            spark-submit wins).
        conf: Spark settings (`spark.*` keys).
        delta_jars: where a `writer: spark` session gets the delta-spark jars: `pip` (the
            delta-spark package's Maven artifact, fetched at launch) or `cluster` (already on
            the classpath). See taosr1/spark/delta_spark.py.
    """

    master: str = ""
    app_name: str = "taosr1-nightly"
    log_level: str = "WARN"
    conf: dict[str, Any] = field(default_factory=dict)
    delta_jars: str = "pip"

    def __post_init__(self) -> None:
        from taosr1.spark.delta_spark import JARS

        if self.delta_jars not in JARS:
            raise ConfigError(f"delta_jars must be one of {JARS}, got {self.delta_jars!r}")
        bad = sorted(k for k in self.conf if not str(k).startswith("spark."))
        if bad:
            raise ConfigError(f"Spark profile conf keys must start with 'spark.', got {bad}")
        nested = sorted(k for k, v in self.conf.items() if isinstance(v, (dict, list)))
        if nested:
            raise ConfigError(f"Spark profile conf values must be scalars, got a mapping or list for {nested}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")


def load_profile(name_or_path: str | Path) -> SparkProfile:
    return cfgmod.load(SparkProfile, find_conf("spark", name_or_path))


def _spark_str(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _package_root() -> str:
    """The folder holding the `taosr1` the driver imported, so local workers import the same one."""
    return str(Path(__file__).resolve().parents[2])


def get_session(profile: SparkProfile | str = "local", master: str = "", delta: bool = False):
    """The active SparkSession, or a new one configured by `profile`.

    `master` (a job's own --master option) wins over spark-submit's and the profile's.
    `delta=True` (writer: spark) adds the delta-spark settings (profile.delta_jars) and checks
    that the session has the jars, with a clear error when it has not.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if not isinstance(profile, SparkProfile):
        profile = load_profile(profile)
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit started this driver
    if submitted:
        SparkContext._ensure_initialized()
        conf = SparkConf()  # carries the submitted settings
    else:
        conf = SparkConf(loadDefaults=False)
    for key, value in profile.conf.items():
        if not conf.contains(key):
            conf.set(key, _spark_str(value))
    if master:
        conf.setMaster(master)
    elif profile.master and not conf.contains("spark.master"):
        conf.setMaster(profile.master)
    if not conf.contains("spark.app.name"):
        conf.setAppName(profile.app_name)
    if not conf.contains("spark.log.level"):  # from the context's start, not only once it runs
        conf.set("spark.log.level", profile.log_level.upper())
    if conf.get("spark.master", "").startswith("local"):
        # Workers are forked on this machine: run them on this interpreter and this taosr1.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        paths = [_package_root(), conf.get("spark.executorEnv.PYTHONPATH", ""), os.environ.get("PYTHONPATH", "")]
        conf.set("spark.executorEnv.PYTHONPATH", os.pathsep.join(p for p in paths if p))
    if delta:
        from taosr1.spark import delta_spark

        for key, value in delta_spark.delta_settings(profile.delta_jars, dict(conf.getAll())).items():
            conf.set(key, value)
    try:
        spark = SparkSession.builder.config(conf=conf).getOrCreate()
    except Exception as e:  # a jar that cannot be fetched stops the JVM before the session starts
        if delta and profile.delta_jars == "pip" and not submitted:
            raise delta_spark.missing_jars_error("pip", conf.get("spark.jars.packages", ""),
                                                 type(e).__name__) from e
        raise
    spark.sparkContext.setLogLevel(conf.get("spark.log.level"))  # --conf spark.log.level=INFO wins
    if delta and not delta_spark.has_classes(spark):
        spark.stop()
        raise delta_spark.missing_jars_error(profile.delta_jars, conf.get("spark.jars.packages", ""))
    return spark
