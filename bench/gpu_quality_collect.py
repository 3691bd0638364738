"""What bench/gpu_quality.sh brings back from its seeds: one JSON, one tarball, one summary table.

    python bench/gpu_quality_collect.py merge --work WORK --seeds 0,1,2 --out OUT/train_eval_gpu.json \
        --tar OUT/graded.tar.gz
    python bench/gpu_quality_collect.py include --src bench/results/quality_stages.json --seeds 0,2 --out INC.json

`merge` reads each WORK/seed<N> (the pipeline part's and the think-first part's train_eval results,
written after every part, so a run cut short still counts what it finished), folds the seeds into
mean and min-max of macro-F1, accuracy, per-class F1 and items/s per model row, prints the table
and writes the JSON. The tarball holds, per seed, split/test.parquet and eval/*.parquet laid out
for `bench/quality.py --pipeline gpu=DIR/seed{seed}` (which needs `taosr1 eval`, whose figures
need matplotlib: run it where that is installed). Served rows (CumPT) whose cross-fitted
calibration did not finish come from OUTPUT/eval_uncalibrated, named <stage>_beta05; argmax rows
do not depend on beta.

`quality -- ARGS` runs bench/quality.py with ARGS; where matplotlib is not installed (the lent GPU
machine), `taosr1 eval`'s figures are left out (every plot function returns a figure that saves
nothing); its metrics, which are all bench/quality.py reads, are computed as always.

`include` keeps the baseline rows of an earlier bench/quality.py result for a subset of its seeds,
so that `bench/quality.py --seeds 0,2 --include INC.json` accepts it when a seed did not finish.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path

CLASSES = ["Excellent", "Related", "Mismatch", "Irrelevant"]


def _load(f: Path) -> dict:
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except json.JSONDecodeError:
        return {}


def seed_rows(d: Path) -> tuple[dict[str, dict], dict]:
    """Model row -> metrics of one seed's folder, and what finished there."""
    pipe, tf = _load(d / "train_eval_pipeline.json"), _load(d / "train_eval_think_first.json")
    rows: dict[str, dict] = {}
    calibrated = bool(pipe.get("eval_score"))
    if calibrated:
        rows.update(pipe["eval_score"])
    else:  # the cross-fitting did not finish: the first pass's grades, served at beta 0.5
        for k, m in (pipe.get("eval_score_uncalibrated") or {}).items():
            rows[k if k.endswith("_argmax") or k.startswith("zero_shot") else f"{k}_beta05"] = m
    for k, m in (tf.get("eval_generate") or {}).items():
        rows[f"gen_{k}"] = m
    status = {"pipeline": "complete" if calibrated else "uncalibrated only" if rows else "missing",
              "think_first": "complete" if tf.get("sft_think_first") else "missing",
              "generate": sorted((tf.get("eval_generate") or {}).keys()),
              "seconds": {"pipeline": pipe.get("seconds"), "think_first": tf.get("seconds")},
              "rc": {p: (d / f"rc_{p}").read_text().strip() if (d / f"rc_{p}").is_file() else None
                     for p in ("pipeline", "think_first")}}
    return rows, status


