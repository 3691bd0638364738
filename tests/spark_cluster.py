"""A Spark standalone cluster on loopback, started from the pyspark distribution (spark-class).

One master and N workers, each a JVM of its own with its own work folder, as on a real
cluster: executors are processes the workers launch, with their own working directory,
and they inherit nothing from the test process (no PYTHONPATH, no PYSPARK_PYTHON).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def clean_env(conf_dir: Path) -> dict[str, str]:
    """The daemons' environment: this machine's, without the test's Python settings."""
    drop = ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET",
            "SPARK_WORKER_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP="127.0.0.1", SPARK_CONF_DIR=str(conf_dir),
               SPARK_NO_DAEMONIZE="1")
    return env


@dataclass
class Cluster:
    root: Path
    master_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)
    work_dirs: list[Path] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> Path:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)
        return log

    def start(self, workers: int = 2, cores: int = 1, memory: str = "1536m", timeout: float = 120) -> Cluster:
        conf = self.root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        env = clean_env(conf)
        self.master_port = free_port()
        master_log = self._start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                            "--port", str(self.master_port), "--webui-port", str(free_port())], env)
        _wait_for(master_log, "I have been elected leader", self.procs[0], timeout)
        for i in range(workers):
            work = self.root / f"worker{i}"
            work.mkdir()
            self.work_dirs.append(work)
            log = self._start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                             "--cores", str(cores), "--memory", memory, "--work-dir", str(work),
                                             "--webui-port", str(free_port()), self.url], env)
            _wait_for(log, "Successfully registered with master", self.procs[-1], timeout)
        return self

    def stop(self) -> None:
        """Stop every daemon this cluster started (and the executors in their process groups)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def tail(self, n: int = 3000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-n:]}" for log in self.logs if log.exists())


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{log.stem} exited ({proc.returncode}) before {text!r}:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    raise TimeoutError(f"{log.stem}: no {text!r} within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")
