"""Incremental nightly runs (`reuse: previous`): grade only the pairs no committed run graded.

A fingerprint table (Delta, schemas/fingerprints.json, partitioned by grading context)
maps a pair's grading fingerprint (taosr1/labeling/fingerprint.py) to the grade an earlier
committed run gave it. The job left-joins its input rows to it in Spark (JVM only),
after the duplicate-key window and before the Python stages: matched rows are carried
into the new date's partition with `graded_run_id` naming the run that graded them,
without being validated, tokenized or graded again; the rest go through the job as before. After the grades commit, the run appends the
fingerprints it graded. A missing, unreadable or foreign table means a full run and
one warning line; it never fails the night and is never written over.

Exactly-once: reused rows are staged beside graded ones and land in the same one-commit
partition replace; a resumed run reads the fingerprint version its first attempt read
(pinned in the staging manifest), so each row is staged once, graded or reused.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

MODES = ("off", "previous")
TABLE_NAME = "taosr1_fingerprints"  # the table's Delta name: a table without it is foreign
DESCRIPTION = "taosr1 grading fingerprints (schemas/fingerprints.json)"
FOLDER = "_fingerprints"  # default location under the grades table (hidden from its readers)
PARTITION = "context"
FP = "_taosr1_fp"  # hidden column: the row's fingerprint (null for rows not to grade)
PREFIX = "_taosr1_fp_"  # hidden columns: the matched earlier grade
CARRIED = ("grade", "label", "tier", "score", "probs", "prompt_tokens", "truncated", "graded_run_id")
HIDDEN = (FP, *(PREFIX + c for c in CARRIED))


def default_path(output: str) -> str:
    return f"{output.rstrip('/')}/{FOLDER}"


def context_for(spark, lc, model_path: str, scheme, beta: float) -> str:
    """The grading context of this run (fingerprint.grading_context). The device is the
    engine's setting plus whether Spark gives tasks GPUs: `auto` means bfloat16 on a GPU."""
    from taosr1.core.prompts import PromptBuilder
    from taosr1.labeling.fingerprint import grading_context, model_fingerprint, prompt_identity
    from taosr1.labeling.models import load_tokenizer

    gpus = spark.conf.get("spark.task.resource.gpu.amount", "0") or "0"
    device = f"{lc.engine.device}/{'gpu' if float(gpus) > 0 else 'cpu'}"
    prompt = prompt_identity(PromptBuilder(load_tokenizer(model_path), scheme, lc.prompt))
    return grading_context(model_fp=model_fingerprint(model_path), scheme=scheme, prompt=prompt,
                           beta=beta, engine=lc.engine.engine, dtype=lc.engine.dtype, device=device)


def table_schema():
    """The fingerprint table's Arrow schema (schemas/fingerprints.json), partition column last."""
    from taosr1.storage import contracts

    return contracts.arrow_schema(contracts.output_contract("fingerprints").added_columns())


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


@dataclass
class Reuse:
    """What this run reuses: the fingerprint table snapshot it read and the lookup frame."""

    mode: str
    location: Any = None  # the fingerprint table (a storage Location)
    context: str | None = None
    version: int | None = None  # the table version read; None: nothing read
    lookup: Any = None  # persisted Spark frame (FP + PREFIX columns), None: nothing to reuse
    rows: int = 0  # distinct fingerprints in the lookup
    note: str = "off"  # recorded in the runs table
    writable: bool = False  # append this run's fingerprints after the commit

    @property
    def path(self) -> str | None:
        return self.location.uri if self.location is not None else None

    @property
    def on(self) -> bool:
        return self.mode != "off"

    @property
    def snapshot(self) -> dict[str, Any] | None:
        """Pinned in the resume manifest: a resumed run must reuse exactly what its first attempt did."""
        return None if not self.on else {"path": self.path, "context": self.context, "version": self.version}

    def release(self) -> None:
        if self.lookup is not None:
            self.lookup.unpersist()


UNPINNED = object()


