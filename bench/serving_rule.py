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
from taosr1.core.labels import load_scheme
from taosr1.storage.bundled import KEYS, read_pairs


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graded", required=True, help="a --keep folder of bench/quality.py (index.json inside)")
    ap.add_argument("--input", default="bundled:union", help="the labelled pairs the kept files grade")
    ap.add_argument("--gold-col", default="esci_label")
    ap.add_argument("--rows", default="recipe/sft,recipe/dpo,recipe/grpo", help="kept rows to score, comma-separated")
    ap.add_argument("--betas", default="0.3,0.4,0.5,0.6", help="fixed betas scored beside the calibrated one")
    ap.add_argument("--out", default="bench/results/serving_rule.json")
    return ap.parse_args(argv)


def _gold(source: str, col: str, scheme) -> pd.DataFrame:
    pairs = read_pairs(source)
    if col not in pairs.columns:
        sys.exit(f"--gold-col {col}: not a column of {source} (columns: {', '.join(pairs.columns)})")
    idx = {lab.name: i for i, lab in enumerate(scheme.labels)}
    labels = [scheme.parse(v) for v in pairs[col]]
    if None in labels:
        row = labels.index(None)
        sys.exit(f"{source}, row {row}: {col} {pairs[col].iloc[row]!r} is no label of {', '.join(scheme.names)}")
    return pairs[KEYS].astype(str).assign(gold=[idx[lab.name] for lab in labels])  # keys as text: a CSV and
                                                                                         # a parquet type them apart


def _scored(path: Path, gold: pd.DataFrame) -> pd.DataFrame:
    """A kept file with each pair's gold; every graded pair must have one (else the files grade other pairs)."""
    d = pd.read_parquet(path).astype({c: str for c in KEYS})
    out = d.merge(gold, on=KEYS)
    if len(out) != len(d):
        sys.exit(f"{path}: {len(d) - len(out)} of {len(d)} graded pairs have no gold in --input; pass the pairs it graded")
    return out


def _rules(d: pd.DataFrame, scheme, betas: list[float]) -> dict[str, float]:
    """Macro-F1 of the served grade, argmax and each fixed beta, over all four grades."""
    probs, gold = d[scheme.prob_columns].to_numpy(), d["gold"].to_numpy()
    served = d["label"].map({n: i for i, n in enumerate(scheme.names)}).to_numpy()
    one_hot = np.eye(len(scheme.names))
    f1 = {"served": beta_curve(one_hot[served], gold, scheme, np.array([1.0]))[0][1],
          "argmax": beta_curve(one_hot[probs.argmax(1)], gold, scheme, np.array([1.0]))[0][1]}
    f1.update({f"beta {b:g}": r[1] for b, r in zip(betas, beta_curve(probs, gold, scheme, np.array(betas)))})
    return f1


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    scheme, root = load_scheme("taosr1"), Path(a.graded)
    index, betas = json.loads((root / "index.json").read_text())["rows"], [float(b) for b in a.betas.split(",")]
    gold = _gold(a.input, a.gold_col, scheme)
    out: dict[str, dict] = {}
    for name in a.rows.split(","):
        if name not in index:
            sys.exit(f"--rows {name}: not kept in {root / 'index.json'} (kept: {', '.join(sorted(index))})")
        folds = {k: _scored(root / f, gold) for k, f in sorted(index[name]["files"].items())}
        out[name] = {f"fold {k}": {"beta": float(d["beta"].iloc[0]), "n": len(d), **_rules(d, scheme, betas)}
                     for k, d in folds.items()}
        out[name]["pooled"] = {"n": sum(len(d) for d in folds.values()),
                               **_rules(pd.concat(folds.values(), ignore_index=True), scheme, betas)}
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
