"""Delta tables without the delta-spark jars: commit staged Parquet files with delta-rs.

Executors write a run's Parquet files into a staging folder (Spark's own Parquet
writer); the driver moves them into the table's partition folder, where no reader
looks until the log names them, and commits them in ONE delta-rs transaction that
also removes the partition's previous files. A reader sees the old partition or the
new one, never half a run; a rerun of a date replaces its rows; other dates stay as
they were. Tables are protocol 1/2 (minReader 1, minWriter 2), partitioned by one
column, readable by delta-rs, Polars, DuckDB and Spark.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taosr1.storage.location import Location

STAGING = "_staging"  # under the table root: same filesystem (rename is atomic), hidden from readers and vacuum


class TableSchemaError(ValueError):
    """A run would write columns the existing table does not have (or of other types)."""


@dataclass
class Commit:
    version: int
    files: int
    rows: int


def local_path(uri: str | Path | Location) -> Path:
    """A table location as a local path; other schemes need the delta-spark writer."""
    if isinstance(uri, Location):
        if not uri.is_remote:
            return Path(uri.path)
        uri = uri.uri
    uri = str(uri)
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    if "://" in uri:
        raise ValueError(
            f"{uri}: the delta-rs writer of this job writes local or mounted paths only; on a cluster with "
            "object storage put the delta-spark jars on it and set writer: spark"
        )
    return Path(uri).absolute()


def staging_dir(table: str | Path | Location, run_id: str) -> Path:
    return local_path(table) / STAGING / run_id


def staged_files(folder: Path) -> list[Path]:
    """The Parquet part files Spark wrote into `folder` (no _SUCCESS, no .crc)."""
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))


def count_rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _json_value(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def file_stats(path: Path) -> tuple[int, str]:
    """(rows, Delta stats JSON) from the Parquet footer: numRecords, nullCount, and
    min/max of numeric, boolean and date columns (strings are left out: a cut max is no bound)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    nulls: dict[str, int] = {}
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    skip: set[str] = set()
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            name = col.path_in_schema
            if "." in name:  # nested columns: no stats
                continue
            st = col.statistics
            if st is None:
                skip.add(name)
                continue
            nulls[name] = nulls.get(name, 0) + (st.null_count or 0)
            if not st.has_min_max or st.physical_type in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY", "INT96"):
                skip.add(name)
                continue
            lo, hi = _json_value(st.min), _json_value(st.max)
            mins[name] = lo if name not in mins else min(mins[name], lo)
            maxs[name] = hi if name not in maxs else max(maxs[name], hi)
    for name in skip:
        mins.pop(name, None)
        maxs.pop(name, None)
    stats = {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return meta.num_rows, json.dumps(stats)


def _fields(schema) -> list[tuple[str, Any]]:
    return [(f["name"], f["type"]) for f in json.loads(schema.to_json())["fields"]]


def _table(table: str | Path | Location, storage_options: dict[str, str] | None) -> tuple[str, dict | None]:
    """(the URI delta-rs opens, its storage options): a Location's own, or `table` as an object-store
    URI with `storage_options`, or a local path."""
    if isinstance(table, Location):
        return (table.path if table.is_remote else str(local_path(table))), table.delta_options
    return (str(table) if storage_options is not None else str(local_path(str(table)))), storage_options or None


def schema_problems(table: str | Path | Location, arrow_schema,
                    storage_options: dict[str, str] | None = None) -> list[str]:
    """How `arrow_schema` differs from the existing table's schema ([] if equal or no table).

    `table`: a Location, or an object-store URI when `storage_options` are given, or a local path."""
    from deltalake import DeltaTable, Schema

    uri, opts = _table(table, storage_options)
    if not DeltaTable.is_deltatable(uri, storage_options=opts):
        return []
    have = _fields(DeltaTable(uri, storage_options=opts).schema())
    want = _fields(Schema.from_arrow(arrow_schema))
    if have == want:
        return []
    have_d, want_d = dict(have), dict(want)
    problems = [f"column {n!r}: the table has {json.dumps(have_d[n])}, this run writes {json.dumps(t)}"
                for n, t in want if n in have_d and have_d[n] != t]
    problems += [f"column {n!r} is new (the table has no such column)" for n, _ in want if n not in have_d]
    problems += [f"column {n!r} is missing (the table has it)" for n, _ in have if n not in want_d]
    if not problems:
        problems.append(f"column order differs: table {[n for n, _ in have]}, run {[n for n, _ in want]}")
    return problems


def check_schema(table: str | Path | Location, arrow_schema, storage_options: dict[str, str] | None = None) -> None:
    """Raise TableSchemaError, listing every difference, when `arrow_schema` is not the table's."""
    problems = schema_problems(table, arrow_schema, storage_options)
    if problems:
        raise TableSchemaError(f"{table}: this run's columns do not match the table's:\n  - " + "\n  - ".join(problems))


def replace_partition(table: str | Path, staged: list[Path], arrow_schema, partition_col: str, value: str, *,
                      run_id: str, metadata: dict[str, Any] | None = None) -> Commit:
    """Make `staged` files the whole `partition_col = value` partition of `table`, in one commit.

    `arrow_schema` is the table's schema, partition column included (the files hold the
    other columns). Creates the table on its first run.
    """
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    root = local_path(table)
    check_schema(root, arrow_schema)
    part_dir = root / f"{partition_col}={value}"
    part_dir.mkdir(parents=True, exist_ok=True)
    actions, rows = [], 0
    for f in staged:
        n, stats = file_stats(f)
        if n == 0:
            continue
        target = part_dir / f"{run_id}-{f.name}"
        os.replace(f, target)  # same filesystem: atomic, and invisible until committed
        st = target.stat()
        actions.append(AddAction(path=f"{partition_col}={value}/{target.name}", size=st.st_size,
                                 partition_values={partition_col: value}, modification_time=int(st.st_mtime * 1000),
                                 data_change=True, stats=stats))
        rows += n
    props = CommitProperties(custom_metadata={"taosr1.run_id": run_id, **(metadata or {})})
    delta_schema = Schema.from_arrow(arrow_schema)

    def commit() -> None:
        if DeltaTable.is_deltatable(str(root)):
            DeltaTable(str(root)).create_write_transaction(
                actions, mode="overwrite", schema=delta_schema, partition_by=[partition_col],
                partition_filters=[(partition_col, "=", value)], commit_properties=props)
        else:
            create_table_with_add_actions(str(root), delta_schema, actions, mode="error",
                                          partition_by=[partition_col], commit_properties=props)

    with_conflict_retry(commit, f"{root} {partition_col}={value}")
    # this run's commit, not a version another writer committed since (history is newest first)
    return Commit(version=commit_version(root, run_id), files=len(actions), rows=rows)


def commit_version(table: str | Path, run_id: str) -> int:
    """The version of the newest commit made by `run_id` (read from the log's commitInfo).

    The table's current version may already be another writer's; delta-rs's history()
    numbers entries from the version it loaded, which races with concurrent writers.
    """
    log = local_path(table) / "_delta_log"
    for f in sorted(log.glob("[0-9]*.json"), reverse=True):
        for line in f.read_text().splitlines():
            info = json.loads(line).get("commitInfo")
            if info is not None and info.get("taosr1.run_id") == run_id:
                return int(f.stem)
    raise RuntimeError(f"{table}: no commit of run {run_id} in the log")


COMMIT_RETRIES = 20


def is_conflict(err: BaseException) -> bool:
    """A commit lost a race with another writer (retry on the new table state)."""
    from deltalake.exceptions import CommitFailedError

    if isinstance(err, CommitFailedError):
        return True
    text = str(err).lower()
    return any(s in text for s in ("already exists", "conflict", "concurrent", "version mismatch"))


def with_conflict_retry(commit, what: str, retries: int = COMMIT_RETRIES) -> None:
    """Run `commit` (re-reading the table each time), retrying when another writer won the race.

    Two runs for different dates commit to one table at once: delta-rs rejects the loser's
    commit (or its table creation); retried on the new version it succeeds, and since each
    run only replaces its own partition, neither loses the other's rows.
    """
    import random
    import time

    from deltalake.exceptions import DeltaError

    for attempt in range(retries + 1):
        try:
            return commit()
        except (DeltaError, OSError) as e:
            if attempt == retries or not is_conflict(e):
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))


def append_rows(table: str | Path | Location, arrow_table, storage_options: dict[str, str] | None = None) -> int:
    """Append rows (the runs table) in one commit; returns the new version.

    `table`: a Location, or an object-store URI when `storage_options` are given, or a local path."""
    from deltalake import DeltaTable, write_deltalake

    root, opts = _table(table, storage_options)
    # merge: a runs table written before the contract grew a column gets it (older rows null)
    with_conflict_retry(lambda: write_deltalake(root, arrow_table, mode="append", schema_mode="merge",
                                                storage_options=opts), f"{root} append")
    return DeltaTable(root, storage_options=opts).version()


def remove_staging(table: str | Path, run_id: str) -> None:
    folder = staging_dir(table, run_id)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # the _staging folder, when no other run stages there
    except OSError:
        pass
