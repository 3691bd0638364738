"""Training stages on N processes: `accelerate launch -m taosr1 train STAGE ...`, started and watched.

`taosr1 train STAGE --processes N` and `taosr1 pipeline --processes N` run each training stage
(sft, dpo, grpo) as N processes of one node under `accelerate launch` (gloo on CPUs, NCCL on
GPUs; `--accelerate-config FILE` for another set-up, conf/train/accelerate/). The driver checks
the config and clears stale checkpoints first, so the processes start on one state. When a
process dies the launch fails: the driver names the stage and the rank, keeps the checkpoints
(a rerun resumes from them) and removes a model folder the stage did not finish, so a folder
with model files but no stage marker is never left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from taosr1.core.config import ConfigError
from taosr1.core.names import STAGE_FILE

LAUNCHED = ("TAOSR1_STAGE_HASH", "WORLD_SIZE")  # set in the launched processes
TRAINED = ("sft", "dpo", "grpo")  # the stages that train (cot and sample build data in one process)
KEEP = ("checkpoints",)  # what a failed stage's folder keeps: the checkpoints to resume from


class StageFailed(RuntimeError):
    """A launched stage exited non-zero; the message names the stage, the rank and what to do."""


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def accelerate_args(processes: int, config: str = "") -> list[str]:
    """`accelerate launch` options for `processes` processes on this machine (or the user's config file)."""

    if config:
        return ["--config_file", config, "--num_processes", str(processes)]
    args = ["--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    return args + ["--multi_gpu"]  # torchrun: NCCL on GPUs, gloo where there are none (MULTI_CPU needs mpirun)


def launch_stage(stage: str, values: dict[str, Any], values_hash: str, output_dir: str, processes: int,
                 accelerate_config: str = "", log=print) -> dict[str, Any]:
    """Run `taosr1 train STAGE` with `values` on `processes` processes; its summary (the marker)."""
    from taosr1.training.label_loop import prepare_checkpoints

    if stage not in TRAINED:
        raise ConfigError(f"--processes runs the training stages {list(TRAINED)} on several processes; {stage} runs in one")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resuming = prepare_checkpoints(output_dir, values_hash)
    spec = out / ".launch.json"  # the exact values the driver checked, for every process
    spec.write_text(json.dumps({**values, "output_dir": output_dir}, default=str))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *accelerate_args(processes, accelerate_config),
           "-m", "taosr1", "train", stage, "--config", str(spec)]
    log(f"{stage}: {processes} processes (accelerate launch){', resuming from its checkpoints' if resuming else ''}")
    env = {**os.environ, "TAOSR1_STAGE_HASH": values_hash}
    proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        discard_unfinished(out)
        raise StageFailed(failure(stage, proc.returncode, proc.stderr, output_dir))
    spec.unlink(missing_ok=True)
    marker = json.loads((out / STAGE_FILE).read_text())
    return marker


def failure(stage: str, code: int, stderr: str, output_dir: str) -> str:
    """One line: the stage, the rank that failed first and how, and what a rerun does."""
    root = stderr.split("Root Cause", 1)[-1]  # torchrun's summary: the first process that failed
    ranks = re.findall(r"rank\s*:\s*(\d+)", root)
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", root)
    raised = dict(re.findall(r"\[rank(\d+)\]:\s*((?:\w+\.)*\w+(?:Error|Exception)\b.*)", stderr))  # Python errors
    ranks = ranks or list(raised)
    last = [raised[ranks[0]]] if ranks and ranks[0] in raised else []
    who = f"process rank {ranks[0]}" if ranks else "a process"
    how = f"exit code {codes[0]}" if codes else f"launcher exit code {code}"
    if codes and codes[0].lstrip("-").isdigit() and int(codes[0]) < 0:
        how += f" (signal {-int(codes[0])})"
    why = f"; last error: {last[0].strip()[:300]}" if last else ""
    return (f"stage {stage} failed: {who} died ({how}){why}. The model folder {output_dir} holds no half-written "
            f"model; its checkpoints are kept: rerun the same command to resume")


def discard_unfinished(out: Path) -> None:
    """A stage that did not write its marker leaves no model files (its checkpoints stay)."""
    if (out / STAGE_FILE).is_file():
        return
    for p in out.iterdir():
        if p.name in KEEP or p.name.startswith("checkpoint-"):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def stage_hash(default: str) -> str:
    """The stage's settings hash as the driver computed it (a launched process), else `default`."""
    return os.environ.get("TAOSR1_STAGE_HASH") or default


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