def pinned_version(staging) -> Any:
    """The fingerprint version a staged run read (the manifest in `staging`, a Location), or UNPINNED."""
    import json

    from taosr1.spark.staging import MANIFEST

    try:
        snap = json.loads(staging.fs.cat_file(f"{staging.fs_path}/{MANIFEST}")).get("fingerprints")
    except (OSError, ValueError):
        return UNPINNED
    return snap["version"] if snap else UNPINNED


def open_lookup(spark, mode: str, table, context: str, log: Callable[[str], None], pin: Any = UNPINNED) -> Reuse:
    """Read the fingerprints of `context` from `table` (a Location, local or on an object store; at
    version `pin` when resuming) into a persisted, de-duplicated lookup frame; any problem is a full
    run with one warning line."""
    reuse = Reuse(mode, table, context)
    if mode == "off":
        return reuse

    def full(why: str, writable: bool) -> Reuse:
        reuse.note, reuse.writable = f"full run: {why}", writable
        log(f"warning: reuse previous: {why}; grading every row")
        return reuse

    if pin is None:
        return full(f"the resumed run read no fingerprint table at {table.uri}", True)
    dt, why, writable = _open_table(table, pin)
    if dt is None:
        return full(why, writable)
    reuse.version = dt.version()
    try:
        files = dt.file_uris(partition_filters=[(PARTITION, "=", context)])
    except Exception as e:  # noqa: BLE001
        return full(f"fingerprint table {table.uri} is unreadable ({_why(e)}; not written)", False)
    reuse.writable = True
    if not files:
        return full(f"no fingerprints of this grading context (model, prompt, scheme, beta, engine) in {table.uri} "
                    f"version {reuse.version}", True)
    try:
        reuse.lookup = _lookup_frame(spark, files, table).persist()
        reuse.rows = reuse.lookup.count()  # reads every page now: a corrupt file fails here, not mid-run
    except Exception as e:  # noqa: BLE001
        reuse.release()
        reuse.lookup, reuse.version = None, None
        return full(f"fingerprint table {table.uri} is unreadable ({_why(e)}; not written)", False)
    reuse.note = f"reused from {table.uri} version {reuse.version} ({reuse.rows} fingerprints of this context)"
    return reuse


def _open_table(table, pin: Any):
    """(the fingerprint DeltaTable at `pin`, None, True), or (None, why there is none to read, whether this
    run may start or append to one there)."""
    from deltalake import DeltaTable, Schema

    from taosr1.storage import delta

    path = table.uri
    try:
        fs, base = table.fs, table.fs_path
        fs.invalidate_cache()  # other runs write the table: list it afresh
        if not fs.isdir(f"{base}/_delta_log"):
            if fs.isdir(base) and any(posixpath.basename(p.rstrip("/")) != delta.STAGING
                                      for p in fs.ls(base, detail=False)):
                return None, f"{path} holds files but no Delta table (a foreign folder; not written)", False
            return None, f"no fingerprint table at {path} yet (this run starts it)", True
    except Exception as e:  # noqa: BLE001 (a location it cannot list: a full run, never a failed night)
        return None, f"fingerprint table {path} cannot be listed ({_why(e)}; not written)", False
    try:
        dt = DeltaTable(table.path, version=None if pin is UNPINNED else pin, storage_options=table.delta_options)
        name, fields = dt.metadata().name, delta._fields(dt.schema())
    except Exception as e:  # noqa: BLE001 (any failure to read the log: a full run, never a failed night)
        return None, f"fingerprint table {path} is unreadable ({_why(e)}; not written)", False
    if name != TABLE_NAME or fields != delta._fields(Schema.from_arrow(table_schema())):
        return None, (f"{path} is not a taosr1 fingerprint table (name {name!r}, columns "
                      f"{[n for n, _ in fields]}; not written)"), False
    return dt, None, True


