"""The nightly job: read -> contract check -> validate -> dispatch -> write -> run record.

`run(spark, cfg, ...)` takes the session and the config as arguments (tests pass a
local session). Every input row ends in the grades table or in the quarantine table
with a reason; the run replaces its own run_date partition of each table in one
commit, then appends one row to the runs table. Nothing is written when the input
fails its contract, and nothing is committed when the counts do not add up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taosr1.core.config import ConfigError, config_hash
from taosr1.core.names import PARTITION
from taosr1.labeling.engines.base import EngineStats
from taosr1.labeling.labeler import LabelConfig
from taosr1.nightly.alerts import AlertConfig
from taosr1.storage import stores
from taosr1.storage.contracts import default_paths

WRITERS = ("auto", "delta-rs", "spark")
INPUT_FORMATS = ("auto", "csv", "parquet", "json", "delta", "table")


@dataclass
class FaultConfig:
    """Fault injection for drills and tests (docs/reliability.md); all off by default.

    Parameters:
        fail_batch: k > 0 raises in the k-th Arrow batch of every grading task's first
            attempt; Spark retries the task (needs task retries: `local[N,F]` or a cluster).
        fail_partition: p >= 0 makes grading partition p fail on every attempt once the other
            partitions are staged: the run dies with most work done (resume it).
        die_before_commit: the driver process exits (code 137, as if killed) after staging,
            before the first commit.
        die_between_commits: the driver exits (137) after the quarantine commit, before the grades one.
        die_before_run_record: the driver exits (137) after both commits, before the runs row.
    """

    fail_batch: int = 0
    fail_partition: int = -1
    die_before_commit: bool = False
    die_between_commits: bool = False
    die_before_run_record: bool = False


@dataclass
class NightlyConfig:
    """The nightly job's settings (conf/nightly.yaml).

    Parameters:
        spark_profile: conf/spark/<name>.yaml or a path; used when the job starts its own
            session (spark-submit's own settings win).
        partitions: grading partitions; 0 takes the cluster's default parallelism.
        writer: `delta-rs` (executors write Parquet, the driver commits with delta-rs),
            `spark` (delta-spark jars on the cluster, replaceWhere) or `auto` (spark when the
            session has the Delta extension, else delta-rs).
        input_format: `auto` (from the path; a name that is no path is a catalog table),
            csv, parquet, json, delta or table.
        keep_staging: keep the staged Parquet files after the commit (debugging).
        storage_options: object-store settings in delta-rs's keys (AWS_ENDPOINT_URL, AWS_REGION,
            AWS_ACCESS_KEY_ID, AZURE_STORAGE_ACCOUNT_NAME, ...), over the environment's (taosr1/stores.py).
        reuse: `off`, or `previous`: carry the grade of every pair whose grading fingerprint
            an earlier committed run graded (taosr1/nightly/incremental.py); delta-rs writer only.
        fingerprints: the fingerprint Delta table for reuse ("" = OUTPUT/_fingerprints).
        label: the labeling settings, as in conf/label.yaml (LabelConfig).
        fault: fault injection switches (FaultConfig), off by default.
        alert: thresholds that fail a committed run (AlertConfig, taosr1/nightly/alerts.py), off by default.
    """

    spark_profile: str = "local"
    partitions: int = 0
    writer: str = "auto"
    input_format: str = "auto"
    keep_staging: bool = False
    storage_options: dict[str, str] = field(default_factory=dict)
    reuse: str = "off"
    fingerprints: str = ""
    label: LabelConfig = field(default_factory=LabelConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    alert: AlertConfig = field(default_factory=AlertConfig)

    def __post_init__(self) -> None:
        if self.partitions < 0:
            raise ConfigError(f"partitions must be >= 0 (0: the cluster's parallelism), got {self.partitions}")
        if self.writer not in WRITERS:
            raise ConfigError(f"writer must be one of {WRITERS}, got {self.writer!r}")
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}")
        from taosr1.nightly.incremental import MODES

        if self.reuse is False:  # YAML 1.1 reads a bare `off` as false
            self.reuse = "off"
        if self.reuse not in MODES:
            raise ConfigError(f"reuse must be one of {MODES}, got {self.reuse!r}")


def parse_run_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ConfigError(f"run date {value!r} is not a date in the form YYYY-MM-DD") from None


def new_run_id(run_date: dt.date) -> str:
    return f"{run_date:%Y%m%d}-{dt.datetime.now(dt.timezone.utc):%H%M%S}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- input

def _detect_format(source: str, spark) -> str:
    from taosr1.storage.tables import _EXT

    p = Path(source)
    if "://" in source or p.exists():
        if (p / "_delta_log").is_dir() or source.rstrip("/").endswith(".delta"):
            return "delta"
        ext = _EXT.get(p.suffix.lower())
        if ext:
            return "json" if ext == "jsonl" else ext
        if p.is_dir():
            return "parquet"
        raise ValueError(f"cannot tell the format of {source}; pass --input-format")
    if spark.catalog.tableExists(source):
        return "table"
    raise FileNotFoundError(f"input {source} is neither an existing path nor a table in the Spark catalog")


def has_delta_spark(spark) -> bool:
    return "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions", "")


def read_input(spark, source: str, fmt: str = "auto", storage_options: dict[str, str] | None = None):
    """The input as a Spark DataFrame. CSV cells are text, unchanged (as `taosr1 label` reads them)."""
    if stores.is_remote(source):  # listed with fsspec, read by the executors (no S3A jars needed)
        from taosr1.spark import remote

        return remote.read_input(spark, source, fmt, stores.options_for(source, storage_options))
    fmt = _detect_format(source, spark) if fmt == "auto" else fmt
    if fmt == "csv":
        from pyspark.sql import functions as F

        # RFC 4180 quoting ("" inside quotes). Spark reads an empty cell as null; a CSV has no
        # nulls, so it becomes the empty string, as `taosr1 label` reads it (empty_<field>).
        df = spark.read.option("header", True).option("multiLine", True).option("escape", '"').csv(source)
        return df.select(*[F.coalesce(F.col(f"`{c}`"), F.lit("")).alias(c) for c in df.columns])
    if fmt == "parquet":
        return spark.read.parquet(source)
    if fmt == "json":
        return spark.read.json(source)
    if fmt == "table":
        return spark.table(source)
    if has_delta_spark(spark):
        return spark.read.format("delta").load(source)
    return _read_delta_files(spark, source)


def _read_delta_files(spark, source: str):
    """A Delta table's current files through Spark's Parquet reader (no delta-spark jars)."""
    from deltalake import DeltaTable
    from pyspark.sql.types import StructType

    table = DeltaTable(source)
    proto = table.protocol()
    if proto.min_reader_version > 1:
        raise ValueError(f"{source}: Delta reader version {proto.min_reader_version} (features "
                         f"{proto.reader_features}) needs the delta-spark jars; this session has none")
    schema = StructType.fromJson(json.loads(table.schema().to_json()))
    files = table.file_uris()
    if not files:
        return spark.createDataFrame([], schema)
    # basePath: partition values come from the folder names, typed by the table's schema.
    df = spark.read.schema(schema).option("basePath", str(Path(source).absolute())).parquet(*files)
    return df.select(*schema.fieldNames())


def executor_label_config(lc: LabelConfig, model_path: str) -> dict[str, Any]:
    """The label settings executors get: a model folder given relative to the driver's working
    directory made absolute (an executor runs in its own folder, e.g. a standalone worker's); an
    object-store model stays a URI, which each executor copies locally once."""
    cfg = dataclasses.asdict(lc)
    if lc.engine.model and not stores.is_remote(lc.engine.model) and not Path(lc.engine.model).is_absolute():
        cfg["engine"]["model"] = str(Path(model_path).absolute())
    return cfg


# ---------------------------------------------------------------- run

def run(spark, cfg: NightlyConfig, *, input: str, output: str, run_date: str, quarantine: str | None = None,
        runs: str | None = None, run_id: str | None = None, resume: bool = False, log=None) -> dict[str, Any]:
    """Grade `input` into the `run_date` partition of `output` (and `quarantine`), record the run.

    `resume=True` with the `run_id` of a run that died before its commit reuses the grading
    partitions that run staged (same input, date and config required) and grades the rest.
    Returns the run record (also appended to the `runs` table).
    """
    from taosr1.core.labels import load_scheme
    from taosr1.labeling.calibration import resolve_beta
    from taosr1.labeling.models import load_tokenizer, resolve_model
    from taosr1.nightly import alerts
    from taosr1.nightly import incremental as I
    from taosr1.spark import dispatch as D
    from taosr1.spark.staging import die_if
    from taosr1.storage import contracts

    log = log or (lambda msg: print(msg, file=sys.stderr))
    date = parse_run_date(run_date)
    run_id = run_id or new_run_id(date)
    q_default, runs_default = default_paths(output)
    t = _Tables(input, output, quarantine or q_default, runs or runs_default)
    writer, opts = _check_tables(spark, cfg, t, resume, run_id)
    lc = cfg.label
    scheme = load_scheme(lc.labels)
    started_at = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()

    # 1. read and check the contract: nothing is loaded or written on a mismatch
    df = read_input(spark, input, cfg.input_format, cfg.storage_options)
    contracts.check_input([(f.name, f.dataType.typeName()) for f in df.schema.fields], lc.columns, source=input,
                          reserved=[*contracts.reserved_names(scheme.names), *D.HIDDEN, *I.HIDDEN])

    # 2. model, label tokens and beta, on the driver, before any executor work
    model_opts = stores.options_for(lc.engine.model, cfg.storage_options)  # {} for a local model
    model_path = resolve_model(lc.engine.model, model_opts)
    scheme.token_ids(load_tokenizer(model_path))  # a label that is not one token fails here
    beta = resolve_beta(lc.beta, model_path, scheme)
    spec = D.WorkerSpec(label_cfg=json.dumps(executor_label_config(lc, model_path), sort_keys=True), beta=beta,
                        model_options=json.dumps(model_opts))
    reuse = _open_reuse(spark, cfg, writer, t.output, run_id, resume, model_path, scheme, beta, log)

    # 3. plan, then 4. grade, stage and commit
    plan = _plan(spark, df, cfg, spec, reuse, scheme, run_id, model_path, beta)
    try:
        if writer == "delta-rs":  # a run whose columns the table does not have fails before any work
            _check_schemas(t, plan, opts)
        rows_in = plan.prepared.count() + (plan.attached.filter(I.is_reused(reuse)).count()
                                           if reuse.lookup is not None else 0)
        log(f"run {run_id}: {rows_in} input rows read, validated and tokenized in {time.perf_counter() - t0:.1f} s; "
            f"grading on {plan.partitions} partition(s), {writer} writer")
        counts = _write(spark, cfg, writer, t, plan, opts, run_id, date, rows_in, resume, reuse.snapshot, log)
        if writer == "delta-rs":
            counts["fingerprints_added"] = I.record(
                spark, reuse, plan.prepared, output=output, grades_version=counts["grades_version"],
                partition=(PARTITION, date.isoformat()), keys=lc.columns.keys, scheme=scheme, run_id=run_id,
                run_date=date, log=log, output_options=opts[output])
    finally:
        plan.prepared.unpersist()
        plan.attached.unpersist()
        reuse.release()

    record = _run_record(spark, cfg, t, plan, counts, reuse, writer, run_id, date, rows_in, model_path, scheme, beta,
                         started_at, time.perf_counter() - t0, log)
    record.update(alerts.evaluate(cfg.alert, record, t.runs, scheme.names))  # after the commits: data is kept
    die_if(cfg.fault.die_before_run_record, run_id, "after both commits, before the runs row", log)
    _append_run(spark, t.runs, record, writer, opts[t.runs] or None)
    return record


@dataclass
class _Tables:
    """Where a night reads and writes."""

    input: str
    output: str
    quarantine: str
    runs: str


def _check_tables(spark, cfg: NightlyConfig, t: _Tables, resume: bool, run_id: str
                  ) -> tuple[str, dict[str, dict[str, str]]]:
    """The writer, and each location's storage options; every location problem stops the run
    here, before any model work."""
    from taosr1.storage import delta

    writer = cfg.writer if cfg.writer != "auto" else ("spark" if has_delta_spark(spark) else "delta-rs")
    if writer == "spark" and not has_delta_spark(spark):
        raise ConfigError("writer: spark needs the delta-spark jars and spark.sql.extensions="
                          "io.delta.sql.DeltaSparkSessionExtension on the session; use writer: delta-rs")
    tables = (t.output, t.quarantine, t.runs)
    opts = {u: stores.options_for(u, cfg.storage_options) for u in (t.input, *tables)}
    if writer == "delta-rs":
        remote = stores.is_remote(t.output)
        for u in tables:
            if not remote:
                delta.local_path(u)  # fails now on a location delta-rs cannot write here
            elif not stores.is_remote(u):
                raise ConfigError(f"{u}: with the grades table on an object store, put the quarantine and runs "
                                  "tables there too")
    for what, u in (("input", t.input), ("output", t.output), ("quarantine", t.quarantine), ("runs", t.runs)):
        stores.check_location(u, cfg.storage_options, what)
    if resume and writer != "delta-rs":
        raise ConfigError("resume needs the delta-rs writer (staged partitions); rerun the date instead")
    if resume and not run_id:
        raise ConfigError("resume needs the run id of the run to resume (printed when it started)")
    return writer, opts


@dataclass
class _Plan:
    """The night's Spark plan: what is graded, what is carried from earlier runs, what is quarantined."""

    prepared: Any  # validated and tokenized rows (persisted)
    attached: Any  # the input with its fingerprint lookup (persisted when reuse is on)
    to_grade: Any  # partitioned, longest prompts first
    graded: Any
    reused: Any
    quarantined: Any
    grade_cols: list
    stats: Any
    spec: Any
    partitions: int


def _plan(spark, df, cfg: NightlyConfig, spec, reuse, scheme, run_id: str, model_path: str, beta: float) -> _Plan:
    """One shuffle: rows are hash-partitioned by key, which serves the duplicate window (a
    key's rows meet in one partition, ordered by read position) and spreads prepare (validate,
    tokenize) and grading over `partitions` tasks. (reuse: previous adds a join to the
    fingerprint table and, for the rows left to grade, a second shuffle.)"""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, BooleanType, IntegerType, StringType, StructField, StructType

    from taosr1.nightly import incremental as I
    from taosr1.spark import dispatch as D

    lc, cols, input_names = cfg.label, cfg.label.columns, df.columns
    grade_cols = grade_columns(scheme)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(lc.chunk_rows))
    partitions = cfg.partitions or spark.sparkContext.defaultParallelism
    keys = [F.col(f"`{k}`") for k in cols.keys]  # backticks: a name may hold a dot
    df = df.withColumn(D.POS, F.monotonically_increasing_id()).repartition(partitions, *keys)
    first = Window.partitionBy(*keys).orderBy(D.POS)
    df = df.withColumn(D.DUP, F.row_number().over(first) > 1)
    # reuse: previous matches rows an earlier run graded here, in the JVM, before the Python stages
    fields = {f: c for f, c in cols.field_columns().items() if c in input_names}
    attached = df = I.attach(df, reuse, fields, cols.keys, D.DUP)
    if reuse.lookup is not None:
        attached = attached.persist()
        df = I.without_lookup(attached.filter(~I.is_reused(reuse)))
    prepared_schema = StructType([*df.schema.fields,
                                  StructField(D.REASON, StringType()),
                                  StructField(D.IDS, ArrayType(IntegerType())),
                                  StructField(D.TRUNCATED, BooleanType()),
                                  StructField(D.NTOK, IntegerType())])
    stats = spark.sparkContext.accumulator({}, D.WorkerStats())
    prepared = df.mapInArrow(D.prepare_fn(spec, stats), prepared_schema).persist()

    # grade each partition longest prompts first, so every engine batch is of like lengths
    graded_schema = StructType([*[f for f in prepared_schema.fields if f.name in input_names],
                                *[StructField(c.name, _spark_type(c.type)) for c in grade_cols]])
    to_grade = prepared.filter(F.col(D.REASON).isNull()).select(
        *[F.col(f"`{f.name}`") for f in prepared_schema.fields if f.name != I.FP])
    if reuse.lookup is not None:  # the join moved rows: back to `partitions` key partitions (resume needs them fixed)
        to_grade = to_grade.repartition(partitions, *keys)
    to_grade = to_grade.sortWithinPartitions(F.desc(D.NTOK), *keys)
    graded = (to_grade.mapInArrow(D.grade_fn(spec, [(c.name, c.type) for c in grade_cols], stats), graded_schema)
              .withColumn("run_id", F.lit(run_id)).withColumn("graded_run_id", F.lit(run_id)))
    reused = I.reused_rows(attached, reuse, input_names, grade_cols, scheme,
                           {"model": Path(model_path).name, "label_scheme": scheme.name,
                            "prompt_version": lc.prompt.version, "beta": float(beta)}, run_id)
    quarantined = prepared.filter(F.col(D.REASON).isNotNull()).select(
        *[F.col(f"`{c}`").cast("string").alias(c) for c in input_names], F.col(D.REASON).alias("reason"),
        F.lit(run_id).alias("run_id"))
    return _Plan(prepared, attached, to_grade, graded, reused, quarantined, grade_cols, stats, spec, partitions)


