"""The transformers engine against the vLLM engine: post-CoT scoring of the bundled sample.

    python bench/bench_engines.py [--model DIR] [--rows 256] [--threads 2] [--dtypes float32,bfloat16]

Each (engine, dtype) runs in its own process (vLLM in-process on a CPU binds OpenMP threads
and seeds the global RNG; a fresh process keeps the runs independent), on the same rows,
once, after a warm-up call on 8 prompts that is not timed. Rows: the first `--rows` of the
sample (256 by default, a fixed subset: all 1,263 take five times as long; `--rows 0` for
all). Needs vLLM installed (see docs/labeling.md, the vLLM engine); without it only the transformers
rows are measured. Prints a table and writes bench/results/bench_engines.json, with the
label-probability agreement of the two engines at each dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WARMUP = 8


def prompts_for(tokenizer, rows: int) -> tuple[list[list[int]], list[int]]:
    import pandas as pd

    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder
    from taosr1.core.resources import sample_path

    df = pd.read_csv(sample_path(), dtype=str, keep_default_na=False)
    if rows:
        df = df.iloc[:rows]
    scheme = load_scheme("taosr1")
    fields = [{"query": q, "title": t} for q, t in zip(df["query"], df["product_title"])]
    return PromptBuilder(tokenizer, scheme).build(fields).ids, scheme.token_ids(tokenizer)


def worker(engine_name: str, dtype: str, args) -> dict:
    """One engine at one dtype: load, warm up, score every row once."""
    from taosr1.labeling.engines import EngineConfig, EngineStats, make_engine

    t = time.perf_counter()
    engine = make_engine(EngineConfig(engine=engine_name, model=args.model, dtype=dtype, threads=args.threads))
    load_s = time.perf_counter() - t
    ids, label_ids = prompts_for(engine.tokenizer, args.rows)
    engine.score(ids[:WARMUP], label_ids)
    engine.stats = EngineStats()
    t = time.perf_counter()
    probs = engine.score(ids, label_ids)
    seconds = time.perf_counter() - t
    np.save(args.probs, probs)
    st = engine.stats
    padding = getattr(st, "padding_tokens", None)  # counted by newer transformers engines
    if padding is None:
        padding = st.computed_tokens - st.real_tokens if engine_name == "transformers" else 0
    return {
        "engine": engine_name, "dtype": dtype, "rows": len(ids), "seconds": round(seconds, 2),
        "items_per_s": round(len(ids) / seconds, 2), "load_seconds": round(load_s, 2),
        "padding_efficiency": round(1 - padding / st.computed_tokens, 4) if st.computed_tokens else 1.0,
        "prompt_tokens_per_item": round(st.real_tokens / len(ids), 1),
        "computed_tokens_per_item": round(st.computed_tokens / len(ids), 1),
        "prefix_cached_tokens_per_item": round(st.extra.get("prefix_cached_tokens", 0) / len(ids), 1),
    }


def run_one(engine_name: str, dtype: str, args, probs_path: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine_name, dtype, "--probs", str(probs_path),
           "--model", args.model, "--rows", str(args.rows), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"engine": engine_name, "dtype": dtype, "error": " | ".join(tail)}
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="model folder (default: the embedded default model)")
    ap.add_argument("--rows", type=int, default=256, help="first N rows of the sample; 0 = all 1,263")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="transformers,vllm")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--out", default="bench/results/bench_engines.json")
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "DTYPE"), help=argparse.SUPPRESS)
    ap.add_argument("--probs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker, args)), flush=True)
        return

    results, probs = [], {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes.split(","):
            for name in args.engines.split(","):
                path = Path(tmp) / f"{name}-{dtype}.npy"
                r = run_one(name, dtype, args, path)
                if path.is_file():
                    probs[name, dtype] = np.load(path)
                results.append(r)
                print(f"  {name} {dtype}: {r.get('items_per_s', r.get('error'))}", file=sys.stderr, flush=True)

    ratios = {}
    for r in results:
        ref = probs.get(("transformers", r["dtype"]))
        got = probs.get((r["engine"], r["dtype"]))
        if r["engine"] != "transformers" and ref is not None and got is not None:
            r["max_abs_logp_diff_vs_transformers"] = float(np.abs(np.log(got) - np.log(ref)).max())
            r["same_top_label_vs_transformers"] = float((got.argmax(1) == ref.argmax(1)).mean())
        hf = next((x for x in results if x["engine"] == "transformers" and x["dtype"] == r["dtype"] and "items_per_s" in x), None)
        if r["engine"] == "vllm" and hf and "items_per_s" in r:
            ratios[r["dtype"]] = round(hf["items_per_s"] / r["items_per_s"], 3)

    print(f"{'engine':13} {'dtype':9} {'rows':>5} {'items/s':>8} {'pad.eff':>8} {'comp.tok/item':>13} {'load s':>7} {'max|dlogp|':>11} {'same top':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['engine']:13} {r['dtype']:9} failed: {r['error']}")
            continue
        d = r.get("max_abs_logp_diff_vs_transformers")
        s = r.get("same_top_label_vs_transformers")
        print(f"{r['engine']:13} {r['dtype']:9} {r['rows']:5d} {r['items_per_s']:8.2f} {r['padding_efficiency']:8.4f} "
              f"{r['computed_tokens_per_item']:13.1f} {r['load_seconds']:7.2f} {'' if d is None else f'{d:.2e}':>11} "
              f"{'' if s is None else f'{s:.1%}':>8}")
    for dtype, x in ratios.items():
        print(f"transformers / vLLM items/s at {dtype}: {x} (target >= 0.8)")
    print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, CPU, no GPU",
        "model": args.model or "default (SmolLM2-135M-Instruct)",
        "rows": args.rows or "all", "warmup_prompts": WARMUP,
        # Other processes share the cores: the run's figures are only comparable at similar load.
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "transformers_over_vllm_items_per_s": ratios, "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