def read_parquet(spark, files: list[str], schema, store):
    """Parquet files of the table `store` (a Location) as a Spark frame of Arrow `schema`: Spark's reader
    for local files; on an object store, the executors read them with pyarrow (no S3A jars needed)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    if files and store.is_remote:
        from taosr1.spark import remote as R

        return R.read_files(spark, "parquet", [(f, {}) for f in files], schema, store)
    return spark.read.schema(from_arrow_schema(schema)).parquet(*files)


def _lookup_frame(spark, files: list[str], table):
    """FP -> the earlier grade, one row per fingerprint (the least graded_run_id where a
    fingerprint was appended twice by runs racing for different dates)."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    file_schema = pa.schema([f for f in table_schema() if f.name != PARTITION])
    df = read_parquet(spark, files, file_schema, table)
    ordered = ["graded_run_id", *(c for c in CARRIED if c != "graded_run_id")]
    best = df.groupBy("fingerprint").agg(F.min(F.struct(*ordered)).alias("g"))
    return best.select(F.col("fingerprint").alias(FP), *[F.col(f"g.{c}").alias(PREFIX + c) for c in CARRIED])


def attach(df, reuse: Reuse, fields: dict[str, str], keys: list[str], dup_col: str):
    """Add FP (to first occurrences of non-null keys: the only rows that may be reused) and,
    with a lookup, the matched earlier grade: a left join, in Spark."""
    from pyspark.sql import functions as F

    from taosr1.labeling.fingerprint import fingerprint_column

    if not reuse.on:
        return df
    eligible = ~F.col(dup_col)
    for k in keys:
        eligible = eligible & F.col(f"`{k}`").isNotNull()
    df = df.withColumn(FP, F.when(eligible, fingerprint_column(reuse.context, fields)))
    if reuse.lookup is None:
        return df
    return df.join(reuse.lookup, on=FP, how="left")


def without_lookup(df):
    """`df` without the matched-grade columns (FP kept: the fingerprint update needs it)."""
    return df.select(*[f"`{c}`" for c in df.columns if not c.startswith(PREFIX)])


def is_reused(reuse: Reuse):
    from pyspark.sql import functions as F

    return F.lit(False) if reuse.lookup is None else F.col(PREFIX + "graded_run_id").isNotNull()


def reused_rows(attached, reuse: Reuse, input_names: list[str], grade_cols, scheme,
                constants: dict[str, Any], run_id: str):
    """The matched rows as grades rows: input columns, the earlier grade, this run's constants,
    run_id (this run) and graded_run_id (the run that graded them); None without a lookup."""
    from pyspark.sql import functions as F

    if reuse.lookup is None:
        return None
    probs = {p: i for i, p in enumerate(scheme.prob_columns)}
    cols = [F.col(f"`{c}`") for c in input_names]
    for c in grade_cols:
        if c.name in probs:
            value = F.col(PREFIX + "probs")[probs[c.name]]
        elif c.name in constants:
            value = F.lit(constants[c.name])
        else:
            value = F.col(PREFIX + c.name)
        cols.append(value.cast(c.type).alias(c.name))
    cols += [F.lit(run_id).alias("run_id"), F.col(PREFIX + "graded_run_id").alias("graded_run_id")]
    return attached.filter(is_reused(reuse)).select(*cols)


def record(spark, reuse: Reuse, prepared, *, output, grades_version: int, partition: tuple[str, str],
           keys: list[str], scheme, run_id: str, run_date, log: Callable[[str], None]) -> int:
    """Append the fingerprints this run graded (not reused) to the table, after the grades commit.

    Reads this run's committed grade files (of `output`, the grades table's Location), joins them to the prepared (not reused) rows'
    fingerprints by key in Spark, writes Parquet with Spark and commits once with delta-rs. Returns the rows
    appended. A failure is a warning: the grades are committed and the next run regrades.
    """
    if not reuse.on or not reuse.writable:
        return 0
    try:
        return _record(spark, reuse, prepared, output, grades_version, partition, keys, scheme, run_id, run_date)
    except Exception as e:  # noqa: BLE001 (the grades are committed; a missing fingerprint costs a regrade)
        log(f"warning: reuse previous: could not update the fingerprint table {reuse.path} ({_why(e)}); "
            "the next run grades these rows again")
        return 0


