"""The training loop of the label-position stages (SFT's label phase, label DPO, label GRPO), on one
process or several, resumable after a kill.

Several processes (started by `accelerate launch`, gloo on CPUs, NCCL on GPUs) are data parallel:
every process holds the whole model, each global batch of rows is split between them (rank r takes
rows r, r + W, ...), and the gradients are summed across them before every step. A loss is a sum
of terms, each a numerator over a normaliser (`Term`); the normalisers are summed across the
processes first, so W processes compute exactly the gradient one process computes on the global
batch (to float rounding). The model is not wrapped in DistributedDataParallel: the label forward
calls the decoder blocks directly (taosr1/training/label_forward.py), and the summed gradients of
the small trainable part (LoRA adapters) are one all-reduce per step. accelerate's process state
(`PartialState`, what its Accelerator builds on) joins the processes, and answers which device
and whether this is the main process.

Checkpoints: every `save_steps` steps the main process writes OUT/checkpoints/step-<n>/ (the
trainable weights, optimizer, scheduler, step, each process's random state), its `complete` file
last; a rerun of the stage resumes from the newest complete one. Data order is a function of the
seed and the epoch, so a resumed run sees the batches an uninterrupted one sees.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

CHECKPOINTS = "checkpoints"
COMPLETE = "complete"


@dataclass
class Term:
    """One part of a loss: `coef * numerator / normaliser`, the normaliser summed over every process."""

    numerator: Any  # a scalar tensor, with gradients
    normaliser: float
    coef: float = 1.0


@dataclass
class LoopConfig:
    """How `fit` runs: optimiser, schedule, steps, precision, checkpoints."""

    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 1e-4
    max_steps: int = 0  # > 0 sets the steps, else epochs do
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    bf16: bool = False
    seed: int = 0
    save_steps: int = 0  # 0: no checkpoints
    checkpoint_dir: str = ""  # where checkpoints go ("" = none)
    checkpoint_key: str = ""  # the run's identity: a checkpoint of other settings is not resumed


def length_batches(lengths: Sequence[int], batch_size: int, rng) -> list[list[int]]:
    """Shuffled batches of rows of similar length (little padding), in a shuffled order."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    for k in range(0, len(idx), batch_size * 8):  # sort within windows of 8 batches: similar lengths, still random
        window = sorted(idx[k : k + batch_size * 8], key=lambda i: lengths[i])
        batches += [window[j : j + batch_size] for j in range(0, len(window), batch_size)]
    rng.shuffle(batches)
    return batches


def group_batches(groups: Sequence[int], batch_size: int, rng) -> list[list[int]]:
    """Shuffled batches that keep a group's rows together: the groups in a shuffled order, each
    group's rows shuffled, cut every `batch_size` rows. A within-query loss sees pairs only inside a
    batch; length batching puts two rows of one query together about once a batch."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    order = list(members.values())
    rng.shuffle(order)
    idx = []
    for rows in order:
        rng.shuffle(rows)
        idx += rows
    batches = [idx[k : k + batch_size] for k in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  groups: Sequence[int] | None = None) -> list[list[int]]:
    """The global batches of one epoch: a function of the seed and the epoch alone (and the
    groups, when rows of a group must share batches)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    return length_batches(lengths, batch_size, rng) if groups is None else group_batches(groups, batch_size, rng)


