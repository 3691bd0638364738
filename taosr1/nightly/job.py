"""The nightly job: read and check -> plan -> grade -> commit -> record -> alert.

`run(spark, cfg, ...)` takes the session and the config as arguments (tests pass a
local session). Every input row ends in the grades table or in the quarantine table
with a reason; the run replaces its own run_date partition of each table in one
commit, then appends one row to the runs table. Nothing is written when the input
fails its contract, and nothing is committed when the counts do not add up. Each step
lives in the module that owns it: nightly/night.py (where the night reads and writes,
checked first), read.py, plan.py, write.py (over the writers in taosr1/spark), record.py,
alerts.py.
"""

from __future__ import annotations

import sys
from typing import Any

from taosr1.nightly import alerts
from taosr1.nightly.config import INPUT_FORMATS, WRITERS, FaultConfig, NightlyConfig, resume_hash  # noqa: F401
from taosr1.nightly.night import new_run_id, open_night, parse_run_date  # noqa: F401
from taosr1.nightly.plan import executor_label_config, grade_columns, grading, plan  # noqa: F401
from taosr1.nightly.read import checked_input, read_input  # noqa: F401
from taosr1.nightly.record import append_run, record_json, run_record  # noqa: F401
from taosr1.nightly.write import commit, grade


def run(spark, cfg: NightlyConfig, *, input: str, output: str, run_date: str, quarantine: str | None = None,
        runs: str | None = None, run_id: str | None = None, resume: bool = False, log=None) -> dict[str, Any]:
    """Grade `input` into the `run_date` partition of `output` (and `quarantine`), record the run.

    `resume=True` with the `run_id` of a run that died before its commit reuses the grading
    partitions that run staged (same input, date and config required) and grades the rest.
    Returns the run record (also appended to the `runs` table).
    """
    from taosr1.spark.staging import die_if

    log = log or (lambda msg: print(msg, file=sys.stderr))
    night = open_night(spark, cfg, input=input, output=output, run_date=run_date, quarantine=quarantine, runs=runs,
                       run_id=run_id, resume=resume)  # every location resolved and checked: before any work
    frame = checked_input(spark, cfg, night)
    work = plan(spark, frame, cfg, grading(spark, cfg, night, log), night, log)
    try:
        counts = commit(spark, cfg, night, work, grade(spark, cfg, night, work, log), log)
    finally:
        work.release()
    record = run_record(spark, cfg, night, work, counts, log)
    record.update(alerts.evaluate(cfg.alert, record, night.runs.uri, night.scheme.names))  # after the commits
    die_if(cfg.fault.die_before_run_record, night.run_id, "after both commits, before the runs row", log)
    append_run(spark, night, record)
    return record