def _record(spark, reuse, prepared, output, grades_version, partition, keys, scheme, run_id, run_date) -> int:
    import pyarrow as pa
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    from taosr1.storage import delta

    part_col, value = partition
    grades = DeltaTable(output.path if output.is_remote else str(delta.local_path(output)), version=grades_version,
                        storage_options=output.delta_options)
    files = grades.file_uris(partition_filters=[(part_col, "=", value)])
    mine = [f for f in files if posixpath.basename(f).startswith(f"{run_id}-")]
    if not mine:
        return 0
    grades_file = pa.schema([f for f in pa.schema(grades.schema().to_arrow()) if f.name != part_col])
    graded = (read_parquet(spark, mine, grades_file, output).filter(F.col("graded_run_id") == run_id)
              .select(*[F.col(f"`{k}`") for k in keys], "grade", "label", "tier", "score",
                      F.array(*[F.col(p) for p in scheme.prob_columns]).alias("probs"), "prompt_tokens", "truncated"))
    fps = prepared.filter(F.col(FP).isNotNull()).select(*[F.col(f"`{k}`") for k in keys], FP)
    file_schema = pa.schema([f for f in table_schema() if f.name != PARTITION])
    new = (graded.join(fps, on=keys, how="inner")
           .select(F.col(FP).alias("fingerprint"), *[c for c in CARRIED if c != "graded_run_id"],
                   F.lit(run_id).alias("graded_run_id"), F.lit(run_date).cast("date").alias("graded_date"))
           .dropDuplicates(["fingerprint"]))
    new = new.select(*[F.col(f.name) for f in file_schema])
    if reuse.location.is_remote:
        return _append_remote(new, reuse, file_schema, run_id)
    root = delta.local_path(reuse.location)
    staging = root / delta.STAGING / run_id
    new.write.mode("overwrite").parquet(str(staging))
    staged = delta.staged_files(staging)
    try:
        return append_files(root, staged, reuse.context, run_id)
    finally:
        delta.remove_staging(root, run_id)


def _append_remote(new, reuse: Reuse, file_schema, run_id: str) -> int:
    """The object-store form of the append: executors stage the new fingerprints as objects,
    the driver commits them in ONE delta-rs append (retried on a conflict)."""
    from taosr1.spark import remote as R
    from taosr1.storage import delta

    staging = reuse.location.join(delta.STAGING, run_id)
    R.remove(staging)
    try:
        R.stage_rows(new, staging, file_schema)
        files = R.staged(staging)
        if not files:
            return 0
        commit = R.commit_files(reuse.location, files, table_schema(), PARTITION, reuse.context, run_id=run_id,
                                mode="append", name=TABLE_NAME, description=DESCRIPTION)
        return commit.rows
    finally:
        R.remove(staging)


def append_files(root: Path, staged: list[Path], context: str, run_id: str) -> int:
    """Move staged Parquet files into the context partition and commit them in ONE append."""
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    from taosr1.storage import delta

    part_dir = root / f"{PARTITION}={context}"
    part_dir.mkdir(parents=True, exist_ok=True)
    actions, rows = [], 0
    for f in staged:
        n, stats = delta.file_stats(f)
        if n == 0:
            continue
        target = part_dir / f"{run_id}-{uuid.uuid4().hex[:8]}-{f.name}"
        os.replace(f, target)
        st = target.stat()
        actions.append(AddAction(path=f"{PARTITION}={context}/{target.name}", size=st.st_size,
                                 partition_values={PARTITION: context}, modification_time=int(st.st_mtime * 1000),
                                 data_change=True, stats=stats))
        rows += n
    if not actions:
        return 0
    props = CommitProperties(custom_metadata={"taosr1.run_id": run_id})
    schema = Schema.from_arrow(table_schema())

    def commit() -> None:
        if DeltaTable.is_deltatable(str(root)):
            DeltaTable(str(root)).create_write_transaction(actions, mode="append", schema=schema,
                                                           partition_by=[PARTITION], commit_properties=props)
        else:
            create_table_with_add_actions(str(root), schema, actions, mode="error", partition_by=[PARTITION],
                                          name=TABLE_NAME, description=DESCRIPTION, commit_properties=props)

    delta.with_conflict_retry(commit, f"{root} append")
    return rows
