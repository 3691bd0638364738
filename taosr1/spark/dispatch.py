"""Executor side of the nightly job: the functions Spark runs in its Python workers.

Two `mapInArrow` stages:
- prepare: validate rows (taosr1.core.validate) and build token-id prompts with the model's
  tokenizer, so the driver can quarantine bad rows and sort good ones by prompt length;
- grade: score the prompts with the engine through Labeler.grade_built (the one scoring
  path, the same as `taosr1 label`) and add the grade columns.

Each Python worker keeps what it loaded in the module-level `_CACHE`: with
`spark.python.worker.reuse=true` the worker process, hence the engine, lives across
tasks and batches. Before the first engine load the worker pins the GPU its task was
given (`TaskContext.resources()["gpu"]`) through CUDA_VISIBLE_DEVICES, and sets torch's
threads to the task's cores. `start_task`, `engine_for` and `builder_for_model` are that
machinery; the pass@N sampling job (taosr1/training/sample_job.py) uses them too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from taosr1.labeling.labeler import DUPLICATE_REASON, prompt_too_long
from taosr1.storage import stores

# Hidden columns the runner adds and the stages exchange; none reaches an output table.
POS, DUP = "_taosr1_pos", "_taosr1_dup"
REASON, IDS, TRUNCATED, NTOK = "_taosr1_reason", "_taosr1_ids", "_taosr1_truncated", "_taosr1_prompt_tokens"
HIDDEN = (POS, DUP, REASON, IDS, TRUNCATED, NTOK)

# Per Python worker: the loaded engine (by its config), the Labeler and PromptBuilders around it,
# the pinned GPU, counters.
_CACHE: dict[str, Any] = {}


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the driver's labeling setup (pickled into each task)."""

    label_cfg: str  # LabelConfig as JSON (dataclasses.asdict)
    beta: float  # resolved on the driver, so every worker grades with the same beta
    # an object-store model folder (a storage Location, sent like the tables'; its options may hold credentials)
    model: Any = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.label_cfg}|{self.beta}"

    def config(self):
        """The LabelConfig; an object-store model as this worker's local copy of it."""
        from taosr1.core import config as cfgmod
        from taosr1.labeling.labeler import LabelConfig

        cfg = cfgmod.build(LabelConfig, json.loads(self.label_cfg), source="worker spec")
        if stores.is_remote(cfg.engine.model):
            cfg.engine.model = local_model(self.model or cfg.engine.model)
        return cfg


def local_model(model) -> str:
    """This worker's copy of the object-store model folder `model` (a Location or URI), looked up in
    the store once per worker."""
    from taosr1.storage.local_copy import cached

    models = _CACHE.setdefault("models", {})
    if str(model) not in models:
        models[str(model)] = cached(model)
    return models[str(model)]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def task_resources() -> tuple[list[str], int]:
    """(GPU addresses, CPU cores) Spark gave the running task; ([], 0) outside a task."""
    try:
        from pyspark import TaskContext
    except ImportError:  # the executor functions run without Spark (bench/bench_executor.py)
        return [], 0

    ctx = TaskContext.get()
    if ctx is None:
        return [], 0
    gpu = ctx.resources().get("gpu")
    return (list(gpu.addresses) if gpu is not None else []), int(ctx.cpus())


def pin_gpu(addresses: list[str]) -> str | None:
    """Make the task's GPU the only one this worker sees, once, before CUDA starts.

    A reused worker keeps the GPU it pinned first: with one GPU per executor (the GPU
    profile) every task of the executor brings the same address.
    """
    if not addresses:
        return _CACHE.get("gpu")
    pinned = _CACHE.get("gpu")
    if pinned is None:
        os.environ["CUDA_VISIBLE_DEVICES"] = addresses[0]
        _CACHE["gpu"] = pinned = addresses[0]
    elif pinned != addresses[0]:
        print(f"taosr1 worker {os.getpid()}: task was given GPU {addresses[0]} but this worker pinned GPU "
              f"{pinned} before; it keeps using GPU {pinned} (give each executor one GPU)", file=sys.stderr)
    return pinned


def set_threads(cpus: int) -> None:
    if cpus > 0:
        import torch

        torch.set_num_threads(cpus)


def start_task() -> tuple[str | None, int]:
    """Pin the task's GPU and set torch's threads to its cores, before any engine loads: (GPU, cores)."""
    gpus, cpus = task_resources()
    gpu = pin_gpu(gpus)
    set_threads(cpus)
    return gpu, cpus


