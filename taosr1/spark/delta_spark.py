"""delta-spark sessions for `writer: spark`: the jars fetched at launch, or the cluster's own.

Two ways to get the jars (SparkProfile.delta_jars):
- `pip`: the `delta-spark` pip package (extra `delta`) names the Maven artifact matching the
  installed pyspark (`configure_spark_with_delta_pip`); Spark fetches it when the session
  starts, so the driver needs Maven Central (or a mirror set by spark.jars.repositories);
- `cluster`: the jars are already on the cluster's classpath (Databricks, EMR, a Spark
  image with them, or `--jars`); only the extension and the catalog are set.
Either way the session is checked for the Delta classes before the job reads anything.
"""

from __future__ import annotations

from taosr1.core.config import ConfigError

EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
JARS = ("pip", "cluster")
INSTALL = 'pip install "taosr1[delta]"'


def _joined(existing: str, value: str) -> str:
    items = [x.strip() for x in existing.split(",") if x.strip()]
    return ",".join(items if value in items else [*items, value])


def maven_package(extra_packages: list[str] | None = None) -> str:
    """spark.jars.packages as configure_spark_with_delta_pip sets it (delta-spark first, then `extra_packages`)."""
    try:
        from delta import configure_spark_with_delta_pip
    except ImportError:
        raise ConfigError(f"delta_jars: pip needs the delta-spark package ({INSTALL}); or put the delta-spark "
                          "jars on the cluster and set delta_jars: cluster; or use writer: delta-rs") from None
    from pyspark.sql import SparkSession

    builder = configure_spark_with_delta_pip(SparkSession.builder, extra_packages=extra_packages or [])
    return builder._options["spark.jars.packages"]


def delta_settings(jars: str, conf: dict[str, str] | None = None) -> dict[str, str]:
    """The settings a delta-spark session needs, merged with the existing `conf` values."""
    if jars not in JARS:
        raise ConfigError(f"delta_jars must be one of {JARS}, got {jars!r}")
    conf = conf or {}
    settings = {"spark.sql.extensions": _joined(conf.get("spark.sql.extensions", ""), EXTENSION),
                "spark.sql.catalog.spark_catalog": CATALOG}
    if jars == "pip":
        extra = [p for p in conf.get("spark.jars.packages", "").split(",") if p.strip()]
        settings["spark.jars.packages"] = maven_package([p for p in extra if not p.startswith("io.delta:")])
    return settings


def missing_jars_error(jars: str, packages: str = "", cause: str = "") -> ConfigError:
    where = (f"fetching {packages} from Maven failed{f' ({cause})' if cause else ''} (under spark-submit, pass "
             f"--packages {packages}): give the driver access to Maven Central or a mirror "
             "(spark.jars.repositories), or put the jars on the cluster and set delta_jars: cluster" if jars == "pip" else
             "delta_jars: cluster, but the session has no delta-spark classes: add the jars (--jars, "
             "spark.jars, the cluster image) or set delta_jars: pip")
    return ConfigError(f"writer: spark needs the delta-spark jars ({EXTENSION}); {where}; "
                       "or use writer: delta-rs, which needs no jars")


def has_delta_spark(spark) -> bool:
    """Whether the session is configured with the Delta extension (writer: auto picks spark then)."""
    return "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions", "")


def has_classes(spark) -> bool:
    """Whether the running session can load the Delta extension class (the jars are there)."""
    try:
        loader = spark._jvm.Thread.currentThread().getContextClassLoader()
        spark._jvm.java.lang.Class.forName(EXTENSION, False, loader)
        return True
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False


def write_tables(spark, graded, quarantined, output: str, quarantine: str, date, rows_in: int) -> dict[str, int]:
    """delta-spark on the cluster: each table's partition replaced in one commit by replaceWhere."""
    from pyspark.sql import functions as F

    from taosr1.core.names import PARTITION
    from taosr1.spark.staging import check_counts

    value = date.isoformat()
    counts = {}
    for name, frame, path in (("quarantined", quarantined, quarantine), ("graded", graded, output)):
        (frame.withColumn(PARTITION, F.lit(value).cast("date")).write.format("delta").mode("overwrite")
         .option("replaceWhere", f"{PARTITION} = '{value}'").partitionBy(PARTITION).save(path))
        last = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").collect()[0]
        counts[name] = int(last["operationMetrics"].get("numOutputRows", 0))
        counts["grades_version" if name == "graded" else "quarantine_version"] = int(last["version"])
    check_counts(rows_in, counts["graded"], counts["quarantined"], "after commit: inspect the run")
    return counts
