"""Quality over several query splits: baselines and trained models side by side, scored by `taosr1 eval`.

Each seed's split is the training pipeline's own (`taosr1.core.split.held_out`), so a pipeline
run with that seed and test_size graded exactly these held-out queries. Every number comes from
what `taosr1 eval` and `taosr1 compare` run (gold joined from the split's test file on the key
columns), then `summarize` folds the seeds into mean and min-max. bench/quality.py drives it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

METRICS = ("macro_f1", "accuracy", "ndcg_at_10", "spearman")


def split_for_seed(seed: int, out: str | Path, test_size: float = 0.3, input: str = "",
                   log: Callable[[str], None] = lambda s: None, folds: int = 0, fold: int = 0) -> tuple[Path, Path]:
    """(train, test) parquet files of the pipeline's split for `seed` (or its fold `fold` of `folds`
    query folds, shuffled by `seed`), written under OUT/split.

    The baselines fit on every training query: the models' calibration slice is training data
    to a baseline (it has no beta to calibrate), so calib_size is 0 here; the test side is the same.
    """
    from taosr1.core.resources import sample_path
    from taosr1.core.split import held_out
    from taosr1.storage.bundled import read_pairs

    d = Path(out) / "split"
    d.mkdir(parents=True, exist_ok=True)
    src = input or str(sample_path())
    train, test = held_out(read_pairs(src), "query", test_size, folds, fold, seed)
    train.to_parquet(d / "train.parquet", index=False)
    test.to_parquet(d / "test.parquet", index=False)
    log(f"split of {src}: {len(train)} train / {len(test)} test rows, no query in both")
    return d / "train.parquet", d / "test.parquet"


def _metrics(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "metrics.json").read_text())


def taosr1_eval(predictions: str | Path, gold: str | Path, gold_col: str, out_dir: str | Path) -> dict[str, Any]:
    """What `taosr1 eval PREDICTIONS --gold GOLD --gold-col COL --bootstrap 0 --out OUT` writes; its metrics.json."""
    from taosr1.evaluation.config import load_eval_config
    from taosr1.evaluation.evaluate import eval_report
    from taosr1.evaluation.inputs import read_labelled
    from taosr1.evaluation.report import write_report

    cfg = load_eval_config(None, {"bootstrap": 0})
    lab = read_labelled(str(predictions), None, gold_col, str(gold), None, cfg, None, False)
    metrics, figures, tables, summary, notes = eval_report(lab, cfg, (), predictions=str(predictions),
                                                           gold=f"{gold} column {gold_col}", macro_over=())
    write_report(out_dir, f"Evaluation of {Path(predictions).name}", metrics, figures, tables, summary=summary,
                 notes=notes)
    return _metrics(out_dir)


def taosr1_compare(a: str | Path, b: str | Path, gold: str | Path, gold_col: str, out_dir: str | Path,
                   macro_over: Sequence[str] = ()) -> dict[str, Any]:
    """Run `taosr1 compare A B --gold GOLD --gold-col COL --out OUT` (paired bootstrap, McNemar); the
    numbers kept per seed: B - A of macro-F1 and accuracy (and of the mean F1 over `macro_over`) with
    their intervals, and McNemar's counts."""
    from taosr1.evaluation.compare import compare_report
    from taosr1.evaluation.config import load_eval_config
    from taosr1.evaluation.inputs import read_run
    from taosr1.evaluation.report import write_report

    cfg = load_eval_config(None, {})
    result = compare_report(read_run(str(a), None), read_run(str(b), None), cfg, gold_col=gold_col,
                            gold=read_run(str(gold), None), labels=None, drop_unparsed=False, source_a=str(a),
                            source_b=str(b), gold_source=str(gold), name_a=f"A: {Path(a).name}",
                            name_b=f"B: {Path(b).name}", macro_over=list(macro_over))
    metrics, figures, tables, summary, notes = result
    write_report(out_dir, "B against A", metrics, figures, tables, summary=summary, notes=notes,
                 max_rows=cfg.max_disagreements)
    m = _metrics(out_dir)
    keep = ("difference", "low", "high")
    return {**{k: {f: m["differences"][k][f] for f in keep} for k in (*METRICS, "macro_f1_over", "ndcg_at_10", "spearman")
               if k in m["differences"] and m["differences"][k]["difference"] is not None},
            "only_a_correct": m["mcnemar"]["only_a_correct"], "only_b_correct": m["mcnemar"]["only_b_correct"],
            "p_value": m["mcnemar"]["p_value"], "n": m["n"]}


def without_unparsed(predictions: str | Path, out_file: Path) -> tuple[Path, int]:
    """The graded file to score, and how many rows had no label (a think-first response that did not
    parse): `taosr1 eval` refuses such rows, so they go to a copy without them and are counted."""
    from taosr1.storage.tables import read_table

    df = read_table(predictions)
    col = "label" if "label" in df.columns else "grade" if "grade" in df.columns else None
    if col is None or not df[col].isna().any():
        return Path(predictions), 0
    missing = int(df[col].isna().sum())
    out_file.parent.mkdir(parents=True, exist_ok=True)
    df[df[col].notna()].to_parquet(out_file, index=False)
    return out_file, missing


