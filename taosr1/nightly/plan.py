"""The night's plan: what every executor grades with, and the Spark frames of what is graded, carried
from earlier runs (`reuse: previous`) and quarantined.

`grading` settles on the driver, before any executor work, the model, the label tokens (a label that
is not one token fails here), beta and the fingerprint lookup. `plan` builds the frames with one
shuffle, checks them against the existing tables' schemas, and counts the input.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taosr1.core.names import PARTITION
from taosr1.storage import stores


@dataclass
class Grading:
    """What every executor grades with, resolved on the driver."""

    model_path: str
    beta: float
    spec: Any  # spark.dispatch.WorkerSpec
    reuse: Any  # nightly.incremental.Reuse


@dataclass
class Plan:
    """The night's Spark plan: what is graded, what is carried from earlier runs, what is quarantined."""

    grading: Grading
    prepared: Any  # validated and tokenized rows (persisted)
    attached: Any  # the input with its fingerprint lookup (persisted when reuse is on)
    to_grade: Any  # partitioned, longest prompts first
    graded: Any
    reused: Any
    quarantined: Any
    grade_cols: list
    stats: Any
    partitions: int
    rows_in: int = 0

    def release(self) -> None:
        self.prepared.unpersist()
        self.attached.unpersist()
        self.grading.reuse.release()


def executor_label_config(lc, model_path: str) -> dict[str, Any]:
    """The label settings executors get: a model folder given relative to the driver's working
    directory made absolute (an executor runs in its own folder, e.g. a standalone worker's); an
    object-store model stays a URI, which each executor copies locally once."""
    cfg = dataclasses.asdict(lc)
    if lc.engine.model and not stores.is_remote(lc.engine.model) and not Path(lc.engine.model).is_absolute():
        cfg["engine"]["model"] = str(Path(model_path).absolute())
    return cfg


def grading(spark, cfg, night, log) -> Grading:
    """The model, label tokens, beta and fingerprint lookup, on the driver, before any executor work."""
    from taosr1.labeling.calibration import resolve_beta
    from taosr1.labeling.models import load_tokenizer, resolve_model
    from taosr1.spark import dispatch as D

    lc, scheme = cfg.label, night.scheme
    model_path = resolve_model(night.model or lc.engine.model)
    scheme.token_ids(load_tokenizer(model_path))  # a label that is not one token fails here
    beta = resolve_beta(lc.beta, model_path, scheme)
    spec = D.WorkerSpec(label_cfg=json.dumps(executor_label_config(lc, model_path), sort_keys=True), beta=beta,
                        model=night.model)
    return Grading(model_path, beta, spec, open_reuse(spark, cfg, night, model_path, beta, log))


def open_reuse(spark, cfg, night, model_path: str, beta: float, log):
    """The fingerprint lookup of `reuse: previous` (taosr1/nightly/incremental.py); off with the spark writer."""
    from taosr1.nightly import incremental as I
    from taosr1.storage.delta import STAGING

    if cfg.reuse == "off":
        return I.Reuse("off")
    if night.writer != "delta-rs":
        log("warning: reuse previous needs the delta-rs writer; grading every row")
        return I.Reuse("off", note="full run: reuse needs the delta-rs writer")
    pin = I.pinned_version(night.output.join(STAGING, night.run_id)) if night.resume else I.UNPINNED
    context = I.context_for(spark, cfg.label, model_path, night.scheme, beta)
    reuse = I.open_lookup(spark, cfg.reuse, night.fingerprints, context, log, pin)
    log(f"run {night.run_id}: reuse previous: {reuse.note}")
    return reuse


def plan(spark, df, cfg, grading: Grading, night, log) -> Plan:
    """Step 2: the frames, checked against the tables' schemas (delta-rs writer: a run whose columns
    the table does not have fails before any work), and the input counted (which validates and
    tokenizes it on the executors)."""
    from taosr1.nightly import incremental as I

    try:
        p = frames(spark, df, cfg, grading, night.scheme, night.run_id)
    except BaseException:
        grading.reuse.release()
        raise
    try:
        if night.writer == "delta-rs":
            check_schemas(night, p)
        reuse = grading.reuse
        p.rows_in = p.prepared.count() + (p.attached.filter(I.is_reused(reuse)).count()
                                          if reuse.lookup is not None else 0)
    except BaseException:
        p.release()
        raise
    log(f"run {night.run_id}: {p.rows_in} input rows read, validated and tokenized in "
        f"{time.perf_counter() - night.t0:.1f} s; grading on {p.partitions} partition(s), {night.writer} writer")
    return p


