"""Object-store servers on loopback for the tests: real HTTP in processes of their own.

moto (S3), Azurite (Azure Blob, from npm) and gcp-storage-emulator (GCS). Own processes because
some delta-rs calls hold the GIL while they wait for the network: a server thread in the test
process could not answer them."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(cmd: list[str], log: Path, ready: Callable[[], object], timeout: float = 60) -> Iterator[None]:
    """Run `cmd` until the block ends; first call `ready()` until it stops raising."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    ready()
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"{cmd[0]} did not start; its log: {log}") from None
                    time.sleep(0.3)
            yield
        finally:
            # A server holding a client's keep-alive connection may ignore SIGTERM until that
            # closes (the GCS emulator waited out 30 s here); its data is the test's, so kill it.
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def azurite_command() -> str:
    """Azurite's blob server: `.ci/node` (where .ci/run installs it from npm), then PATH.

    Missing under CI is a failure, never a skip."""
    for cand in (os.environ.get("AZURITE_BLOB"), ROOT / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob",
                 shutil.which("azurite-blob")):
        if cand and Path(cand).is_file():
            return str(cand)
    if os.environ.get("CI"):
        raise RuntimeError("azurite-blob not found: .ci/run installs it (npm install --prefix .ci/node azurite)")
    pytest.skip("azurite-blob not installed (npm install --prefix .ci/node azurite)")