def merge(work: Path, seeds: list[int], out: Path, tar: Path | None) -> int:
    from taosr1.evaluation.quality import cell, spread, summarize

    per_seed, status = {}, {}
    for s in seeds:
        per_seed[s], status[s] = seed_rows(work / f"seed{s}")
    names = list(dict.fromkeys(k for s in seeds for k in per_seed[s]))
    summary = {}
    for n in names:
        ms = {s: per_seed[s][n] for s in seeds if n in per_seed[s]}
        speed = [m["n"] / m["seconds"] for m in ms.values() if m.get("seconds")]
        summary[n] = {**summarize(ms), "seeds": sorted(ms), "items_per_s": spread(speed),
                      "unparsed": [m.get("unparsed", 0) for m in ms.values()], "beta": [m.get("beta") for m in ms.values()]}
    head = ["row", "seeds", "pairs", "macro-F1", "accuracy", *[f"F1 {c}" for c in CLASSES], "items/s", "unparsed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for n, r in summary.items():
        lines.append("| " + " | ".join([n, ",".join(map(str, r["seeds"])), ",".join(map(str, r["n"])),
                                        cell(r["macro_f1"]), cell(r["accuracy"]),
                                        *[cell(r["per_class_f1"].get(c)) for c in CLASSES],
                                        cell(r["items_per_s"]).replace(".000", ""),
                                        ",".join(map(str, r["unparsed"]))]) + " |")
    table = "\n".join(lines)
    seeds_files = {s: {p: _load(work / f"seed{s}" / f"train_eval_{p}.json") for p in ("pipeline", "think_first")}
                   for s in seeds}
    result = {"seeds": seeds, "status": status, "summary": summary, "table": table, "per_seed": per_seed,
              "train_eval": seeds_files}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("\nstatus per seed:")
    for s in seeds:
        st = status[s]
        print(f"  seed {s}: pipeline {st['pipeline']} (rc {st['rc']['pipeline']}), think-first {st['think_first']} "
              f"(rc {st['rc']['think_first']}), generated {st['generate'] or 'none'}; seconds {st['seconds']}")
    print("\nmean (min-max) over seeds, each model's own grading (training/evaluate.py, scikit-learn):\n")
    print(table)
    print(f"\nwrote {out}")
    if tar:
        n = write_tar(work, seeds, status, tar)
        print(f"wrote {tar} ({n} files, {tar.stat().st_size / 1e6:.1f} MB)")
    return 0


def write_tar(work: Path, seeds: list[int], status: dict, tar: Path) -> int:
    """Per seed: split/test.parquet and eval/<row>.parquet (as seed_rows names them), for bench/quality.py;
    the stage markers, the pipeline summary and the eval JSONs beside them for the record."""
    import pandas as pd

    count = 0
    with tarfile.open(tar, "w:gz") as t:
        for s in seeds:
            d, dest = work / f"seed{s}", f"seed{s}"
            files: dict[str, Path] = {}
            if status[s]["pipeline"] == "complete":
                files.update({f"eval/{f.name}": f for f in (d / "eval").glob("*.parquet") if not f.name.startswith("gen_")})
            elif (d / "eval_uncalibrated").is_dir():
                for f in (d / "eval_uncalibrated").glob("*.parquet"):
                    if f.name.startswith("gen_"):
                        continue
                    stem = f.stem if f.stem.endswith("_argmax") or f.stem.startswith("zero_shot") else f"{f.stem}_beta05"
                    files[f"eval/{stem}.parquet"] = f
            for name in status[s]["generate"]:
                files[f"eval/gen_{name}.parquet"] = d / "eval" / f"gen_{name}.parquet"
            files["split/test.parquet"] = d / "split" / "test.parquet"
            for f in list(d.glob("*.json")) + list(d.glob("*/taosr1_stage.json")) + list(d.glob("*/taosr1_calibration*")) \
                    + list(d.glob("eval/*.json")):
                files.setdefault(f"record/{f.relative_to(d)}", f)
            for arc, f in files.items():
                if not f.is_file():
                    continue
                if f.suffix == ".parquet":
                    try:
                        pd.read_parquet(f)  # a file cut off by the deadline stays out
                    except Exception as e:  # noqa: BLE001
                        print(f"  left out {f}: unreadable ({e})")
                        continue
                t.add(f, arcname=f"{dest}/{arc}")
                count += 1
    return count


def include(src: Path, seeds: list[int], out: Path) -> int:
    prev = json.loads(src.read_text())
    from taosr1.evaluation import quality as q

    rows = {}
    for name, r in prev["rows"].items():
        if r.get("kind") != "baseline":
            continue
        per = {k: v for k, v in r["per_seed"].items() if int(k) in seeds}
        if len(per) == len(seeds):
            rows[name] = {"kind": "baseline", "per_seed": per, "summary": q.summarize(per)}
    out.write_text(json.dumps({**prev, "seeds": seeds, "rows": rows}, indent=2, default=str) + "\n")
    print(f"wrote {out}: {list(rows)} on seeds {seeds}")
    return 0


class _NoFigure:
    def savefig(self, buf, **kw) -> None:
        pass


def quality(args: list[str]) -> int:
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    if importlib.util.find_spec("matplotlib") is None:
        from taosr1.evaluation import plots

        for name in dir(plots):
            if name.endswith("_figure") and callable(getattr(plots, name)):
                setattr(plots, name, lambda *a, **k: _NoFigure())
        print("matplotlib is not installed: taosr1 eval runs without its figures (metrics unchanged)", flush=True)
    sys.path.insert(0, str(root / "bench"))
    import quality as qmod

    return qmod.main(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--work", required=True)
    m.add_argument("--seeds", default="0,1,2")
    m.add_argument("--out", required=True)
    m.add_argument("--tar", default="")
    i = sub.add_parser("include")
    i.add_argument("--src", required=True)
    i.add_argument("--seeds", required=True)
    i.add_argument("--out", required=True)
    sub.add_parser("quality", help="bench/quality.py with the arguments after --")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["quality"]:
        rest = argv[1:]
        return quality(rest[1:] if rest[:1] == ["--"] else rest)
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # taosr1 from the tree
    if a.cmd == "merge":
        return merge(Path(a.work), seeds, Path(a.out), Path(a.tar) if a.tar else None)
    return include(Path(a.src), seeds, Path(a.out))


if __name__ == "__main__":
    sys.exit(main())
