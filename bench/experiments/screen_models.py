"""Screen a recipe change: trained models on one pipeline split, as served and by argmax, side by side.

Each model (any folder `taosr1 label --model` takes) grades the split's calibration slice and test
queries in one pass, as `taosr1 label` does. Beta is fitted on the slice over the grades with at
least 10 pairs there (the pipeline's rule), never on test; served = CumPT at that beta. Nothing is
written beside the models. Prints a table and writes JSON.

    python bench/experiments/screen_models.py --split runs/cpu_timing/split \\
        --model recipe=runs/cpu_timing/sft --model cot_phase=runs/cotphase_s0/sft \\
        --out bench/results/cot_phase_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # bench/experiments/ -> the repository root
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402


def screen(split: Path, model: str, gold_col: str, threads: int) -> dict:
    """{"beta", "served", "argmax"}: beta fitted on split/calib.parquet, metrics on split/test.parquet."""
    from taosr1.core.cumpt import cumpt_index
    from taosr1.training.calibrate import slice_beta
    from taosr1.training.common import serving_setup
    from taosr1.training.evaluate import classification_metrics, evaluate_scoring

    calib, test = pd.read_parquet(split / "calib.parquet"), pd.read_parquet(split / "test.parquet")
    both = pd.concat([calib, test], ignore_index=True)
    m, graded = evaluate_scoring(model, both, gold_col=gold_col, threads=threads, beta=0.5)
    if m["quarantined"]:
        sys.exit(f"{model}: {m['quarantined']} of {len(both)} split rows quarantined; a screen needs every row graded")
    scheme = serving_setup("", "").scheme
    n = len(calib)
    beta, _ = slice_beta(graded.iloc[:n], gold_col, scheme)
    probs = graded[scheme.prob_columns].to_numpy(dtype=float)[n:]
    names = [scheme.parse(v).name for v in graded[gold_col].iloc[n:]]
    result = {"beta": beta, "seconds": m["seconds"]}
    for mode, pred in (("served", cumpt_index(probs, beta)), ("argmax", probs.argmax(1))):
        result[mode] = classification_metrics(names, [scheme.labels[i].name for i in pred], scheme)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", required=True, type=Path, help="a pipeline's split folder (calib.parquet, test.parquet)")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--gold", default="esci_label")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    models = dict(m.split("=", 1) for m in a.model)
    results = {name: screen(a.split, folder, a.gold, a.threads) for name, folder in models.items()}
    classes = ["Excellent", "Related", "Mismatch", "Irrelevant"]
    print(f"\n{'model':24} {'beta':>5} {'served':>7} {'argmax':>7} {'acc':>6} " + " ".join(f"{c[:6]:>7}" for c in classes))
    for name, r in results.items():
        s = r["served"]
        print(f"{name:24} {r['beta']:5.2f} {s['macro_f1']:7.4f} {r['argmax']['macro_f1']:7.4f} {s['accuracy']:6.3f} "
              + " ".join(f"{s['per_class_f1'].get(c, float('nan')):7.3f}" for c in classes))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    a.out.write_text(json.dumps({"machine": machine, "split": str(a.split), "models": models, "results": results},
                                indent=2, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
