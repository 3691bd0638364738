"""The nightly job on object-store tables, without Hadoop's S3A jars.

Spark reads and writes `s3a://` only with the hadoop-aws jars, which many clusters (and
this project's CI) lack. So for an object-store location:
- input: the driver lists the files with fsspec (a Delta table's current files through
  delta-rs), one Spark partition per file, and executors read them with pyarrow;
- staging: executors write each grading partition as ONE Parquet object under
  `TABLE/_staging/RUN_ID/` (a PUT is atomic: a retried task replaces the same object, so no
  row is staged twice);
- commit: the driver copies the staged objects into the date's partition folder (invisible
  until the log names them) and replaces the partition in one delta-rs commit on the
  object store, retried when another run's commit won the race.

Every location is a taosr1.storage.location.Location, resolved once by the caller: its
filesystem and options travel to the executors with it (pickled; each builds its filesystem
on first use).
"""

from __future__ import annotations

import codecs
import functools
import json
import posixpath
from typing import Any, Iterator

from taosr1.storage.location import Location, name_format

ROWS_PER_BATCH = 8192


# ---------------------------------------------------------------- input

def detect_format(source: Location) -> str:
    if source.is_delta():
        return "delta"
    ext = name_format(source.uri)
    if ext and ext != "delta":
        return "json" if ext == "jsonl" else ext
    if source.is_dir():
        return "parquet"
    raise ValueError(f"cannot tell the format of {source.uri}; pass --input-format")


def _files(source: Location, fmt: str) -> list[tuple[str, dict[str, str]]]:
    """[(file URI, partition values)] in a fixed order (the read order of the duplicate-key window)."""
    if fmt == "delta":
        return _delta_files(source)
    fs, path = source.fs, source.fs_path
    if not fs.exists(path):
        raise FileNotFoundError(f"input {source.uri} does not exist")
    if fs.isdir(path):
        names = [p for p in fs.find(path) if not posixpath.basename(p).startswith(("_", "."))]
    else:
        names = [path]
    return [(f"{source.protocol}://{p}", {}) for p in sorted(names)]


def _delta_files(source: Location) -> list[tuple[str, dict[str, str]]]:
    import pyarrow as pa

    from taosr1.storage.tables import delta_table

    table = delta_table(source)
    proto_v = table.protocol()
    if proto_v.min_reader_version > 1:
        raise ValueError(f"{source.uri}: Delta reader version {proto_v.min_reader_version} (features "
                         f"{proto_v.reader_features}) is not read here; use the delta-spark writer's cluster")
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    parts = table.metadata().partition_columns
    root = source.path.rstrip("/")
    value = (lambda v: None if v is None else str(v))  # cast back to the column's type by the reader
    return sorted((f"{root}/{a['path']}", {c: value(a.get(f"partition.{c}")) for c in parts}) for a in actions)


def _open(loc: Location, uri: str):
    """A file of `loc`'s store (a URI of it) open for reading, through `loc`'s filesystem."""
    return loc.fs.open(loc.fs._strip_protocol(uri), "rb")


def _text(f, uri: str, encoding: str):
    """A CSV or JSON file's bytes as UTF-8 for pyarrow (which reads no other encoding); a file that
    is not `encoding` text fails naming it."""
    import pyarrow as pa

    raw = f.read()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"{uri} is not {encoding} text: byte(s) 0x{raw[e.start]:02x} at offset {e.start} cannot "
                         "be decoded; set the input's encoding (label.encoding)") from None
    return pa.BufferReader(raw if codecs.lookup(encoding).name == "utf-8" else text.encode("utf-8"))


