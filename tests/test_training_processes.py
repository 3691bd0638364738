"""Training on several processes (`--processes 2`: accelerate launch, gloo on this CPU), and resuming
a stage after a kill (taosr1/training/label_loop.py, taosr1/training/launch.py).

Two processes and one must train the same weights from the same global batches. They cannot be
bit-equal: each process's half-batch reduces its sums in another order, and the gradients are then
summed across processes, so float32 rounding (~1e-7 relative per step) differs; over the few dozen
steps here that stays below 1e-4 in any weight (seen: 6e-6 for the label phase, 2e-8 for TRL's SFT),
while one different step moves weights by ~1e-2. The runs are float32 (`bf16=false`): bf16 rounding
of the two batch shapes would differ by ~1e-2 and hide a real difference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taosr1.core.names import STAGE_FILE

TOL = 1e-4
TINY = ["--set", "lora_r=4", "--set", "lora_layers=2", "--set", "lora_dropout=0", "--set", "bf16=false"]


def taosr1(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taosr1", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def max_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def marker(folder: Path) -> dict:
    return json.loads((folder / STAGE_FILE).read_text())


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    from taosr1.labeling.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny4") / "model", layers=4))


@pytest.fixture(scope="module")
def cot(tmp_path_factory, tiny4):
    out = tmp_path_factory.mktemp("cot") / "cot"
    r = taosr1("cot", "--set", "input=bundled:sample", "--set", "limit=64", "--set", "attempts=0",
               "--set", f"teacher.model={tiny4}", "--output", str(out))
    assert r.returncode == 0, r.stderr
    return str(out)


def label_phase(tiny4, cot, *extra):
    return ["train", "sft", "--set", f"model={tiny4}", "--set", f"data={cot}", "--set", "label_epochs=2",
            "--set", "num_train_epochs=0", "--set", "label_batch_size=8", "--set", "label_learning_rate=1e-2",
            *TINY, *extra]


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, tiny4, cot):
    """The label phase on one process and on two, 16 steps of 8 rows."""
    d = tmp_path_factory.mktemp("sft")
    for n in (1, 2):
        r = taosr1(*label_phase(tiny4, cot), "--output", str(d / f"p{n}"), "--processes", str(n))
        assert r.returncode == 0, r.stderr[-3000:]
    return d


def test_label_phase_on_two_processes_trains_what_one_does(sft_runs):
    one, two = marker(sft_runs / "p1"), marker(sft_runs / "p2")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["label_steps"] == two["label_steps"] == 16
    assert max_diff(sft_runs / "p1", sft_runs / "p2") < TOL
    assert not (sft_runs / "p2" / "checkpoints").exists() and not (sft_runs / "p2" / ".launch.json").exists()


def test_label_dpo_on_two_processes_trains_what_one_does(tmp_path, sft_runs, cot):
    samples = tmp_path / "samples"
    r = taosr1("sample", "--set", f"data={cot}", "--set", f"engine.model={sft_runs / 'p1'}", "--set", "n=4",
               "--output", str(samples))
    assert r.returncode == 0, r.stderr[-3000:]
    dpo = ["train", "dpo", "--set", f"model={sft_runs / 'p1'}", "--set", f"data={cot}", "--set", f"samples={samples}",
           "--set", "per_device_train_batch_size=8", "--set", "learning_rate=1e-2", "--set", "num_train_epochs=2", *TINY]
    for n in (1, 2):
        r = taosr1(*dpo, "--output", str(tmp_path / f"d{n}"), "--processes", str(n))
        assert r.returncode == 0, r.stderr[-3000:]
    assert marker(tmp_path / "d1")["trainer"] == "label position" and marker(tmp_path / "d2")["world_size"] == 2
    assert marker(tmp_path / "d1")["steps"] == marker(tmp_path / "d2")["steps"] > 1
    assert max_diff(tmp_path / "d1", tmp_path / "d2") < TOL


def test_a_trl_stage_on_two_processes_trains_what_one_does(tmp_path, tiny4, cot):
    """TRL's SFTTrainer (the CoT phase) under DDP: per-device batch 4 on two processes makes the global
    batch of per-device 8 on one, and TRL normalises the loss over both processes' tokens."""
    base = ["train", "sft", "--set", f"model={tiny4}", "--set", f"data={cot}", "--set", "label_epochs=0",
            "--set", "num_train_epochs=1", "--set", "learning_rate=1e-2", "--set", "max_length=2048",
            "--set", "label_weight=1.0", "--set", "save_strategy=no", *TINY]
    for n, per_device in ((1, 8), (2, 4)):
        r = taosr1(*base, "--set", f"per_device_train_batch_size={per_device}", "--output", str(tmp_path / f"t{n}"),
                   "--processes", str(n))
        assert r.returncode == 0, r.stderr[-3000:]
    assert marker(tmp_path / "t1")["steps"] == marker(tmp_path / "t2")["steps"] == 4
    # the global batch: per-device size x TRL's gradient accumulation x processes, the same on both
    assert marker(tmp_path / "t1")["batch_size"] == marker(tmp_path / "t2")["batch_size"]
    assert marker(tmp_path / "t2")["world_size"] == 2
    assert max_diff(tmp_path / "t1", tmp_path / "t2") < TOL


