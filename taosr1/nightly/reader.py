"""Read the nightly tables one committed run at a time: never one run's grades beside another's quarantine.

A nightly run commits the quarantine table, then the grades table, then appends its row to
the runs table; that row, written last, names the version of each table the run committed
(`grades_version`, `quarantine_version`). A run is visible here only once its row exists, and
its rows are read at exactly those versions, filtered to its run_date partition and run_id.
A run killed between its commits (or before its row) is invisible: readers keep seeing the
previous committed run of that date, whatever the tables' newest versions hold.

    import taosr1
    grades = taosr1.read_grades("out/grades", "2025-06-01")
    run = taosr1.read_run("out/grades", "2025-06-01")   # {"run": row, "grades": df, "quarantine": df}
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd

from taosr1.core.names import PARTITION
from taosr1.storage.contracts import default_paths

_VERSION = {"output": "grades_version", "quarantine": "quarantine_version"}


def runs_path(output: str, runs: str | None = None) -> str:
    return runs or default_paths(output)[1]


def _exists(path: str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(str(path))


def committed_runs(runs: str) -> pd.DataFrame:
    """Every row of the runs table (each a committed run), oldest first; empty when there is no table."""
    from deltalake import DeltaTable

    if not _exists(runs):
        return pd.DataFrame(columns=["run_id", "run_date", "status", "grades_version", "quarantine_version"])
    df = DeltaTable(str(runs)).to_pandas()
    df["run_date"] = df["run_date"].astype(str)
    return df.sort_values(["finished_at", "run_id"], kind="stable").reset_index(drop=True)


def current_runs(runs: str) -> pd.DataFrame:
    """The run each date's readers see: per run_date, the committed run whose grades commit is newest."""
    df = committed_runs(runs)
    if df.empty:
        return df
    df = df.sort_values(["run_date", "grades_version", "finished_at"], kind="stable")
    return df.groupby("run_date", sort=True).tail(1).reset_index(drop=True)


def _as_date(value) -> str:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)


def previous_run(runs: str, run_date) -> dict[str, Any] | None:
    """The current run of the latest date before `run_date` (the previous night), or None."""
    cur = current_runs(runs)
    earlier = cur[cur["run_date"] < _as_date(run_date)] if not cur.empty else cur
    return None if earlier.empty else earlier.iloc[-1].to_dict()


def read_table_of(run: dict[str, Any], which: str = "output", *, path: str | None = None,
                  columns: list[str] | None = None) -> pd.DataFrame:
    """The rows run `run` (a runs row or run record) committed to its grades (`output`) or
    `quarantine` table, read at the version it recorded."""
    from deltalake import DeltaTable

    table, version = path or run[which], int(run[_VERSION[which]])
    try:
        t = DeltaTable(str(table), version=version)
    except Exception as e:  # noqa: BLE001 - a vacuumed or missing version, said plainly
        raise FileNotFoundError(f"{table}: version {version}, committed by run {run['run_id']}, cannot be read "
                                f"({e}); was the table vacuumed or moved? Rerun {_as_date(run['run_date'])}") from e
    date = _as_date(run["run_date"])
    # run_id is filtered here, not pushed down: delta-rs's `filters` missed matching string rows
    df = t.to_pandas(partitions=[(PARTITION, "=", date)], columns=columns and [*columns, "run_id"])
    df = df[df["run_id"] == str(run["run_id"])].reset_index(drop=True)
    return df[columns] if columns else df


def _pick(runs: str, date, run_id: str | None) -> pd.DataFrame:
    if run_id is not None:
        rows = committed_runs(runs)
        rows = rows[rows["run_id"] == run_id]
        if rows.empty:
            raise LookupError(f"run {run_id} has no row in {runs}: it never committed (or is still running); "
                              f"`taosr1 runs --runs {runs}` lists the committed runs")
        return rows.tail(1)
    cur = current_runs(runs)
    if date is None:
        return cur
    rows = cur[cur["run_date"] == _as_date(date)] if not cur.empty else cur
    if rows.empty:
        have = [] if cur.empty else cur["run_date"].tolist()[-10:]
        raise LookupError(f"no committed run for {_as_date(date)} in {runs}; committed dates (last 10): {have}")
    return rows


def _read(output: str, which: str, date, runs, run_id, columns, path) -> pd.DataFrame:
    rows = _pick(runs_path(output, runs), date, run_id)
    parts = [read_table_of(r, which, path=path, columns=columns) for r in rows.to_dict("records")]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def read_grades(output: str, date=None, *, runs: str | None = None, run_id: str | None = None,
                columns: list[str] | None = None) -> pd.DataFrame:
    """Grades of the current committed run of `date` (every date when None), or of `run_id`."""
    return _read(output, "output", date, runs, run_id, columns, output)


def read_quarantine(output: str, date=None, *, runs: str | None = None, run_id: str | None = None,
                    quarantine: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Quarantined rows of the same runs `read_grades` reads (the quarantine path from the runs row)."""
    return _read(output, "quarantine", date, runs, run_id, columns, quarantine)


def read_run(output: str, date=None, *, runs: str | None = None, run_id: str | None = None,
             quarantine: str | None = None) -> dict[str, Any]:
    """One committed run: its runs row, its grades and its quarantine, all from that run."""
    rows = _pick(runs_path(output, runs), date, run_id)
    if len(rows) != 1:
        raise LookupError(f"read_run reads one run: pass a date or a run_id ({len(rows)} dates committed)")
    run = rows.iloc[0].to_dict()
    return {"run": run, "grades": read_table_of(run, "output", path=output),
            "quarantine": read_table_of(run, "quarantine", path=quarantine)}


def incomplete_runs(output: str, runs: str | None = None, quarantine: str | None = None) -> list[dict[str, Any]]:
    """Runs that committed to the grades or quarantine table but have no runs row (killed between
    their commits, or before the row): invisible to the readers above. Local tables only."""
    from taosr1.storage import delta

    runs = runs_path(output, runs)
    done = set(committed_runs(runs)["run_id"])
    found: dict[str, dict[str, Any]] = {}
    for which, table in (("grades", output), ("quarantine", quarantine or default_paths(output)[0])):
        try:
            log = delta.local_path(str(table)) / "_delta_log"
        except ValueError:
            continue
        for f in sorted(log.glob("[0-9]*.json")):
            for line in f.read_text().splitlines():
                info = json.loads(line).get("commitInfo") or {}
                rid = info.get("taosr1.run_id")
                if rid and rid not in done:
                    found.setdefault(rid, {"run_id": rid, "status": "incomplete"})[f"{which}_version"] = int(f.stem)
    return list(found.values())