def seed_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers kept per seed from a `taosr1 eval` metrics.json."""
    return {"n": metrics["n"], "macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
            "ndcg_at_10": metrics.get("ndcg_at_10"), "spearman": metrics.get("spearman"),
            "per_class_f1": {k: v["f1"] for k, v in metrics["per_class"].items()},
            "predicted": {k: v["predicted"] for k, v in metrics["per_class"].items()},
            "macro_over": metrics["macro_over"], "gold_without_prediction": metrics["gold_without_prediction"]}


def spread(values: list[float | None]) -> dict[str, Any] | None:
    """Mean, min and max of the values that are not None, and how many there were."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "seeds": len(v)}


def summarize(per_seed: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """Mean and min-max over seeds of macro-F1, accuracy and each class's F1.

    A class's F1 is undefined on a seed where it is neither gold nor predicted (None there); it is
    averaged over the seeds where it is defined, and `seeds` says over how many.
    """
    rows = list(per_seed.values())
    out: dict[str, Any] = {m: spread([r.get(m) for r in rows]) for m in METRICS}
    labels = list(dict.fromkeys(k for r in rows for k in r["per_class_f1"]))
    out["per_class_f1"] = {k: spread([r["per_class_f1"].get(k) for r in rows]) for k in labels}
    out["n"] = [r["n"] for r in rows]
    return out


def cell(s: dict[str, Any] | None) -> str:
    """A `spread` as a table cell: the mean, with (min-max) when the seeds differ."""
    if s is None:
        return "-"
    if s["seeds"] == 1 or s["min"] == s["max"]:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


def markdown_table(rows: dict[str, dict[str, Any]], labels: list[str], unit: str = "seed") -> str:
    """One line per baseline or model: mean (min-max over seeds, or folds: `unit`) of each metric."""
    head = ["row", f"{unit}s", "pairs", "macro-F1", "accuracy", "NDCG@10", "Spearman", *[f"F1 {k}" for k in labels]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    notes = []
    for name, r in rows.items():
        s = r["summary"]
        cells = [name, ",".join(str(k) for k in r["per_seed"]), ",".join(str(n) for n in s["n"]),
                 cell(s["macro_f1"]), cell(s["accuracy"]), cell(s.get("ndcg_at_10")), cell(s.get("spearman")),
                 *[cell(s["per_class_f1"].get(k)) for k in labels]]
        lines.append("| " + " | ".join(cells) + " |")
        short = {k: v.get("gold_without_prediction", 0) for k, v in r["per_seed"].items()}
        if any(short.values()):
            per = ", ".join(f"{unit} {k}: {v} ({r['per_seed'][k].get('unparsed', 0)} unparsed)"
                            for k, v in short.items() if v)
            notes.append(f"{name}: test pairs without a label: {per}; its metrics cover the labelled pairs only "
                         f"(the others were quarantined, unparsed, or left out by a test_rows cap).")
    return "\n".join(lines + ([""] + notes if notes else []))


def per_seed_table(rows: dict[str, dict[str, Any]], seeds: list, unit: str = "seed") -> str:
    """macro-F1 / accuracy of each row on each seed (or fold: `unit`)."""
    head = ["row", *[f"{unit} {s}".strip() for s in seeds]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, r in rows.items():
        cells = []
        for s in seeds:
            m = r["per_seed"].get(str(s)) or r["per_seed"].get(s)
            cells.append("-" if m is None else f"{m['macro_f1']:.3f} / {m['accuracy']:.3f} (n={m['n']})")
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def paired_table(paired: dict[str, dict[str, Any]], seeds: list, unit: str = "seed", metric: str = "macro_f1") -> str:
    """B - A in `metric` (macro-F1, or `macro_f1_over`: the mean F1 over --macro-over's grades) per seed
    with its paired 95% interval and McNemar's p, and the mean over seeds.

    The intervals resample one split's test queries (`taosr1 compare`'s `bootstrap_unit`). Random
    splits share pairs, so none is pooled over them; K query folds do not (bench/quality.py --folds
    scores their pooled files as one split, `seeds` ["pooled"] and `unit` "")."""
    many = len(seeds) > 1  # one pooled split: no mean, no count of splits
    title = {"macro_f1_over": "mean F1 over the --macro-over grades", "ndcg_at_10": "NDCG@10",
             "spearman": "Spearman(score, grade)"}.get(metric, "macro-F1")
    head = [f"B - A, {title}",
            *[f"{unit} {s}".strip() for s in seeds], *(["mean", f"{unit}s B > A"] if many else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, per_seed in paired.items():
        if any(metric not in per_seed[str(s)] for s in seeds):
            continue
        d = [per_seed[str(s)][metric] for s in seeds]
        mcnemar = metric not in ("ndcg_at_10", "spearman")  # McNemar's p is about the labels
        cells = [f"{x['difference']:+.3f} ({x['low']:+.3f}, {x['high']:+.3f})"
                 + (f" p {per_seed[str(s)]['p_value']:.2f}" if mcnemar else "") for s, x in zip(seeds, d)]
        if many:
            cells += [f"{np.mean([x['difference'] for x in d]):+.3f}", f"{sum(x['difference'] > 0 for x in d)} of {len(d)}"]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def run_baseline(baseline, train: pd.DataFrame, test: pd.DataFrame, gold_col: str, out_file: Path) -> dict[str, Any]:
    """Fit on train, grade test, write the graded file; what was fitted and how long it took."""
    start = time.perf_counter()
    graded = baseline.fit(train, gold_col).predict(test)
    seconds = time.perf_counter() - start
    out_file.parent.mkdir(parents=True, exist_ok=True)
    graded.to_parquet(out_file, index=False)
    return {**baseline.info(), "seconds": round(seconds, 2)}