def _read_file(fmt: str, uri: str, loc: Location, schema=None, encoding: str = "utf-8"):
    """One input file as an Arrow table; CSV cells as text, unchanged (as `taosr1 label` reads them)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    with _open(loc, uri) as f:
        if fmt == "parquet":
            return pq.read_table(f)
        if fmt == "csv":
            data = _text(f, uri, encoding)
            names = schema.names if schema is not None else pacsv.open_csv(data).schema.names
            data.seek(0)
            return pacsv.read_csv(data, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                  convert_options=pacsv.ConvertOptions(
                                      column_types={n: pa.string() for n in names}, strings_can_be_null=False,
                                      quoted_strings_can_be_null=False))
        if fmt == "json":
            opts = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") if schema else None
            return pajson.read_json(_text(f, uri, encoding), parse_options=opts)
    raise ValueError(f"format {fmt!r} cannot be read from an object store here")


def _arrow_schema(source: Location, fmt: str, files, encoding: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "delta":
        from taosr1.storage.tables import delta_table

        return pa.schema(delta_table(source).schema().to_arrow())
    if not files:
        raise FileNotFoundError(f"input {source.uri} holds no data files")
    if fmt == "parquet":
        schemas = []
        for uri, _ in files:
            with _open(source, uri) as f:
                schemas.append(pq.read_schema(f))
        return pa.unify_schemas(schemas)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        with _open(source, files[0][0]) as f:
            return pa.schema([(n, pa.string()) for n in pacsv.open_csv(_text(f, files[0][0], encoding)).schema.names])
    return _read_file("json", files[0][0], source, encoding=encoding).schema


def read_input(spark, source: Location, fmt: str, encoding: str = "utf-8"):
    """The object-store input as a Spark DataFrame, read by the executors with pyarrow."""
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "table":
        return spark.table(source.uri)
    files = _files(source, fmt)
    return read_files(spark, fmt, files, _arrow_schema(source, fmt, files, encoding), source, encoding)


def read_files(spark, fmt: str, files: list[tuple[str, dict[str, str]]], schema, store: Location,
               encoding: str = "utf-8"):
    """[(file URI, partition values)] of `store`'s object store as a Spark DataFrame of Arrow `schema`: one
    partition per file, read by the executors with pyarrow (`fmt` "delta" or "parquet" for Parquet files)."""
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import StringType, StructField, StructType

    spark_schema = from_arrow_schema(schema)
    if not files:
        return spark.createDataFrame([], spark_schema)
    rows = [(uri, json.dumps(parts)) for uri, parts in files]
    listing = spark.createDataFrame(spark.sparkContext.parallelize(rows, len(rows)),
                                    StructType([StructField("uri", StringType()), StructField("parts", StringType())]))
    return listing.mapInArrow(functools.partial(_read_files, fmt, schema, store, encoding), spark_schema)


def _read_files(fmt: str, schema, store: Location, encoding: str, batches: Iterator[Any]) -> Iterator[Any]:
    import pyarrow as pa

    for batch in batches:
        for uri, parts in zip(batch.column("uri").to_pylist(), batch.column("parts").to_pylist()):
            kind = "parquet" if fmt == "delta" else fmt
            file_schema = pa.schema([f for f in schema if f.name not in json.loads(parts)])
            table = _read_file(kind, uri, store, file_schema if kind in ("csv", "json") else None, encoding)
            for name, value in json.loads(parts).items():
                table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
            missing = [n for n in schema.names if n not in table.column_names]
            if missing:
                raise ValueError(f"{uri}: column(s) {missing} missing (the input's other files have them)")
            yield from table.select(schema.names).cast(schema).to_batches(max_chunksize=ROWS_PER_BATCH)


# ---------------------------------------------------------------- staging (executors)

def _put_parquet(folder: Location, name: str, table) -> None:
    """Write `table` as ONE object: it appears whole or not at all (no partial file on failure)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    folder.fs.pipe_file(f"{folder.fs_path}/{name}", sink.getvalue().to_pybytes())