def test_a_dead_process_fails_the_launch_names_the_rank_and_the_rerun_resumes(tmp_path, sft_runs, tiny4, cot):
    """Rank 1 is killed (SIGKILL) after step 6; a checkpoint was saved at step 4. The launch fails with
    one line naming the stage and the rank, the folder holds the checkpoint and no model files, and
    the same command again resumes at step 4 and ends with the uninterrupted run's weights."""
    out = tmp_path / "sft"
    cmd = [*label_phase(tiny4, cot, "--set", "save_steps=4"), "--output", str(out), "--processes", "2"]
    r = taosr1(*cmd, env={"TAOSR1_TEST_KILL": "1:6"})
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "stage sft failed: process rank 1 died" in err[0] and "signal 9" in err[0], r.stderr[-2000:]
    assert "rerun the same command to resume" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no half-written model folder
    assert list((out / "checkpoints" / "label_phase").glob("step-0000004"))
    r = taosr1(*cmd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker(out)["label_resumed_from_step"] == 4 and marker(out)["world_size"] == 2
    assert max_diff(out, sft_runs / "p2") < TOL
    assert not (out / "checkpoints").exists()


def test_sigkill_to_the_launcher_after_a_checkpoint_resumes_to_the_same_weights(tmp_path, sft_runs, tiny4, cot):
    """The whole launch (driver, accelerate, both processes) is killed once a checkpoint is complete;
    the rerun resumes from it and trains the uninterrupted run's weights."""
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "taosr1", *label_phase(tiny4, cot, "--set", "save_steps=2", "--set", "label_epochs=16"),
           "--output", str(out), "--processes", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob("checkpoints/label_phase/step-*/complete")) and time.time() < deadline:
        assert proc.poll() is None, "the launch ended before its first checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / STAGE_FILE).exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = marker(out)
    assert 0 < m["label_resumed_from_step"] < m["label_steps"] == 128
    ref = tmp_path / "ref"
    r = taosr1(*label_phase(tiny4, cot, "--set", "save_strategy=no", "--set", "label_epochs=16"), "--output", str(ref),
               "--processes", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert max_diff(out, ref) < TOL


def test_the_smoke_pipeline_runs_on_two_processes_and_its_model_labels(tmp_path, sample_df):
    out = tmp_path / "smoke"
    from taosr1.core.resources import conf_dir

    r = taosr1("pipeline", "--config", str(conf_dir() / "train" / "smoke.yaml"), "--output", str(out), "--processes", "2",
               "--set", "evaluate=false", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "pipeline_summary.json").read_text())
    assert {s: summary["stages"][s]["world_size"] for s in ("sft", "dpo", "grpo")} == {"sft": 2, "dpo": 2, "grpo": 2}
    sample_df.head(8).to_csv(tmp_path / "in.csv", index=False)
    r = taosr1("label", str(tmp_path / "in.csv"), str(tmp_path / "out.parquet"), "--model", str(out / "grpo"))
    assert r.returncode == 0, r.stderr[-2000:]
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 8


def test_processes_are_refused_for_a_stage_that_does_not_train():
    from taosr1.core.config import ConfigError
    from taosr1.training.launch import launch_stage

    with pytest.raises(ConfigError, match="training stages"):
        launch_stage("cot", {}, "h", "/tmp/x", 2)