def grade_columns(scheme) -> list:
    """The grades contract's columns the grade stage adds (run ids and the date partition are
    added after it), in output order."""
    from taosr1.storage import contracts

    return [c for c in contracts.output_contract("grades").added_columns(scheme.names)
            if c.name not in ("run_id", "graded_run_id", PARTITION)]


def _check_schemas(t: _Tables, plan: _Plan, opts) -> None:
    from taosr1.storage import delta

    for table, frame in ((t.output, plan.graded), (t.quarantine, plan.quarantined)):
        delta.check_schema(table, _with_partition(frame.schema), opts[table] or None)


def _write(spark, cfg: NightlyConfig, writer: str, t: _Tables, plan: _Plan, opts, run_id: str, date, rows_in: int,
           resume: bool, fingerprints, log) -> dict[str, int]:
    """Grade, stage and commit both tables: delta-spark's replaceWhere, or delta-rs on a local
    table (spark/staging.py) or on an object store (spark/remote.py)."""
    from taosr1.spark import staging

    if writer == "spark":
        from taosr1.spark.delta_spark import write_tables

        return write_tables(spark, plan.graded, plan.quarantined, t.output, t.quarantine, date, rows_in)
    stage = staging.Stage(plan.to_grade, plan.spec, [(c.name, c.type) for c in plan.grade_cols], plan.stats,
                          plan.partitions, cfg.fault, resume,
                          {"run_date": date.isoformat(), "input": t.input, "partitions": plan.partitions,
                           "rows_in": rows_in, "config_hash": resume_hash(cfg), "fingerprints": fingerprints})
    grades_schema, quarantine_schema = _with_partition(plan.graded.schema), _with_partition(plan.quarantined.schema)
    if stores.is_remote(t.output):
        from taosr1.spark import remote

        return remote.write_tables(stage, plan.quarantined, t.output, t.quarantine, run_id, date, rows_in,
                                   grades_schema, quarantine_schema, cfg.keep_staging, opts, log, plan.reused)
    return staging.write_tables(stage, plan.quarantined, t.output, t.quarantine, run_id, date, rows_in, grades_schema,
                                quarantine_schema, cfg.keep_staging, log, plan.reused)