class Processes:
    """This process's place among the processes of a run (one, unless started by a launcher)."""

    def __init__(self, cpu: bool):
        from accelerate import PartialState

        # the process part of accelerate's state (no mixed-precision setting): a TRL trainer later in the
        # same process builds its Accelerator on it
        self.state = PartialState(cpu=cpu)
        self.rank, self.world = self.state.process_index, self.state.num_processes
        self.main = self.state.is_main_process
        self.device = self.state.device

    def shard(self, batch: list[int]) -> list[int]:
        return batch[self.rank :: self.world]

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value` (a small Python object), in rank order."""
        if self.world == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the processes."""
        if self.world == 1:
            return values
        import torch
        from accelerate.utils import reduce

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        return reduce(t, reduction="sum").tolist()

    def sum_grads(self, params) -> None:
        if self.world == 1:
            return
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        from accelerate.utils import reduce

        flat = reduce(torch.cat([g.reshape(-1).float() for g in grads]), reduction="sum")
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
            offset += g.numel()

    def barrier(self) -> None:
        self.state.wait_for_everyone()


def fit(model, lengths: Sequence[int], step_terms: Callable[[list[int], int], tuple[list[Term], dict]], cfg: LoopConfig,
        log: Callable[[str], None] = print, name: str = "label phase", groups: Sequence[int] | None = None) -> dict:
    """AdamW with linear warm-up then cosine decay over the global batches of `lengths`' rows.

    `step_terms(rows, step)` -> (terms, metrics) for this process's rows of the step's global batch; `groups`
    (one id per row) keeps a group's rows in the same batches (`group_batches`). Returns steps, mean loss
    and metrics per epoch, seconds, the number of processes and the step resumed from.
    """
    import torch

    procs = Processes(cpu=not torch.cuda.is_available())
    params = [p for p in model.parameters() if p.requires_grad]
    per_epoch = math.ceil(len(lengths) / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, round(per_epoch * cfg.epochs))
    opt, sched = _optimiser(params, cfg, total)
    torch.manual_seed(cfg.seed + procs.rank)
    ckpt = Checkpoints(cfg, procs)
    step = ckpt.resume(model, opt, sched)
    start, history = time.perf_counter(), {"losses": [], "metrics": []}
    model.train()
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch, groups)[skip : skip + total - step]
        run = _Epoch()
        for batch in batches:
            loss, m = _step(model, params, opt, sched, procs, step_terms, batch, cfg, step)
            run.add(loss, m)
            step += 1
            ckpt.maybe_save(step, total, model, opt, sched)
            _injected_death(procs.rank, step)
        history["losses"].append(run.loss())
        history["metrics"].append(run.metrics())
        if procs.main:  # one line per epoch, not one per process
            log(f"{name}: epoch {epoch + 1} loss {run.loss():.4f} {run.metrics() or ''} ({step}/{total} steps, "
                f"{time.perf_counter() - start:.0f} s{f', {procs.world} processes' if procs.world > 1 else ''})")
    model.eval()
    return {"steps": step, **history, "seconds": round(time.perf_counter() - start, 1), "world_size": procs.world,
            "resumed_from_step": ckpt.resumed_from, "main_process": procs.main}


KILL = "TAOSR1_TEST_KILL"  # "RANK:STEP": that process kills itself (SIGKILL) after that step; for the tests


def _injected_death(rank: int, step: int) -> None:
    want = os.environ.get(KILL, "")
    if want and want == f"{rank}:{step}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _optimiser(params, cfg: LoopConfig, total: int):
    import torch

    warm = max(1, round(total * cfg.warmup_ratio))
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(i, total) / total))))
    return opt, sched


def _step(model, params, opt, sched, procs: Processes, step_terms, batch: list[int], cfg: LoopConfig, step: int):
    """One optimiser step on a global batch: this process's share, the terms normalised over all."""
    import torch

    rows = procs.shard(batch)
    autocast = torch.autocast(procs.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    with autocast:
        terms, metrics = step_terms(rows, step) if rows else ([], {})
    # every process's normalisers and metrics; one with no rows in this batch has none
    shares = procs.gather(([t.normaliser for t in terms], {k: float(v) * len(rows) for k, v in metrics.items()}, len(rows)))
    norms = [sum(n[i] for n, _, _ in shares if len(n) > i) for i in range(max(len(n) for n, _, _ in shares))]
    n_rows = sum(r for _, _, r in shares)
    summed_metrics: dict[str, float] = {}
    for _, m, _ in shares:
        for k, v in m.items():
            summed_metrics[k] = summed_metrics.get(k, 0.0) + v
    loss = sum((t.coef * t.numerator / n for t, n in zip(terms, norms) if n > 0), torch.zeros((), device=procs.device))
    if loss.requires_grad:
        loss.backward()
    procs.sum_grads(params)
    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    total = procs.sum([float(loss.detach())])[0]  # each process's part of the loss
    return total, {k: v / max(n_rows, 1) for k, v in sorted(summed_metrics.items())}


class _Epoch:
    def __init__(self):
        self.n, self.total, self.seen = 0, 0.0, {}

    def add(self, loss: float, metrics: dict) -> None:
        self.n += 1
        self.total += loss
        for k, v in metrics.items():
            self.seen[k] = self.seen.get(k, 0.0) + v

    def loss(self) -> float:
        return round(self.total / max(self.n, 1), 4)

    def metrics(self) -> dict:
        return {k: round(v / max(self.n, 1), 4) for k, v in self.seen.items()}


class Checkpoints:
    """Mid-stage checkpoints of the trainable weights, optimizer, scheduler and random state."""

    def __init__(self, cfg: LoopConfig, procs: Processes):
        self.cfg, self.procs = cfg, procs
        self.root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir and cfg.save_steps > 0 else None
        self.resumed_from = 0

    def _trainable(self, model) -> dict:
        return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}

    def latest(self) -> Path | None:
        if self.root is None or not self.root.is_dir():
            return None
        done = []
        for d in self.root.glob("step-*"):
            info = _read_json(d / COMPLETE)
            if info and info.get("key") == self.cfg.checkpoint_key and info.get("world_size") == self.procs.world:
                done.append((info["step"], d))
        return max(done)[1] if done else None

    def resume(self, model, opt, sched) -> int:
        import torch

        d = self.latest()
        if d is None:
            return 0
        state = torch.load(d / "state.pt", weights_only=False)
        missing = set(self._trainable(model)) - set(state["weights"])
        if missing:
            return 0
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in state["weights"].items():
                named[n].copy_(t.to(named[n].device))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng = torch.load(d / f"rng-{self.procs.rank}.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        self.resumed_from = state["step"]
        return state["step"]

    def maybe_save(self, step: int, total: int, model, opt, sched) -> None:
        if self.root is None or (step % self.cfg.save_steps and step < total):  # the last step too: a kill
            return  # after the loop (a later phase, the save) resumes without training again
        import torch

        d = self.root / f"step-{step:07d}"
        d.mkdir(parents=True, exist_ok=True)
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
        torch.save(rng, d / f"rng-{self.procs.rank}.pt")  # each process's own random state
        self.procs.barrier()
        if self.procs.main:
            torch.save({"weights": self._trainable(model), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "step": step}, d / "state.pt")
            _write_json(d / COMPLETE, {"step": step, "key": self.cfg.checkpoint_key, "world_size": self.procs.world})
            for old in self.root.glob("step-*"):  # keep the newest only
                if old != d:
                    shutil.rmtree(old, ignore_errors=True)
        self.procs.barrier()



def checkpoint_dir(output_dir: str, phase: str) -> str:
    """Where a stage's phase keeps its checkpoints: OUTPUT/checkpoints/<phase>."""
    return str(Path(output_dir) / CHECKPOINTS / phase)


def clear_checkpoints(output_dir: str) -> None:
    """Every checkpoint in a stage's folder goes: ours (OUTPUT/checkpoints) and the TRL trainers'
    (OUTPUT/checkpoint-<n>)."""
    out = Path(output_dir)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    for d in out.glob("checkpoint-*"):
        shutil.rmtree(d, ignore_errors=True)


KEY_FILE = "key.json"  # OUTPUT/checkpoints/key.json: the settings the checkpoints were made with


def prepare_checkpoints(output_dir: str, key: str) -> bool:
    """Before a stage trains (once, before its processes start): checkpoints made with other settings
    go; returns whether checkpoints of these settings are there to resume."""
    out = Path(output_dir)
    found = (_read_json(out / CHECKPOINTS / KEY_FILE) or {}).get("key")
    if found != key:
        clear_checkpoints(output_dir)
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        _write_json(out / CHECKPOINTS / KEY_FILE, {"key": key})
    return found == key


def checkpoints_key(output_dir: str) -> str | None:
    return (_read_json(Path(output_dir) / CHECKPOINTS / KEY_FILE) or {}).get("key")


def _read_json(f: Path) -> dict | None:
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _write_json(f: Path, data: dict) -> None:
    tmp = f.with_name(f".{f.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, f)
