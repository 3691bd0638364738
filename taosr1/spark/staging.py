"""Staging a night's rows, then the one-commit date replace, with delta-rs on local tables.

Executors grade each partition into ONE Parquet file under `TABLE/_staging/RUN_ID/`; the
driver counts what was staged (nothing is committed when the counts do not add up) and
replaces the date's partition of the quarantine table, then of the grades table, in one
commit each. A run that died after staging can be resumed: the partitions it staged are
not graded again. What the local writer here and the object-store one (remote.py) share
is here too: the stage's description, the count check, the resume check, the fault switches.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taosr1.core.config import ConfigError

MANIFEST = "_run.json"  # in a run's staging folder: what a resume must match
REUSED_FOLDER = "reused"  # under the grades staging folder: rows carried from earlier runs (--reuse)


@dataclass
class Stage:
    """What durable per-partition staging of a night's tables needs (see dispatch.stage_fn)."""

    to_grade: Any  # the rows to grade, partitioned and sorted
    spec: Any
    out_columns: list
    stats: Any
    partitions: int
    fault: Any  # nightly.FaultConfig
    resume: bool
    manifest: dict[str, Any]
    run_id: str = ""
    rows_in: int = 0  # what the staged rows must add up to
    quarantined: Any = None  # the quarantine rows (a Spark frame)
    reused: Any = None  # rows carried from earlier runs, as grades rows (a Spark frame), or None
    grades_schema: Any = None  # the tables' Arrow schemas, partition column included
    quarantine_schema: Any = None


@dataclass
class Staged:
    """Both tables' rows staged and counted (the counts add up): what the commits make the date's partitions."""

    stage: Stage
    grades: list  # staged files (local Paths, or paths in the object store), reused rows' included
    quarantine: list
    graded: int  # rows in `grades`
    quarantined: int
    resumed: int = 0  # rows staged by the run this one resumes
    reused: int = 0  # rows carried from earlier runs
    folders: tuple = ()  # the staging folders, removed after the commits

    def counts(self, grades, quarantine) -> dict[str, int]:
        """The run's counts once `grades` and `quarantine` (delta.Commit) are committed."""
        return {"graded": grades.rows, "quarantined": quarantine.rows, "grades_version": grades.version,
                "quarantine_version": quarantine.version, "resumed_rows": self.resumed, "reused": self.reused}


def file_schema(table_schema):
    """A staged file's Arrow schema: the table's columns without the partition column."""
    import pyarrow as pa

    from taosr1.core.names import PARTITION

    return pa.schema([f for f in table_schema if f.name != PARTITION])


def check_counts(rows_in: int, graded: int, quarantined: int, where: str) -> None:
    if rows_in != graded + quarantined:
        raise RuntimeError(f"counts do not add up: {rows_in} rows in, {graded} graded + {quarantined} quarantined; "
                           f"nothing was committed ({where})")


def check_resume(staged: dict[str, Any] | None, stage: Stage, run_id: str, folder: str) -> None:
    """Refuse to resume a run that staged nothing, or one whose input, date or config differ."""
    if staged is None:
        raise ConfigError(f"nothing to resume: run {run_id} staged nothing under {folder}; start a fresh run")
    differ = sorted(k for k, v in stage.manifest.items() if staged.get(k) != v)
    if differ:
        raise ConfigError(f"cannot resume run {run_id}: its {differ} differ from this run's "
                          f"({ {k: staged.get(k) for k in differ} } vs { {k: stage.manifest[k] for k in differ} }); "
                          "start a fresh run (without --resume)")


def die_if(flag: bool, run_id: str, where: str, log) -> None:
    """Fault injection: the driver exits as if killed (code 137)."""
    if flag:
        log(f"run {run_id}: fault injection: the driver dies {where}")
        os._exit(137)


def _stage_grades(stage: Stage, folder: Path, run_id: str, arrow_schema, log) -> int:
    """Grade into `folder`, one Parquet file per partition; returns the rows reused from a resumed run."""
    import shutil

    from pyspark.sql.types import BooleanType, IntegerType, LongType, StructField, StructType

    from taosr1.spark import dispatch as D

    manifest_file = folder / MANIFEST
    done: dict[int, int] = {}
    if stage.resume:
        check_resume(json.loads(manifest_file.read_text()) if manifest_file.is_file() else None, stage, run_id,
                     str(folder))
        done = D.staged_partitions(folder)
        log(f"run {run_id}: resuming, {len(done)} of {stage.partitions} partition(s) staged "
            f"({sum(done.values())} rows not graded again)")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        D._write_json(manifest_file, stage.manifest)
    result = StructType([StructField("partition", IntegerType()), StructField("rows", LongType()),
                         StructField("skipped", BooleanType())])
    fn = D.stage_fn(stage.spec, stage.out_columns, file_schema(arrow_schema), str(folder), done, run_id, stage.stats,
                    stage.fault.fail_batch, stage.fault.fail_partition, stage.partitions)
    stage.to_grade.mapInArrow(fn, result).collect()
    return sum(done.values())


def stage_reused(frame, grades_staging: Path) -> list[Path]:
    """Write the reused rows beside the graded partitions (replacing an earlier attempt's)."""
    import shutil

    from taosr1.storage import delta

    folder = grades_staging / REUSED_FOLDER
    if frame is None:
        shutil.rmtree(folder, ignore_errors=True)
        return []
    frame.write.mode("overwrite").parquet(str(folder))
    return delta.staged_files(folder)


def stage_tables(stage: Stage, output, quarantine, log) -> Staged:
    """Executors grade and stage Parquet files in each table's staging folder; counted, nothing committed."""
    from taosr1.storage import delta

    g_stage, q_stage = delta.staging_dir(output, stage.run_id), delta.staging_dir(quarantine, stage.run_id)
    resumed = _stage_grades(stage, g_stage, stage.run_id, stage.grades_schema, log)
    r_files = stage_reused(stage.reused, g_stage)  # rows carried from earlier runs, beside the graded
    stage.quarantined.write.mode("overwrite").parquet(str(q_stage))
    log(f"run {stage.run_id}: graded and staged under {g_stage.parent}")
    g_files, q_files = delta.staged_files(g_stage) + r_files, delta.staged_files(q_stage)
    staged = Staged(stage, g_files, q_files, graded=delta.count_rows(g_files), quarantined=delta.count_rows(q_files),
                    resumed=resumed, reused=delta.count_rows(r_files), folders=(output, quarantine))
    check_counts(stage.rows_in, staged.graded, staged.quarantined, f"staged files kept in {g_stage} and {q_stage}")
    return staged


def commit_tables(staged: Staged, output, quarantine, date, keep_staging: bool, log) -> dict[str, int]:
    """Replace the date's partition of the quarantine table, then of the grades table, one commit each."""
    from taosr1.core.names import PARTITION
    from taosr1.storage import delta

    stage, value = staged.stage, date.isoformat()
    die_if(stage.fault.die_before_commit, stage.run_id, "before the commit", log)
    # Quarantine first: once the grades commit is visible, the run's quarantine is too.
    q = delta.replace_partition(quarantine, staged.quarantine, stage.quarantine_schema, PARTITION, value,
                                run_id=stage.run_id)
    die_if(stage.fault.die_between_commits, stage.run_id, "between the quarantine and the grades commit", log)
    g = delta.replace_partition(output, staged.grades, stage.grades_schema, PARTITION, value, run_id=stage.run_id)
    if not keep_staging:
        delta.remove_staging(output, stage.run_id)
        delta.remove_staging(quarantine, stage.run_id)
    return staged.counts(g, q)