def stage_grades_fn(spec, out_columns, file_schema, folder: Location, run_id: str, stats=None,
                    done: dict[int, int] | None = None, fail_batch: int = 0, fail_partition: int = -1, partitions: int = 0):
    """mapInArrow function: grade a partition, stage it as `part-<partition>.parquet` in `folder`
    (written even when empty: the object is the partition's done marker). Partitions in `done`
    (staged by the run being resumed) are skipped without loading the engine. The fault
    switches are dispatch.stage_fn's."""
    return functools.partial(_stage_grades, spec, out_columns, file_schema, folder, run_id, stats,
                             done or {}, fail_batch, fail_partition, partitions)


def _result_schema():
    import pyarrow as pa

    return pa.schema([("partition", pa.int32()), ("rows", pa.int64())])


def _stage_grades(spec, out_columns, file_schema, folder, run_id, stats, done, fail_batch, fail_partition,
                  partitions, batches):
    import pyarrow as pa
    from pyspark import TaskContext

    from taosr1.spark import dispatch as D

    ctx = TaskContext.get()
    part, attempt = ctx.partitionId(), ctx.attemptNumber()
    if part in done:  # staged by the run this one resumes: not graded again
        for _ in batches:
            pass
        yield pa.RecordBatch.from_pylist([{"partition": part, "rows": done[part]}], schema=_result_schema())
        return
    if part == fail_partition:
        _wait_for_others(folder, partitions)
        raise D.InjectedFault(f"injected fault: partition {part} fails on every attempt (attempt {attempt})")
    tables = list(D.graded_tables(spec, out_columns, stats, D._faulty(batches, fail_batch, attempt), run_id, file_schema))
    table = pa.concat_tables(tables) if tables else file_schema.empty_table()
    _put_parquet(folder, f"{GRADED_PREFIX}{part:05d}.parquet", table)
    yield pa.RecordBatch.from_pylist([{"partition": part, "rows": table.num_rows}], schema=_result_schema())