def _run_record(spark, cfg: NightlyConfig, t: _Tables, plan: _Plan, counts: dict[str, int], reuse, writer: str,
                run_id: str, date, rows_in: int, model_path: str, scheme, beta: float, started_at, seconds: float,
                log) -> dict[str, Any]:
    """The runs table's row (schemas/runs.yaml), and one log line per worker."""
    lc = cfg.label
    workers = plan.stats.value
    for wid, w in sorted(workers.items()):
        log(f"run {run_id}: worker {wid}: {w.get('rows', 0)} rows graded in {w.get('score_seconds', 0):.1f} s, "
            f"prepare {w.get('prepare_seconds', 0):.1f} s, {w.get('loads', 0)} engine load(s) "
            f"({w.get('load_seconds', 0):.1f} s), threads {w.get('threads', 0)}, GPU {w.get('gpu') or '-'}")
    padding = sum(w.get("padding_tokens", 0) for w in workers.values())
    computed = sum(w.get("computed_tokens", 0) for w in workers.values())
    return {
        "run_id": run_id,
        "run_date": date,
        "status": "succeeded",
        "started_at": started_at,
        "finished_at": dt.datetime.now(dt.timezone.utc),
        "input": t.input,
        "output": t.output,
        "quarantine": t.quarantine,
        "model": Path(model_path).name,
        "engine": lc.engine.engine,
        "label_scheme": scheme.name,
        "prompt_version": lc.prompt.version,
        "beta": float(beta),
        "rows_in": rows_in,
        "graded": counts["graded"],
        "quarantined": counts["quarantined"],
        "reused": counts.get("reused", 0),
        "reuse": reuse.note,
        "fingerprints_added": counts.get("fingerprints_added", 0),
        "seconds": round(seconds, 3),
        "items_per_s": round(counts["graded"] / seconds, 3) if seconds > 0 else 0.0,
        # EngineStats' measure, as `taosr1 label` reports it: the share of computed positions that
        # were not padding (real / computed would exceed 1 where a reused shared prefix counts for every row)
        "padding_efficiency": round(EngineStats(padding_tokens=padding, computed_tokens=computed).padding_efficiency, 4)
        if computed else None,
        "partitions": plan.partitions,
        "workers": sum(1 for w in workers.values() if w.get("rows", 0) > 0),
        "gpus": ",".join(sorted({w["gpu"] for w in workers.values() if w.get("gpu")})),
        "engine_loads": sum(w.get("loads", 0) for w in workers.values()),
        "config_hash": config_hash(dataclasses.replace(cfg, storage_options={})),  # no credentials hashed
        "spark_app_id": spark.sparkContext.applicationId,
        "writer": writer,
        "grades_version": counts["grades_version"],
        "quarantine_version": counts["quarantine_version"],
        "resumed_rows": counts.get("resumed_rows", 0),  # staged by the run resumed, not graded again
    }


