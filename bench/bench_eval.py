"""How long evaluation takes as the table grows, on this machine.

    python bench/bench_eval.py [--rows 10000 100000 1000000] [--bootstrap 1000]

Synthetic graded rows (4 labels, P(label) around the gold label, 5 segments, 8 pairs a query). Times the
parts of `taosr1 eval` and `taosr1 compare` in memory, and a row-resampling bootstrap with
scikit-learn for contrast (what the multinomial-over-confusion-cells bootstrap replaces); the
`_by_query` columns resample whole queries, the default of `taosr1 eval` and `compare`.
Prints a table and writes bench/results/bench_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gold = rng.choice(4, size=n, p=[0.31, 0.29, 0.02, 0.38])
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), gold] += 1.2
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    seg = rng.choice(["a", "b", "c", "d", "e"], size=n)
    return gold, p, seg


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--naive-resamples", type=int, default=50, help="row-resampling sklearn bootstrap resamples timed")
    ap.add_argument("--out", default="bench/results/bench_eval.json")
    args = ap.parse_args()

    from sklearn.metrics import accuracy_score, f1_score

    from taosr1.core.cumpt import cumpt_index
    from taosr1.core.labels import load_scheme
    from taosr1.evaluation.calibration import calibration_report, cumpt_curve
    from taosr1.evaluation.compare import compare
    from taosr1.evaluation.config import EvalConfig
    from taosr1.evaluation.data import Labelled
    from taosr1.evaluation.evaluate import eval_report
    from taosr1.evaluation.metrics import bootstrap_intervals, by_segment, evaluate
    from taosr1.evaluation.report import write_report

    scheme = load_scheme("esci")
    results = []
    for n in args.rows:
        gold, p, seg = synthetic(n)
        pred = cumpt_index(p, 0.5)
        pred_b = cumpt_index(p, 0.4)
        row = {"rows": n}
        row["point_metrics_s"], _ = timed(lambda: evaluate(gold, pred, scheme))
        row["bootstrap_s"], _ = timed(lambda: bootstrap_intervals(gold, pred, scheme, n_boot=args.bootstrap))
        queries = np.arange(n) // 8  # eight pairs a query: intervals resample whole queries by default
        row["bootstrap_by_query_s"], _ = timed(lambda: bootstrap_intervals(gold, pred, scheme, n_boot=args.bootstrap,
                                                                           clusters=queries))
        row["segments_5_s"], _ = timed(lambda: by_segment(gold, pred, seg, scheme, n_boot=args.bootstrap))
        row["calibration_s"], _ = timed(lambda: calibration_report(p, gold, scheme))
        row["cumpt_curve_s"], _ = timed(lambda: cumpt_curve(p, gold, scheme))
        row["compare_paired_s"], _ = timed(lambda: compare(gold, pred, pred_b, scheme, n_boot=args.bootstrap))
        row["compare_by_query_s"], _ = timed(lambda: compare(gold, pred, pred_b, scheme, n_boot=args.bootstrap,
                                                             clusters=queries))
        frame = pd.DataFrame({"segment": seg, "query_id": queries})
        lab = Labelled(frame=frame, scheme=scheme, gold=gold, pred=pred, probs=p)
        cfg = EvalConfig(bootstrap=args.bootstrap)

        def full():
            parts = eval_report(lab, cfg, ["segment"])
            with tempfile.TemporaryDirectory() as d:
                write_report(d, "bench", parts[0], parts[1], parts[2], summary=parts[3], notes=parts[4])

        row["eval_report_with_files_s"], _ = timed(full)
        rng = np.random.default_rng(0)

        def naive():
            for _ in range(args.naive_resamples):
                i = rng.integers(0, n, n)
                accuracy_score(gold[i], pred[i])
                f1_score(gold[i], pred[i], average="macro")

        t, _ = timed(naive)
        row[f"row_bootstrap_sklearn_{args.bootstrap}_s_extrapolated"] = t / args.naive_resamples * args.bootstrap
        results.append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})

    cols = list(results[0])
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                       "note": "2-core CPU shared with other jobs, no GPU"},
           "bootstrap": args.bootstrap, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
