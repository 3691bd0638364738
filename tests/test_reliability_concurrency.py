"""Concurrent runs for different dates commit to one Delta table; neither loses rows.

Real delta-rs commits from threads and from processes, through the job's own commit
function (taosr1.storage.delta.replace_partition) and the runs-table append.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taosr1.storage import delta

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64()), ("run_id", pa.string()), ("run_date", pa.date32())])


def stage(table: Path, run_id: str, n: int) -> list[Path]:
    folder = delta.staging_dir(table, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for part in range(2):
        rows = pa.table({"key": [f"{run_id}-{part}-{i}" for i in range(n)], "value": list(range(n)),
                         "run_id": [run_id] * n}, schema=pa.schema(list(SCHEMA)[:3]))
        f = folder / f"part-{part:05d}.parquet"
        pq.write_table(rows, f)
        files.append(f)
    return files


def commit_date(table: str, date: str, n: int) -> int:
    run_id = f"run-{date}"
    files = stage(Path(table), run_id, n)
    c = delta.replace_partition(table, files, SCHEMA, "run_date", date, run_id=run_id)
    delta.append_rows(f"{table}_runs", pa.table({"run_id": [run_id], "run_date": [dt.date.fromisoformat(date)]}))
    return c.version


def check_table(table: Path, dates: list[str], n: int) -> None:
    from deltalake import DeltaTable

    df = DeltaTable(str(table)).to_pandas()
    assert len(df) == len(dates) * 2 * n and not df["key"].duplicated().any()
    assert df.groupby(df["run_date"].astype(str)).size().to_dict() == {d: 2 * n for d in dates}
    runs = DeltaTable(f"{table}_runs").to_pandas()
    assert sorted(runs["run_id"]) == sorted(f"run-{d}" for d in dates)
    # every commit is one run's: its version's metadata names the run
    history = DeltaTable(str(table)).history()
    assert sorted(h["taosr1.run_id"] for h in history) == sorted(f"run-{d}" for d in dates)


@pytest.mark.parametrize("existing", [False, True], ids=["table-created-concurrently", "existing-table"])
def test_threads_commit_different_dates_to_one_table(tmp_path, existing):
    table = tmp_path / "grades"
    dates = [f"2025-06-{d:02d}" for d in range(1, 7)]
    if existing:
        commit_date(str(table), "2025-05-31", 5)
    barrier = threading.Barrier(len(dates))
    errors, versions = [], []

    def worker(date):
        try:
            barrier.wait()
            versions.append(commit_date(str(table), date, 5))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(d,)) for d in dates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(versions)) == len(dates)  # each run got its own commit
    check_table(table, (["2025-05-31"] if existing else []) + dates, 5)


def _proc(table, date, n, barrier):
    barrier.wait()
    commit_date(table, date, n)


def test_processes_commit_different_dates_to_one_table(tmp_path):
    table = tmp_path / "grades"
    commit_date(str(table), "2025-05-31", 3)
    dates = ["2025-06-01", "2025-06-02", "2025-06-03"]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(dates))
    procs = [ctx.Process(target=_proc, args=(str(table), d, 3, barrier)) for d in dates]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(dates)
    check_table(table, ["2025-05-31", *dates], 3)


def test_conflict_retry_gives_up_on_other_errors(tmp_path):
    from deltalake.exceptions import CommitFailedError, DeltaError

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise CommitFailedError("Transaction failed: version 3 already exists")
        return "ok"

    assert delta.with_conflict_retry(flaky, "t") == "ok" and len(calls) == 3
    with pytest.raises(DeltaError, match="schema"):
        delta.with_conflict_retry(lambda: (_ for _ in ()).throw(DeltaError("schema of the data does not match")), "t")