def _open_reuse(spark, cfg, writer, output, run_id, resume, model_path, scheme, beta, log):
    """The fingerprint lookup of `reuse: previous` (taosr1/nightly/incremental.py); off with the spark writer."""
    from taosr1.nightly import incremental as I
    from taosr1.storage.delta import STAGING

    if cfg.reuse == "off":
        return I.Reuse("off")
    if writer != "delta-rs":
        log("warning: reuse previous needs the delta-rs writer; grading every row")
        return I.Reuse("off", note="full run: reuse needs the delta-rs writer")
    path = cfg.fingerprints or I.default_path(output)
    staged = stores.join(output, STAGING, run_id)
    pin = I.pinned_version(staged, stores.options_for(staged, cfg.storage_options)) if resume else I.UNPINNED
    context = I.context_for(spark, cfg.label, model_path, scheme, beta)
    reuse = I.open_lookup(spark, cfg.reuse, path, context, log, pin, stores.options_for(path, cfg.storage_options))
    log(f"run {run_id}: reuse previous: {reuse.note}")
    return reuse


def _spark_type(type_name: str):
    from pyspark.sql.types import _parse_datatype_json_value

    return _parse_datatype_json_value(type_name)


def _with_partition(spark_schema):
    """The Delta table's Arrow schema: the run's columns plus the run_date partition column."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(spark_schema).append(pa.field(PARTITION, pa.date32()))


def resume_hash(cfg: NightlyConfig) -> str:
    """The config hash a resumed run must match: fault switches, alerts, keep_staging and storage options left out."""
    return config_hash(dataclasses.replace(cfg, fault=FaultConfig(), alert=AlertConfig(), keep_staging=False,
                                           storage_options={}))


def _append_run(spark, runs: str, record: dict[str, Any], writer: str, storage_options=None) -> None:
    import pyarrow as pa

    from taosr1.storage import contracts, delta

    columns = contracts.output_contract("runs").added_columns()
    schema = contracts.arrow_schema(columns)
    table = pa.Table.from_pylist([{c.name: record[c.name] for c in columns}], schema=schema)
    if writer == "delta-rs":
        delta.append_rows(runs, table, storage_options)
    else:
        spark.createDataFrame(table.to_pandas()).write.format("delta").mode("append").save(runs)


def record_json(record: dict[str, Any]) -> str:
    return json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in record.items()})