def engine_for(engine_cfg, cpus: int):
    """The worker's engine for `engine_cfg` (an EngineConfig), loaded on first use only.

    A worker holds one engine: a task with another engine config (another model in the
    same application) replaces it rather than loading a second model next to it.
    """
    from taosr1.labeling.engines import make_engine

    key = json.dumps(dataclasses.asdict(engine_cfg), sort_keys=True)
    if _CACHE.get("engine_key") != key:
        _release()
        cfg = dataclasses.replace(engine_cfg)
        if cfg.threads == 0 and cpus > 0:
            cfg.threads = cpus
        if _CACHE.get("gpu") is not None and (cfg.device == "auto" or cfg.device.startswith("cuda")):
            cfg.device = "auto"  # the pinned GPU is cuda:0 of this worker
        start = time.perf_counter()
        _CACHE["engine"] = make_engine(cfg)
        _CACHE["engine_key"] = key
        _CACHE["last_load_seconds"] = time.perf_counter() - start
        _CACHE["loads"] = _CACHE.get("loads", 0) + 1
    return _CACHE["engine"]


def engine_loads() -> tuple[int, float]:
    """(engines this worker has loaded, seconds the last load took)."""
    return _CACHE.get("loads", 0), _CACHE.get("last_load_seconds", 0.0)


def labeler_for(spec: WorkerSpec, cpus: int):
    """The worker's Labeler for `spec`, around the worker's engine (see engine_for)."""
    from taosr1.core.labels import load_scheme
    from taosr1.labeling.labeler import Labeler

    cfg = spec.config()
    engine = engine_for(cfg.engine, cpus)
    labelers = _CACHE.setdefault("labelers", {})
    labeler = labelers.get(spec.key)
    if labeler is None or labeler.engine is not engine:
        labelers.clear()
        labelers[spec.key] = labeler = Labeler(engine, load_scheme(cfg.labels), cfg.prompt, spec.beta)
    return labeler


def _release() -> None:
    import gc

    engine = _CACHE.pop("engine", None)
    _CACHE.pop("engine_key", None)
    _CACHE.get("labelers", {}).clear()
    if engine is None:
        return
    if hasattr(engine, "close"):  # vLLM frees its GPU memory on shutdown only
        engine.close()
    del engine
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def builder_for(spec: WorkerSpec):
    """A PromptBuilder for `spec`: the loaded Labeler's if there is one, else tokenizer only."""
    labeler = _CACHE.get("labelers", {}).get(spec.key)
    if labeler is not None:
        return labeler.builder
    cfg = spec.config()
    return builder_for_model(cfg.engine.model, cfg.labels, cfg.prompt)


def builder_for_model(model: str, labels: str, prompt):
    """A PromptBuilder on the model's tokenizer alone (no weights loaded), cached per worker."""
    key = json.dumps([model, labels, dataclasses.asdict(prompt)], sort_keys=True)
    builders = _CACHE.setdefault("builders", {})
    if key not in builders:
        builders.clear()
        from taosr1.core.labels import load_scheme
        from taosr1.core.prompts import PromptBuilder
        from taosr1.labeling.models import load_tokenizer, resolve_model

        builders[key] = PromptBuilder(load_tokenizer(resolve_model(model)), load_scheme(labels), prompt)
    return builders[key]


def prepare_fn(spec: WorkerSpec, stats=None):
    """mapInArrow function: input batch (+ POS, DUP) -> same columns + REASON, IDS, TRUNCATED, NTOK.

    REASON is null for rows to grade; a row gets the first reason that applies: validation,
    then duplicate key, then prompt too long (the order of `taosr1 label`).
    """
    # A partial of a module-level function pickles by reference: on the worker it runs with
    # this module's real globals (_CACHE), not with a copy made on the driver.
    return functools.partial(_prepare, spec, stats)