def _wait_for_others(folder: Location, partitions: int, timeout: float = 120) -> None:
    """fail_partition: let the other partitions stage first, so the run dies with most work done."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(staged_partitions(folder)) < partitions - 1:
        time.sleep(0.2)


GRADED_PREFIX = "part-"  # a grading partition's object: part-<partition>.parquet


def staged_partitions(folder: Location) -> dict[int, int]:
    """{partition: rows} of the grading partitions staged in `folder` (each one object, PUT whole)."""
    import pyarrow.parquet as pq

    done = {}
    for f in staged(folder):
        name = posixpath.basename(f)
        if name.startswith(GRADED_PREFIX):
            with folder.fs.open(f, "rb") as fh:
                done[int(name[len(GRADED_PREFIX):].split(".")[0])] = pq.ParquetFile(fh).metadata.num_rows
    return done


def stage_rows_fn(folder: Location, file_schema, prefix: str = ""):
    """mapInArrow function: stage a partition's rows (the quarantine, reused grades, fingerprints)
    as one Parquet object `<prefix>part-<partition>.parquet`."""
    return functools.partial(_stage_rows, folder, file_schema, prefix)


def stage_rows(frame, folder: Location, file_schema, prefix: str = "") -> None:
    """Stage every partition of `frame` under `folder` from the executors."""
    frame.mapInArrow(stage_rows_fn(folder, file_schema, prefix), _result_struct()).collect()


def _result_struct():
    from pyspark.sql.types import IntegerType, LongType, StructField, StructType

    return StructType([StructField("partition", IntegerType()), StructField("rows", LongType())])


def _stage_rows(folder, file_schema, prefix, batches):
    import pyarrow as pa
    from pyspark import TaskContext

    part = TaskContext.get().partitionId()
    got = [pa.Table.from_batches([b]).cast(file_schema) for b in batches]
    rows = sum(t.num_rows for t in got)
    if rows:
        _put_parquet(folder, f"{prefix}part-{part:05d}.parquet", pa.concat_tables(got))
    yield pa.RecordBatch.from_pylist([{"partition": part, "rows": rows}], schema=_result_schema())


# ---------------------------------------------------------------- commit (driver)

def staged(folder: Location) -> list[str]:
    """The Parquet objects staged in `folder` (paths inside its filesystem), in partition order."""
    fs, base = folder.fs, folder.fs_path
    fs.invalidate_cache()  # the executors wrote these objects; the driver's listing cache is stale
    if not fs.exists(base):
        return []
    return sorted(p for p in fs.find(base) if p.endswith(".parquet") and not posixpath.basename(p).startswith((".", "_")))


def count_rows(folder: Location, files: list[str]) -> int:
    import pyarrow.parquet as pq

    total = 0
    for f in files:
        with folder.fs.open(f, "rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def commit_files(table: Location, files: list[str], arrow_schema, partition_col: str, value: str, *, run_id: str,
                 mode: str = "overwrite", name: str | None = None, description: str | None = None):
    """Commit the staged `files` into `partition_col = value` of `table` in one commit: `overwrite`
    makes them the whole partition, `append` adds them. A new table gets `name` and `description`."""
    from deltalake import CommitProperties, Schema

    from taosr1.storage import delta

    delta.check_schema(table, arrow_schema)
    actions, rows = _add_actions(table, files, partition_col, value, run_id)
    props = CommitProperties(custom_metadata={"taosr1.run_id": run_id})
    delta_schema = Schema.from_arrow(arrow_schema)

    def commit() -> None:
        from deltalake import DeltaTable
        from deltalake.transaction import create_table_with_add_actions

        uri, options = table.path, table.delta_options
        if DeltaTable.is_deltatable(uri, storage_options=options):
            DeltaTable(uri, storage_options=options).create_write_transaction(
                actions, mode=mode, schema=delta_schema, partition_by=[partition_col],
                partition_filters=[(partition_col, "=", value)] if mode == "overwrite" else None,
                commit_properties=props)
        else:
            create_table_with_add_actions(uri, delta_schema, actions, mode="error", partition_by=[partition_col],
                                          name=name, description=description, commit_properties=props,
                                          storage_options=options)

    delta.with_conflict_retry(commit, f"{table.uri} {partition_col}={value}")
    return delta.Commit(version=commit_version(table, run_id), files=len(actions), rows=rows)


def _add_actions(table: Location, files: list[str], partition_col: str, value: str, run_id: str):
    """Copy the staged `files` into the partition's folder (server side; no reader sees them until the
    log names them); their add actions and rows."""
    from deltalake.transaction import AddAction

    from taosr1.storage import delta

    fs, root = table.fs, table.fs_path
    actions, rows = [], 0
    for f in files:
        with fs.open(f, "rb") as fh:
            n, stats = delta.file_stats(fh)
        if n == 0:
            continue
        rel = f"{partition_col}={value}/{run_id}-{posixpath.basename(f)}"
        fs.copy(f, f"{root}/{rel}")
        info = fs.info(f"{root}/{rel}")
        mtime = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
        millis = int(mtime.timestamp() * 1000) if hasattr(mtime, "timestamp") else int(float(mtime or 0) * 1000)
        actions.append(AddAction(path=rel, size=int(info["size"]), partition_values={partition_col: value},
                                 modification_time=millis, data_change=True, stats=stats))
        rows += n
    return actions, rows


def commit_version(table: Location, run_id: str) -> int:
    """The version of the newest commit made by `run_id`, read from the log (see delta.commit_version)."""
    fs, root = table.fs, table.fs_path
    logs = sorted((p for p in fs.ls(f"{root}/_delta_log", detail=False, refresh=True)
                   if posixpath.basename(p)[:1].isdigit() and p.endswith(".json")), reverse=True)
    for f in logs:
        for line in fs.cat_file(f).decode().splitlines():
            info = json.loads(line).get("commitInfo")
            if info is not None and info.get("taosr1.run_id") == run_id:
                return int(posixpath.basename(f).split(".")[0])
    raise RuntimeError(f"{table.uri}: no commit of run {run_id} in the log")


def remove(folder: Location) -> None:
    if folder.fs.exists(folder.fs_path):
        folder.fs.rm(folder.fs_path, recursive=True)


REUSED_PREFIX = "reused-"  # staged reused rows, beside the graded partitions


def open_staging(stage, g_stage: Location, q_stage: Location, log) -> dict[int, int]:
    """Make the run's staging folders ready; returns the partitions a resumed run staged.

    A fresh run empties both folders and writes its manifest. A resumed run checks the
    manifest, keeps its graded partitions and drops the rest (the reused rows and the
    quarantine are staged again: they cost no grading)."""
    from taosr1.spark.staging import MANIFEST, check_resume

    fs, manifest = g_stage.fs, f"{g_stage.fs_path}/{MANIFEST}"
    remove(q_stage)
    if not stage.resume:
        remove(g_stage)
        fs.pipe_file(manifest, json.dumps(stage.manifest).encode())
        return {}
    fs.invalidate_cache()
    check_resume(json.loads(fs.cat_file(manifest)) if fs.exists(manifest) else None, stage, stage.run_id,
                 g_stage.uri)
    for f in staged(g_stage):
        if posixpath.basename(f).startswith(REUSED_PREFIX):
            fs.rm(f)
    done = staged_partitions(g_stage)
    log(f"run {stage.run_id}: resuming, {len(done)} of {stage.partitions} partition(s) staged "
        f"({sum(done.values())} rows not graded again)")
    return done


def stage_tables(stage, output: Location, quarantine: Location, log):
    """Grade and stage both tables from the executors through fsspec (`stage.reused`, rows carried from
    earlier runs as grades rows, beside the graded ones); counted, nothing committed (staging.Staged)."""
    from taosr1.spark.staging import Staged, check_counts, file_schema
    from taosr1.storage.delta import STAGING

    g_stage, q_stage = output.join(STAGING, stage.run_id), quarantine.join(STAGING, stage.run_id)
    done = open_staging(stage, g_stage, q_stage, log)
    g_file, q_file = file_schema(stage.grades_schema), file_schema(stage.quarantine_schema)
    fn = stage_grades_fn(stage.spec, stage.out_columns, g_file, g_stage, stage.run_id, stage.stats, done,
                         stage.fault.fail_batch, stage.fault.fail_partition, stage.partitions)
    stage.to_grade.mapInArrow(fn, _result_struct()).collect()
    if stage.reused is not None:
        stage_rows(stage.reused, g_stage, g_file, REUSED_PREFIX)
    stage_rows(stage.quarantined, q_stage, q_file)
    log(f"run {stage.run_id}: graded and staged under {g_stage.uri}")
    g_files, q_files = staged(g_stage), staged(q_stage)
    result = Staged(stage, g_files, q_files, graded=count_rows(g_stage, g_files),
                    quarantined=count_rows(q_stage, q_files), resumed=sum(done.values()),
                    reused=count_rows(g_stage, [f for f in g_files if posixpath.basename(f).startswith(REUSED_PREFIX)]),
                    folders=(g_stage, q_stage))
    check_counts(stage.rows_in, result.graded, result.quarantined,
                 f"staged files kept in {g_stage.uri} and {q_stage.uri}")
    return result


def commit_tables(staged, output: Location, quarantine: Location, date, keep_staging: bool, log) -> dict[str, int]:
    """Commit what `stage_tables` staged, each table once (quarantine first), then drop the staging."""
    from taosr1.core.names import PARTITION
    from taosr1.spark.staging import die_if

    stage, value = staged.stage, date.isoformat()
    die_if(stage.fault.die_before_commit, stage.run_id, "before the commit", log)
    q = commit_files(quarantine, staged.quarantine, stage.quarantine_schema, PARTITION, value, run_id=stage.run_id)
    die_if(stage.fault.die_between_commits, stage.run_id, "between the quarantine and the grades commit", log)
    g = commit_files(output, staged.grades, stage.grades_schema, PARTITION, value, run_id=stage.run_id)
    if not keep_staging:
        for folder in staged.folders:
            remove(folder)
    return staged.counts(g, q)
