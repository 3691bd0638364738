"""What the served grade rule costs or earns: CumPT at the calibrated beta against argmax and fixed betas.

Reads graded files kept by `bench/quality.py --keep` (each holds P(label) per pair and the beta it was
served at) and the gold labels of the pairs they grade, and scores each rule per fold and pooled over
the folds. Nothing is graded again: the rules differ only in how P(label) becomes the grade, so this
runs in seconds. Grades only; the ranking `score` (expected grade) is the same under every rule.

    python bench/serving_rule.py --graded bench/results/union_graded --input bundled:union \
        --rows recipe/sft,recipe/dpo,recipe/grpo --out bench/results/serving_rule_union.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from taosr1.core.cumpt import beta_curve
from taosr1.evaluation.data import Labelled, labelled
from taosr1.storage.bundled import read_pairs


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graded", required=True, help="a --keep folder of bench/quality.py (index.json inside)")
    ap.add_argument("--input", default="bundled:union", help="the labelled pairs the kept files grade")
    ap.add_argument("--gold-col", default="esci_label")
    ap.add_argument("--rows", default="recipe/sft,recipe/dpo,recipe/grpo", help="kept rows to score, comma-separated")
    ap.add_argument("--betas", default="0.3,0.4,0.5,0.6", help="fixed betas scored beside the calibrated one")
    ap.add_argument("--out", default="bench/results/serving_rule.json")
    return ap.parse_args(argv)


def _labelled(path: Path, pairs: pd.DataFrame, a: argparse.Namespace) -> Labelled:
    """A kept file joined to its gold labels by `taosr1 eval`'s own join: keys as text, every graded pair
    must have a gold label that parses, and the file must hold P(label)."""
    try:
        lab = labelled(pd.read_parquet(path), gold_col=a.gold_col, source=str(path), gold=pairs, gold_source=a.input)
    except ValueError as e:
        sys.exit(str(e))
    if lab.probs is None:
        sys.exit(f"{path}: no P(label) columns {lab.scheme.prob_columns}; keep a model row, not a baseline")
    return lab


def _rules(gold: np.ndarray, served: np.ndarray, probs: np.ndarray, scheme, betas: list[float]) -> dict[str, float]:
    """Macro-F1 over all four grades (the calibration's own, `beta_curve`) of the served grade, argmax and
    each fixed beta; a fixed prediction goes in as one-hot probabilities at beta 1."""
    one_hot = np.eye(len(scheme.names))
    fixed = lambda pred: beta_curve(one_hot[pred], gold, scheme, np.array([1.0]))[0][1]
    f1 = {"served": fixed(served), "argmax": fixed(probs.argmax(1))}
    f1.update({f"beta {b:g}": r[1] for b, r in zip(betas, beta_curve(probs, gold, scheme, np.array(betas)))})
    return f1


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    root, betas = Path(a.graded), [float(b) for b in a.betas.split(",")]
    if not (root / "index.json").is_file():
        sys.exit(f"--graded {root}: no index.json; name a folder bench/quality.py wrote with --keep")
    index, pairs = json.loads((root / "index.json").read_text())["rows"], read_pairs(a.input)
    out: dict[str, dict] = {}
    for name in a.rows.split(","):
        if name not in index:
            sys.exit(f"--rows {name}: not kept in {root / 'index.json'} (kept: {', '.join(sorted(index))})")
        folds = {k: _labelled(root / f, pairs, a) for k, f in sorted(index[name]["files"].items())}
        out[name] = {f"fold {k}": {"beta": float(d.frame["beta"].iloc[0]), "n": d.n,
                                   **_rules(d.gold, d.pred, d.probs, d.scheme, betas)} for k, d in folds.items()}
        labs = list(folds.values())
        every = [np.concatenate([getattr(d, x) for d in labs]) for x in ("gold", "pred", "probs")]
        out[name]["pooled"] = {"n": len(every[0]), **_rules(*every, labs[0].scheme, betas)}
    cols = ["served", "argmax", *(f"beta {b:g}" for b in betas)]
    print(f"macro-F1 by grade rule ({a.graded}); served = CumPT at the beta calibrated per fold:\n")
    print("| row | split | beta | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 3))
    for name, splits in out.items():
        for split, r in splits.items():
            print(f"| {name} | {split} | {r.get('beta', '-')} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"graded": a.graded, "input": a.input, "rows": out}, indent=2) + "\n")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