def _prepare(spec: WorkerSpec, stats, batches: Iterator[Any]) -> Iterator[Any]:
    import pyarrow as pa

    from taosr1.core.validate import validate_rows

    cols = spec.config().columns
    wanted = list(dict.fromkeys([*cols.keys, *cols.field_columns().values()]))
    max_tokens = spec.config().prompt.max_prompt_tokens
    builder = None
    seconds = 0.0
    for batch in batches:
        start = time.perf_counter()
        present = [c for c in wanted if c in batch.schema.names]
        df = batch.select(present).to_pandas()
        fields, reasons = validate_rows(df, cols)
        dup = batch.column(DUP).to_pylist()
        reasons = [r if r is not None or not d else DUPLICATE_REASON for r, d in zip(reasons, dup)]
        ok = [i for i, r in enumerate(reasons) if r is None]
        ids: list[list[int] | None] = [None] * len(reasons)
        truncated: list[bool | None] = [None] * len(reasons)
        if ok:
            builder = builder or builder_for(spec)
            built = builder.build(fields.iloc[ok].to_dict("records"))
            for i, row_ids, cut in zip(ok, built.ids, built.truncated):
                reasons[i] = prompt_too_long(len(row_ids), max_tokens)
                ids[i], truncated[i] = row_ids, cut
        extra = {
            REASON: pa.array(reasons, pa.string()),
            IDS: pa.array(ids, pa.list_(pa.field("element", pa.int32()))),
            TRUNCATED: pa.array(truncated, pa.bool_()),
            NTOK: pa.array([len(x) if x is not None else None for x in ids], pa.int32()),
        }
        yield pa.RecordBatch.from_arrays([*batch.columns, *extra.values()], names=[*batch.schema.names, *extra])
        seconds += time.perf_counter() - start
    if stats is not None:
        stats.add({worker_id(): {"prepare_seconds": seconds}})


def grade_fn(spec: WorkerSpec, out_columns: list[tuple[str, str]], stats=None):
    """mapInArrow function: prepared rows to grade -> input columns + the grade columns.

    `out_columns` = [(name, contract type)] of the grade columns, in output order; `stats`
    is a Spark accumulator (WorkerStats) that receives each worker's counters.
    """
    return functools.partial(_grade, spec, out_columns, stats)


def _grade(spec: WorkerSpec, out_columns: list[tuple[str, str]], stats, batches: Iterator[Any]) -> Iterator[Any]:
    import pandas as pd
    import pyarrow as pa

    from taosr1.core.prompts import BuiltPrompts
    from taosr1.storage.contracts import arrow_type

    gpu, cpus = start_task()
    loads_before = _CACHE.get("loads", 0)
    labeler = labeler_for(spec, cpus)
    loaded = _CACHE.get("loads", 0) - loads_before
    engine_stats = labeler.engine.stats
    mine = {"rows": 0, "score_seconds": 0.0, "tasks": 1}
    base = (engine_stats.real_tokens, engine_stats.computed_tokens, engine_stats.forward_passes,
            engine_stats.padding_tokens)
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        built = BuiltPrompts(ids=batch.column(IDS).to_pylist(), truncated=batch.column(TRUNCATED).to_pylist())
        start = time.perf_counter()
        graded, reasons = labeler.grade_built(built, pd.RangeIndex(n))
        mine["score_seconds"] += time.perf_counter() - start
        mine["rows"] += n
        left = [r for r in reasons if r is not None]
        if left:  # prepare quarantined these already; a mismatch means two different configs
            raise RuntimeError(f"grade stage got {len(left)} row(s) prepare should have quarantined: {left[0]}")
        keep = [c for c in batch.schema.names if c not in HIDDEN]
        arrays = [batch.column(c) for c in keep]
        for name, type_name in out_columns:
            values = graded[name]
            arrays.append(pa.array(values.to_numpy() if values.dtype != object else values.tolist(),
                                   type=arrow_type(type_name)))
        yield pa.RecordBatch.from_arrays(arrays, names=[*keep, *(n for n, _ in out_columns)])
    if stats is not None:
        stats.add({worker_id(): {
            **mine,
            "loads": loaded,
            "load_seconds": _CACHE["last_load_seconds"] if loaded else 0.0,
            "real_tokens": engine_stats.real_tokens - base[0],
            "computed_tokens": engine_stats.computed_tokens - base[1],
            "forward_passes": engine_stats.forward_passes - base[2],
            "padding_tokens": engine_stats.padding_tokens - base[3],
            "gpu": gpu or "",
            "threads": cpus,
        }})


class WorkerStats:
    """Accumulator param merging per-worker counters: {pid: {counter: number, gpu: str, threads: int}}."""

    def zero(self, value):
        return {}

    def addInPlace(self, a, b):
        for pid, counters in b.items():
            into = a.setdefault(pid, {})
            for k, v in counters.items():
                into[k] = v if isinstance(v, str) or k == "threads" else into.get(k, 0) + v
        return a


