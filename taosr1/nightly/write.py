"""Steps 3 and 4 of a night: the executors grade and stage both tables, then the driver commits each once.

The writers live in taosr1/spark: delta-rs on a local table (spark/staging.py) or on an object
store (spark/remote.py), both staging per partition so that a run that dies can be resumed; or
delta-spark's replaceWhere on a cluster with its jars (spark/delta_spark.py), whose commit grades.
After the grades commit, `reuse: previous` appends the fingerprints this run graded.
"""

from __future__ import annotations

from typing import Any

from taosr1.core.names import PARTITION


def grade(spark, cfg, night, plan, log) -> Any:
    """Step 3: the executors grade and stage (staging.Staged, counted); None for the spark writer."""
    from taosr1.nightly.config import resume_hash
    from taosr1.nightly.plan import with_partition
    from taosr1.spark import staging

    if night.writer == "spark":
        return None
    manifest = {"run_date": night.date.isoformat(), "input": night.input.uri, "partitions": plan.partitions,
                "rows_in": plan.rows_in, "config_hash": resume_hash(cfg),
                "fingerprints": plan.grading.reuse.snapshot}
    stage = staging.Stage(plan.to_grade, plan.grading.spec, [(c.name, c.type) for c in plan.grade_cols], plan.stats,
                          plan.partitions, cfg.fault, night.resume, manifest, run_id=night.run_id,
                          rows_in=plan.rows_in, quarantined=plan.quarantined, reused=plan.reused,
                          grades_schema=with_partition(plan.graded.schema),
                          quarantine_schema=with_partition(plan.quarantined.schema))
    return _writer(night).stage_tables(stage, night.output, night.quarantine, log)


def commit(spark, cfg, night, plan, staged, log) -> dict[str, int]:
    """Step 4: each table's date partition replaced in one commit (quarantine first), then the fingerprints."""
    from taosr1.nightly import incremental as I

    if night.writer == "spark":
        from taosr1.spark.delta_spark import write_tables

        return write_tables(spark, plan.graded, plan.quarantined, night.output.path, night.quarantine.path, night.date,
                            plan.rows_in)
    counts = _writer(night).commit_tables(staged, night.output, night.quarantine, night.date, cfg.keep_staging, log)
    counts["fingerprints_added"] = I.record(
        spark, plan.grading.reuse, plan.prepared, output=night.output, grades_version=counts["grades_version"],
        partition=(PARTITION, night.date.isoformat()), keys=cfg.label.columns.keys, scheme=night.scheme,
        run_id=night.run_id, run_date=night.date, log=log)
    return counts


def _writer(night):
    """The delta-rs writer module for the night's tables: object store or local."""
    if night.output.is_remote:
        from taosr1.spark import remote

        return remote
    from taosr1.spark import staging

    return staging
