"""Task sets, planted answers and a real rating server for the SBS tests."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from eval_data import predictions

from taosr1.sbs.access import access_path, invite, new_access
from taosr1.sbs.config import SbsConfig
from taosr1.sbs.make import make_tasks
from taosr1.sbs.tasks import load_key, load_tasks, write_tasks

REPO = Path(__file__).resolve().parent.parent


def two_systems(n: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Baseline and candidate predictions of the same ESCI pairs (taosr1 scheme), about half disagreeing."""
    a = predictions(n, seed=0, scheme="taosr1")
    b = predictions(n, seed=1, signal=2.5, scheme="taosr1")
    return a, b


def gold_table(a: pd.DataFrame) -> pd.DataFrame:
    return a[["query_id", "product_id", "esci_label"]].copy()


def build(tmp: Path, *, n_pairs: int | None = None, **cfg) -> tuple:
    """Write a task set into `tmp`; returns (tasks, key, summary, tasks_path)."""
    a, b = two_systems(n_pairs)
    cfg.setdefault("raters", ["ann", "bo", "cy"])
    gold = gold_table(a) if cfg.get("gold_rate", 0.1) > 0 else None
    sheet, key, summary = make_tasks(a, b, SbsConfig(**cfg), gold=gold, gold_col="esci_label", name_a="base",
                                     name_b="new", source_a="a.parquet", source_b="b.parquet", gold_source="gold.csv")
    paths = write_tasks(tmp, sheet, key)
    tasks = load_tasks(paths["tasks"])
    return tasks, load_key(paths["key"], tasks), summary, paths["tasks"]


def links(tasks_path: Path) -> dict[str, str]:
    """Issue a link to every rater and an admin link (a new access.json); name (or 'admin') -> token."""
    tasks = load_tasks(tasks_path)
    return invite(new_access(tasks, access_path(tasks_path)), tasks, tasks.raters, admin=True)


def blinded(verdict: str, left: str) -> str:
    """The answer a rater gives on the sheet for an un-blinded verdict (A / same / B)."""
    if verdict == "same":
        return "same"
    return "left" if verdict == left else "right"


def plant(key: dict, seed: int = 0, shares=(0.2, 0.5, 0.3)) -> dict[str, str]:
    """A known verdict (A / same / B) for every regular item, drawn with `shares`."""
    rng = np.random.default_rng(seed)
    reg = sorted(i for i, r in key["items"].items() if r["kind"] == "regular")
    return dict(zip(reg, rng.choice(["A", "same", "B"], size=len(reg), p=list(shares))))


def free_server(tasks_path: Path, db: Path | None = None, port: int = 0, timeout: float = 30.0):
    """Start `taosr1 sbs serve` in its own process on 127.0.0.1; returns (process, base url)."""
    cmd = [sys.executable, "-m", "taosr1.cli.main", "sbs", "serve", str(tasks_path), "--port", str(port)]
    if db:
        cmd += ["--db", str(db)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if " on http://" in line:
                url = line.split(" on ", 1)[1].split(" ", 1)[0]
                return proc, url.rstrip("/")
    stop(proc)
    raise RuntimeError(f"server did not start: {''.join(seen)}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Stop the server abruptly (SIGKILL: no chance to flush anything)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=10)
    if proc.stdout:
        proc.stdout.close()
