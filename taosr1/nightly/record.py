"""Step 5 of a night: the run record (schemas/runs.yaml), one log line per worker, and the runs row.

The row is appended last, after both commits and the alert verdict (taosr1/nightly/alerts.py):
readers see a run only once its row exists (taosr1/nightly/reader.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from taosr1.core.config import config_hash
from taosr1.labeling.engines.base import EngineStats


def run_record(spark, cfg, night, plan, counts: dict[str, int], log) -> dict[str, Any]:
    """The runs table's row for the committed night (alert columns added by alerts.evaluate)."""
    lc, g, workers = cfg.label, plan.grading, plan.stats.value
    _log_workers(night.run_id, workers, log)
    seconds = time.perf_counter() - night.t0
    return {
        "run_id": night.run_id,
        "run_date": night.date,
        "status": "succeeded",
        "started_at": night.started_at,
        "finished_at": dt.datetime.now(dt.timezone.utc),
        "input": night.input.uri,
        "output": night.output.uri,
        "quarantine": night.quarantine.uri,
        "model": Path(g.model_path).name,
        "engine": lc.engine.engine,
        "label_scheme": night.scheme.name,
        "prompt_version": lc.prompt.version,
        "beta": float(g.beta),
        "rows_in": plan.rows_in,
        "graded": counts["graded"],
        "quarantined": counts["quarantined"],
        "reused": counts.get("reused", 0),
        "reuse": g.reuse.note,
        "fingerprints_added": counts.get("fingerprints_added", 0),
        "seconds": round(seconds, 3),
        "items_per_s": round(counts["graded"] / seconds, 3) if seconds > 0 else 0.0,
        **_worker_columns(workers),
        "partitions": plan.partitions,
        "config_hash": config_hash(dataclasses.replace(cfg, storage_options={})),  # no credentials hashed
        "spark_app_id": spark.sparkContext.applicationId,
        "writer": night.writer,
        "grades_version": counts["grades_version"],
        "quarantine_version": counts["quarantine_version"],
        "resumed_rows": counts.get("resumed_rows", 0),  # staged by the run resumed, not graded again
    }


def _log_workers(run_id: str, workers: dict[str, dict], log) -> None:
    for wid, w in sorted(workers.items()):
        log(f"run {run_id}: worker {wid}: {w.get('rows', 0)} rows graded in {w.get('score_seconds', 0):.1f} s, "
            f"prepare {w.get('prepare_seconds', 0):.1f} s, {w.get('loads', 0)} engine load(s) "
            f"({w.get('load_seconds', 0):.1f} s), threads {w.get('threads', 0)}, GPU {w.get('gpu') or '-'}")


def _worker_columns(workers: dict[str, dict]) -> dict[str, Any]:
    """The run record's columns summed over the workers (WorkerStats)."""
    padding = sum(w.get("padding_tokens", 0) for w in workers.values())
    computed = sum(w.get("computed_tokens", 0) for w in workers.values())
    return {
        # EngineStats' measure, as `taosr1 label` reports it: the share of computed positions that
        # were not padding (real / computed would exceed 1 where a reused shared prefix counts for every row)
        "padding_efficiency": round(EngineStats(padding_tokens=padding, computed_tokens=computed).padding_efficiency, 4)
        if computed else None,
        "workers": sum(1 for w in workers.values() if w.get("rows", 0) > 0),
        "gpus": ",".join(sorted({w["gpu"] for w in workers.values() if w.get("gpu")})),
        "engine_loads": sum(w.get("loads", 0) for w in workers.values()),
    }


def append_run(spark, night, record: dict[str, Any]) -> None:
    """The runs row, appended in one commit (delta-rs, or delta-spark with the spark writer)."""
    import pyarrow as pa

    from taosr1.storage import contracts, delta

    columns = contracts.output_contract("runs").added_columns()
    schema = contracts.arrow_schema(columns)
    table = pa.Table.from_pylist([{c.name: record[c.name] for c in columns}], schema=schema)
    if night.writer == "delta-rs":
        delta.append_rows(night.runs, table)
    else:
        spark.createDataFrame(table.to_pandas()).write.format("delta").mode("append").save(night.runs.path)


def record_json(record: dict[str, Any]) -> str:
    return json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in record.items()})