def frames(spark, df, cfg, grading: Grading, scheme, run_id: str) -> Plan:
    """One shuffle: rows are hash-partitioned by key, which serves the duplicate window (a
    key's rows meet in one partition, ordered by read position) and spreads prepare (validate,
    tokenize) and grading over `partitions` tasks. (reuse: previous adds a join to the
    fingerprint table and, for the rows left to grade, a second shuffle.)"""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from taosr1.nightly import incremental as I
    from taosr1.spark import dispatch as D

    lc, cols, input_names, reuse = cfg.label, cfg.label.columns, df.columns, grading.reuse
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(lc.chunk_rows))
    partitions = cfg.partitions or spark.sparkContext.defaultParallelism
    keys = [F.col(f"`{k}`") for k in cols.keys]  # backticks: a name may hold a dot
    df = df.withColumn(D.POS, F.monotonically_increasing_id()).repartition(partitions, *keys)
    df = df.withColumn(D.DUP, F.row_number().over(Window.partitionBy(*keys).orderBy(D.POS)) > 1)
    # reuse: previous matches rows an earlier run graded here, in the JVM, before the Python stages
    fields = {f: c for f, c in cols.field_columns().items() if c in input_names}
    attached = df = I.attach(df, reuse, fields, cols.keys, D.DUP)
    if reuse.lookup is not None:
        attached = attached.persist()
        df = I.without_lookup(attached.filter(~I.is_reused(reuse)))
    stats = spark.sparkContext.accumulator({}, D.WorkerStats())
    prepared_schema = _prepared_schema(df.schema)
    prepared = df.mapInArrow(D.prepare_fn(grading.spec, stats), prepared_schema).persist()
    grade_cols = grade_columns(scheme)
    # grade each partition longest prompts first, so every engine batch is of like lengths
    to_grade = prepared.filter(F.col(D.REASON).isNull()).select(
        *[F.col(f"`{f.name}`") for f in prepared_schema.fields if f.name != I.FP])
    if reuse.lookup is not None:  # the join moved rows: back to `partitions` key partitions (resume needs them fixed)
        to_grade = to_grade.repartition(partitions, *keys)
    to_grade = to_grade.sortWithinPartitions(F.desc(D.NTOK), *keys)
    graded = _graded(to_grade, grading.spec, grade_cols, stats, prepared_schema, input_names, run_id)
    reused = I.reused_rows(attached, reuse, input_names, grade_cols, scheme,
                           {"model": Path(grading.model_path).name, "label_scheme": scheme.name,
                            "prompt_version": lc.prompt.version, "beta": float(grading.beta)}, run_id)
    quarantined = prepared.filter(F.col(D.REASON).isNotNull()).select(
        *[F.col(f"`{c}`").cast("string").alias(c) for c in input_names], F.col(D.REASON).alias("reason"),
        F.lit(run_id).alias("run_id"))
    return Plan(grading, prepared, attached, to_grade, graded, reused, quarantined, grade_cols, stats, partitions)


def _prepared_schema(schema):
    """The prepare stage's output: the rows plus the hidden reason, token ids, truncated and length columns."""
    from pyspark.sql.types import ArrayType, BooleanType, IntegerType, StringType, StructField, StructType

    from taosr1.spark import dispatch as D

    return StructType([*schema.fields, StructField(D.REASON, StringType()), StructField(D.IDS, ArrayType(IntegerType())),
                       StructField(D.TRUNCATED, BooleanType()), StructField(D.NTOK, IntegerType())])


def _graded(to_grade, spec, grade_cols, stats, prepared_schema, input_names, run_id: str):
    """The grade stage's frame: the input columns and the grade columns, naming this run."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructField, StructType

    from taosr1.spark import dispatch as D

    graded_schema = StructType([*[f for f in prepared_schema.fields if f.name in input_names],
                                *[StructField(c.name, _spark_type(c.type)) for c in grade_cols]])
    return (to_grade.mapInArrow(D.grade_fn(spec, [(c.name, c.type) for c in grade_cols], stats), graded_schema)
            .withColumn("run_id", F.lit(run_id)).withColumn("graded_run_id", F.lit(run_id)))


def grade_columns(scheme) -> list:
    """The grades contract's columns the grade stage adds (run ids and the date partition are
    added after it), in output order."""
    from taosr1.storage import contracts

    return [c for c in contracts.output_contract("grades").added_columns(scheme.names)
            if c.name not in ("run_id", "graded_run_id", PARTITION)]


def check_schemas(night, p: Plan) -> None:
    from taosr1.storage import delta

    for table, frame in ((night.output, p.graded), (night.quarantine, p.quarantined)):
        delta.check_schema(table, with_partition(frame.schema))


def _spark_type(type_name: str):
    from pyspark.sql.types import _parse_datatype_json_value

    return _parse_datatype_json_value(type_name)


def with_partition(spark_schema):
    """The Delta table's Arrow schema: the run's columns plus the run_date partition column."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(spark_schema).append(pa.field(PARTITION, pa.date32()))