# ---------------------------------------------------------------- durable per-partition staging

DONE = "_done"  # per-partition markers in a run's staging folder: {"rows": n, "file": name}


def stage_fn(spec: WorkerSpec, out_columns: list[tuple[str, str]], arrow_schema, folder: str, done: dict[int, int],
             run_id: str, stats=None, fail_batch: int = 0, fail_partition: int = -1, partitions: int = 0):
    """mapInArrow function: grade a partition and stage it as ONE Parquet file, durably.

    The file is written under a temp name and renamed to `part-<partition>.parquet`, then
    a marker `_done/<partition>.json` is renamed into place: a partition is either staged
    whole or not at all, and a retried task (or a resumed run) replaces the same file, so
    no row is staged twice. Partitions in `done` (a resumed run) are skipped without
    loading the engine. Yields one row per partition: (partition, rows, skipped).

    Fault injection (tests, drills): `fail_batch` k > 0 raises in the k-th batch of every
    task's first attempt (Spark retries it); `fail_partition` p >= 0 waits for the other
    partitions' markers, then raises on every attempt (the run dies, most work staged).
    """
    return functools.partial(_stage, spec, out_columns, arrow_schema, folder, done, run_id, stats, fail_batch,
                             fail_partition, partitions)


class InjectedFault(RuntimeError):
    """Raised by the fault-injection switches (NightlyConfig.fault)."""


def _faulty(batches: Iterator[Any], k: int, attempt: int) -> Iterator[Any]:
    for i, batch in enumerate(batches, 1):
        if i == k and attempt == 0:
            raise InjectedFault(f"injected fault in batch {k} (attempt {attempt}); Spark retries the task")
        yield batch


def _write_json(path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _stage(spec, out_columns, arrow_schema, folder, done, run_id, stats, fail_batch, fail_partition, partitions,
           batches):
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark import TaskContext

    ctx = TaskContext.get()
    part, attempt = ctx.partitionId(), ctx.attemptNumber()
    result = pa.schema([("partition", pa.int32()), ("rows", pa.int64()), ("skipped", pa.bool_())])
    if part in done:  # staged by an earlier attempt of this run: not graded again
        for _ in batches:
            pass
        yield pa.RecordBatch.from_pylist([{"partition": part, "rows": done[part], "skipped": True}], schema=result)
        return
    if part == fail_partition:
        markers = Path(folder) / DONE
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(markers.glob("*.json"))) < partitions - 1:
            time.sleep(0.2)
        raise InjectedFault(f"injected fault: partition {part} fails on every attempt (attempt {attempt})")
    folder = Path(folder)
    name = f"part-{part:05d}.parquet"
    tmp = folder / f".{name}.{attempt}.tmp"
    rows = 0
    try:
        with pq.ParquetWriter(tmp, arrow_schema) as writer:
            for table in graded_tables(spec, out_columns, stats, _faulty(batches, fail_batch, attempt), run_id,
                                       arrow_schema):
                writer.write_table(table)
                rows += table.num_rows
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    (folder / DONE).mkdir(exist_ok=True)
    _write_json(folder / DONE / f"{part:05d}.json", {"rows": rows, "file": name, "attempt": attempt})
    yield pa.RecordBatch.from_pylist([{"partition": part, "rows": rows, "skipped": False}], schema=result)


def graded_tables(spec, out_columns, stats, batches, run_id: str, schema) -> Iterator[Any]:
    """A staging task's grades as Arrow tables of the staged file's `schema`: `_grade`'s batches
    with run_id and graded_run_id (where the schema has them) naming this run, which graded them."""
    import pyarrow as pa

    for out in _grade(spec, out_columns, stats, batches):
        for col in ("run_id", "graded_run_id"):
            if col in schema.names:
                out = out.append_column(col, pa.array([run_id] * out.num_rows, pa.string()))
        yield pa.Table.from_batches([out]).cast(schema)


def staged_partitions(folder) -> dict[int, int]:
    """{partition: rows} of the partitions a run staged whole (marker and file both there)."""
    from pathlib import Path

    folder = Path(folder)
    done = {}
    for marker in sorted((folder / DONE).glob("*.json")):
        try:
            info = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (folder / info["file"]).is_file():
            done[int(marker.stem)] = int(info["rows"])
    return done
