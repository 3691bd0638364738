"""Post-CoT scoring vs think-first on the bundled sample, on this machine.

    python bench/bench_label.py [--model DIR] [--rows 256] [--threads 2] [--dtype float32]

post-CoT: one forward pass per pair, label probabilities at the first answer position.
think-first: generate `--think-tokens` reasoning tokens, then read the label after "Answer:".
Both on the same rows; post-CoT also on the whole sample. Prints a table and writes
bench/results/bench_label.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="model folder (default: the embedded default model)")
    ap.add_argument("--rows", type=int, default=128, help="rows for the post-CoT vs think-first comparison")
    ap.add_argument("--sample-rows", type=int, default=0, help="rows for the whole-sample post-CoT runs (0: all)")
    ap.add_argument("--think-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default="bench/results/bench_label.json")
    args = ap.parse_args()

    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder, PromptConfig
    from taosr1.core.resources import sample_path
    from taosr1.labeling.engines import EngineConfig, make_engine

    df = pd.read_csv(sample_path(), dtype=str, keep_default_na=False)
    if args.sample_rows:
        df = df.head(args.sample_rows)
    rows = [{"query": q, "title": t} for q, t in zip(df["query"], df["product_title"])]
    scheme = load_scheme("taosr1")
    results = []

    def run_scoring(name, engine, ids, label_ids):
        engine.stats.__init__()
        t = time.perf_counter()
        engine.score(ids, label_ids)
        dt = time.perf_counter() - t
        st = engine.stats
        results.append({"work": name, "rows": len(ids), "seconds": round(dt, 2), "items_per_s": round(len(ids) / dt, 2),
                        "padding_efficiency": round(st.padding_efficiency, 4),
                        "mean_prompt_tokens": round(st.real_tokens / len(ids), 1),
                        "computed_tokens_per_item": round(st.computed_tokens / len(ids), 1)})

    t0 = time.perf_counter()
    engine = make_engine(EngineConfig(model=args.model, threads=args.threads, dtype=args.dtype))
    load_s = time.perf_counter() - t0
    tok = engine.tokenizer
    label_ids = scheme.token_ids(tok)
    post = PromptBuilder(tok, scheme, PromptConfig(format="post_cot")).build(rows).ids
    think = PromptBuilder(tok, scheme, PromptConfig(format="think_first")).build(rows[: args.rows]).ids

    run_scoring(f"post-CoT, {len(post)} rows", engine, post, label_ids)
    engine.cfg.reuse_prefix = False
    run_scoring(f"post-CoT, {len(post)} rows, no prefix reuse", engine, post, label_ids)
    engine.cfg.reuse_prefix = True
    run_scoring(f"post-CoT, first {args.rows} rows", engine, post[: args.rows], label_ids)

    # think-first: reasoning first, then the label read after "Answer:" (one more scoring pass).
    t = time.perf_counter()
    texts = [x[0] for x in engine.generate(think, max_new_tokens=args.think_tokens)]
    answer = [p + tok(x.rstrip() + "\nAnswer: ", add_special_tokens=False)["input_ids"] for p, x in zip(think, texts)]
    engine.score(answer, label_ids)
    dt = time.perf_counter() - t
    gen_tokens = sum(len(tok(x, add_special_tokens=False)["input_ids"]) for x in texts) / len(texts)
    results.append({"work": f"think-first, first {args.rows} rows, {args.think_tokens} new tokens max",
                    "rows": len(think), "seconds": round(dt, 2), "items_per_s": round(len(think) / dt, 2),
                    "mean_generated_tokens": round(gen_tokens, 1)})

    post_rate = results[2]["items_per_s"]
    think_rate = results[3]["items_per_s"]
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, CPU",
        "model": Path(engine.model_path).name, "dtype": args.dtype, "load_seconds": round(load_s, 2),
        "post_cot_over_think_first": round(post_rate / think_rate, 1),
        "padding_efficiency_full_sample": results[0]["padding_efficiency"],
        "prefix_reuse_speedup": round(results[0]["items_per_s"] / results[1]["items_per_s"], 2),
        "results": results,
    }
    print(f"{'work':55} {'rows':>5} {'s':>8} {'items/s':>8} {'pad.eff':>8}")
    for r in results:
        print(f"{r['work']:55} {r['rows']:5d} {r['seconds']:8.2f} {r['items_per_s']:8.2f} {r.get('padding_efficiency', float('nan')):8.4f}")
    print(f"post-CoT / think-first: {summary['post_cot_over_think_first']}x; prefix reuse: {summary['prefix_reuse_speedup']}x; "
          f"padding efficiency {summary['padding_efficiency_full_sample']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
