"""A night: its run id and date, and where it reads and writes, every location resolved once and checked.

`open_night` is the job's first step: the input, the grades, quarantine and runs tables (and the
fingerprint table of `reuse: previous`, and an object-store model) become storage Locations with the
config's storage options; each output is proven writable and each store reachable before any model
or Spark work, and the writer is picked. Every later step takes the Night.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

from taosr1.core.config import ConfigError
from taosr1.storage import stores
from taosr1.storage.contracts import default_paths
from taosr1.storage.location import Location, check_readable, check_writable, resolve


@dataclass(frozen=True)
class Night:
    """One run of the job, settled before any work."""

    run_id: str
    date: dt.date
    input: Location
    output: Location  # the grades table
    quarantine: Location
    runs: Location
    fingerprints: Location | None  # reuse: previous's fingerprint table
    model: Location | None  # an object-store model folder (None: a local one, or the embedded default)
    writer: str  # delta-rs or spark
    resume: bool
    scheme: Any  # the label scheme (core.labels.LabelScheme)
    started_at: dt.datetime
    t0: float  # time.perf_counter() at the start


def parse_run_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ConfigError(f"run date {value!r} is not a date in the form YYYY-MM-DD") from None


def new_run_id(run_date: dt.date) -> str:
    return f"{run_date:%Y%m%d}-{dt.datetime.now(dt.timezone.utc):%H%M%S}-{uuid.uuid4().hex[:8]}"


def open_night(spark, cfg, *, input: str, output: str, run_date: str, quarantine: str | None = None,
               runs: str | None = None, run_id: str | None = None, resume: bool = False) -> Night:
    """The Night of `cfg` (NightlyConfig); every location problem stops the run here, before any model work."""
    from taosr1.core.labels import load_scheme
    from taosr1.nightly.incremental import FOLDER

    date = parse_run_date(run_date)
    writer = pick_writer(spark, cfg.writer)
    where = locations(cfg, input=input, output=output, quarantine=quarantine, runs=runs)
    source, tables = where.pop("input"), where
    check_writer(tables, writer)
    if resume and writer != "delta-rs":
        raise ConfigError("resume needs the delta-rs writer (staged partitions); rerun the date instead")
    if resume and not run_id:
        raise ConfigError("resume needs the run id of the run to resume (printed when it started)")
    fingerprints = None
    if cfg.reuse != "off":
        fingerprints = (resolve(cfg.fingerprints, cfg.storage_options, "delta") if cfg.fingerprints
                        else tables["output"].join(FOLDER))
    model = cfg.label.engine.model
    return Night(run_id=run_id or new_run_id(date), date=date, input=source, **tables, fingerprints=fingerprints,
                 model=resolve(model, cfg.storage_options) if stores.is_remote(model) else None, writer=writer,
                 resume=resume, scheme=load_scheme(cfg.label.labels), started_at=dt.datetime.now(dt.timezone.utc),
                 t0=time.perf_counter())


def pick_writer(spark, writer: str) -> str:
    """`writer` (auto: spark when the session has the Delta extension, else delta-rs), checked against the session."""
    from taosr1.spark.delta_spark import has_delta_spark

    picked = writer if writer != "auto" else ("spark" if has_delta_spark(spark) else "delta-rs")
    if picked == "spark" and not has_delta_spark(spark):
        raise ConfigError("writer: spark needs the delta-spark jars and spark.sql.extensions="
                          "io.delta.sql.DeltaSparkSessionExtension on the session; use writer: delta-rs")
    return picked


def locations(cfg, *, input, output, quarantine=None, runs=None) -> dict[str, Location]:
    """{input, output, quarantine, runs} resolved with the config's storage options (the tables as Delta
    tables), the input's store usable and every table writable; else the error says which and why."""
    q_default, runs_default = default_paths(str(output))
    opts = cfg.storage_options
    where = {"input": resolve(input, opts), "output": resolve(output, opts, "delta"),
             "quarantine": resolve(quarantine or q_default, opts, "delta"),
             "runs": resolve(runs or runs_default, opts, "delta")}
    check_readable(where["input"], "input")
    for what in ("output", "quarantine", "runs"):
        check_writable(where[what], f"{'grades' if what == 'output' else what} table", folder=True)
    return where


def check_writer(tables: dict[str, Location], writer: str) -> None:
    """Every table can be written by `writer` (delta-rs: all local, or all on an object store)."""
    from taosr1.storage import delta

    if writer != "delta-rs":
        return
    remote = tables["output"].is_remote
    for loc in tables.values():
        if not remote:
            delta.local_path(loc)  # fails now on a location delta-rs cannot write here
        elif not loc.is_remote:
            raise ConfigError(f"{loc.uri}: with the grades table on an object store, put the quarantine and "
                              "runs tables there too")
