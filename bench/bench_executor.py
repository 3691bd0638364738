"""The nightly job's executor functions without Spark, against the raw engine, on one device.

    python bench/bench_executor.py --rows 200000                           # the embedded default model
    python bench/bench_executor.py --random-shape 0.5b --tokenizer DIR     # a GPU: random Qwen2 weights

On a GPU machine without a JVM (or pyspark) the job itself cannot run; this measures the parts
of it that run in its Python workers, on the same prompts as the raw engine:
- prepare (dispatch._prepare: validate, cut fields, render, tokenize), on one core; Spark runs it
  on every executor core, so its rows/s times the cores is what it can feed the GPU task;
- grade (dispatch._grade: Arrow in, Labeler.grade_built with CumPT, Arrow out), the GPU task;
- raw: `engine.score` on the same token ids, the same chunks, the same engine.
Engine load and the first chunk (flex attention's compile) are excluded from all three.
Prints a table and writes bench/results/bench_executor.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def random_model(shape: str, tokenizer: str, folder: Path) -> str:
    """A random-weight Qwen2 of bench_gpu's `shape`, saved with a real tokenizer's files."""
    import torch
    from bench_gpu import SHAPES
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    for f in Path(tokenizer).iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, folder / f.name)
    return str(folder)


def batches(rows: int, chunk: int):
    """bench_spark_cost's input (the sample repeated to `rows` rows) as Arrow batches with the
    hidden columns the driver adds before prepare (position, duplicate flag)."""
    import pyarrow as pa
    from bench_spark_cost import sample_rows

    from taosr1.spark import dispatch as D

    df = sample_rows(rows)
    df[D.POS], df[D.DUP] = range(len(df)), False
    return pa.Table.from_pandas(df, preserve_index=False).to_batches(chunk)


def timed(fn, items):
    """Run a generator function over `items` to the end: (its outputs, seconds, device synced)."""
    import torch

    t = time.perf_counter()
    out = list(fn(items))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import torch

    from taosr1.core import config as cfgmod
    from taosr1.labeling.labeler import LabelConfig
    from taosr1.nightly.job import grade_columns
    from taosr1.spark import dispatch as D

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="model folder ('' = the embedded default)")
    ap.add_argument("--random-shape", default="", help="0.5b or 7b: random weights (needs --tokenizer)")
    ap.add_argument("--tokenizer", default="", help="folder with tokenizer.json etc. for --random-shape")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--chunk-rows", type=int, default=16384)
    ap.add_argument("--batching", default="auto")
    ap.add_argument("--max-batch-tokens", type=int, default=65536)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_executor.json"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_executor_"))
    model = random_model(a.random_shape, a.tokenizer, tmp / "model") if a.random_shape else a.model
    lc = cfgmod.build(LabelConfig, {"chunk_rows": a.chunk_rows, "engine": {
        "model": model, "batching": a.batching, "max_batch_tokens": a.max_batch_tokens, "max_batch_size": 256}},
        source="bench_executor")
    spec = D.WorkerSpec(label_cfg=json.dumps(dataclasses.asdict(lc), sort_keys=True), beta=0.5)
    t = time.perf_counter()
    labeler = D.labeler_for(spec, 0)
    load = time.perf_counter() - t
    engine, label_ids = labeler.engine, labeler.scheme.token_ids(labeler.engine.tokenizer)
    out_cols = [(c.name, c.type) for c in grade_columns(labeler.scheme)]

    data = batches(a.rows, a.chunk_rows)
    prepared, t_prep = timed(lambda b: D._prepare(spec, None, iter(b)), data)
    # as the job: rows to grade, longest prompts first, in chunks of chunk_rows
    table = pa.Table.from_batches(prepared)
    ok = table.filter(pc.is_null(table.column(D.REASON)))
    ok = ok.sort_by([(D.NTOK, "descending")]).to_batches(a.chunk_rows)
    ids = [b.column(D.IDS).to_pylist() for b in ok]
    engine.score(ids[0][: a.chunk_rows // 4], label_ids)  # warm-up: kernels, flex attention's compile
    def score(chunks):
        return (engine.score(x, label_ids) for x in chunks)

    engine.stats = type(engine.stats)()
    _, t_raw = timed(score, ids)
    stats = dataclasses.asdict(engine.stats)
    _, t_grade = timed(lambda b: D._grade(spec, out_cols, None, iter(b)), ok)
    # raw before and after the grade stage, the faster kept, so warming order does not favour the job
    t_raw = min(t_raw, timed(score, ids)[1])
    rows = sum(b.num_rows for b in ok)
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine() + " cpu",
        "torch": torch.__version__, "model": f"random Qwen2 {a.random_shape}" if a.random_shape else (model or "default"),
        "rows": a.rows, "graded": rows, "chunk_rows": a.chunk_rows, "batching": a.batching, "engine_packed": engine.packed,
        "engine_load_seconds": round(load, 1),
        "prepare": {"seconds": round(t_prep, 2), "rows_per_s_one_core": round(a.rows / t_prep, 1)},
        "raw_engine": {"seconds": round(t_raw, 2), "items_per_s": round(rows / t_raw, 1),
                       "padding_efficiency": round(1 - stats["padding_tokens"] / max(stats["computed_tokens"], 1), 4)},
        "grade_stage": {"seconds": round(t_grade, 2), "items_per_s": round(rows / t_grade, 1)},
        "grade_over_raw": round(t_raw / t_grade, 3),
        "prepare_cores_to_keep_up": round(t_prep / t_raw, 1),
    }
    print(f"\nexecutor path on {report['device']}, {report['model']}, {rows} rows, chunks of {a.chunk_rows}")
    print(f"{'stage':28} {'seconds':>8} {'rows/s':>10}")
    print(f"{'prepare (one core)':28} {t_prep:8.2f} {a.rows / t_prep:10.1f}")
    print(f"{'raw engine.score':28} {t_raw:8.2f} {rows / t_raw:10.1f}")
    print(f"{'grade stage (_grade)':28} {t_grade:8.2f} {rows / t_grade:10.1f}")
    print(f"grade/raw {report['grade_over_raw']}; prepare needs {report['prepare_cores_to_keep_up']} cores to keep up")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {a.out}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
