"""Baselines and trained models on the same held-out queries, over several query splits.

For each seed, the training pipeline's own split of the input (default: the bundled ESCI sample;
test_size 0.3) is written to WORK/seed<N>/split. Each baseline (taosr1.evaluation.baselines) is
fitted on the training part and grades the test part; model rows are graded files the lead's runs
already wrote. Every file, baseline or model, is scored by `taosr1 eval` with gold joined from the
seed's test split on the key columns, so a model graded on other pairs than that split fails loudly.
Prints mean and min-max over seeds of macro-F1, accuracy and per-class F1 and writes the JSON.

    python bench/quality.py --out bench/results/quality_baselines.json          # baselines only
    # add model rows: a pipeline output folder per seed (one row per OUT/eval/<stage>.parquet) ...
    python bench/quality.py --pipeline recipe=runs/recipe_seed{seed} --include bench/results/quality_baselines.json
    # ... or one graded file per seed (a `taosr1 label` output, or any file with `label` and the keys)
    python bench/quality.py --model sft=runs/recipe_seed{seed}/eval/sft.parquet --baselines none
    # a baseline's settings: the fine-tuned MiniLM at another learning rate
    python bench/quality.py --baselines minilm_ft --baseline-arg minilm_ft.lr=5e-5
    # the cosine of another sentence-transformers model, from a local folder (never downloaded)
    python bench/quality.py --baselines cosine,stack --baseline-arg cosine.model_dir=DIR --baseline-arg stack.model_dir=DIR
    # is one row really better than another? B - A per seed with a paired interval (`taosr1 compare`)
    python bench/quality.py --baselines none --pipeline g=runs/recipe_seed{seed} --paired g/sft:g/grpo

`--include` takes the rows of an earlier result (same seeds, test_size and input) instead of
recomputing them; `--seeds 0` runs one split.

`--folds K` splits by K query folds instead (the pipeline's `test_folds`/`test_fold`, shuffled by
the one seed of --seeds): fold k's test queries are no other fold's, so over the K folds every pair
is graded once by a model that did not train on its query. Besides the per-fold table, each row's
K graded files pool into one file of every pair, scored once by `taosr1 eval` (and --paired by
`taosr1 compare`, its interval over all the queries): a rare grade counts all its pairs, not the
few one random split holds out (`--only-folds` of two or more pools those folds and says which).
Patterns name the fold with {fold}:

    for k in 0 1 2 3 4; do taosr1 pipeline --config conf/train/cpu.yaml --output runs/cv5_f$k \
        --set test_folds=5 --set test_fold=$k; done
    python bench/quality.py --folds 5 --pipeline recipe=runs/cv5_f{fold} --paired cosine:recipe/grpo

Folds run on different days pool too: `--keep DIR` writes every row's graded file of each fold
run (keys, query and the row's own columns) to DIR, and `--graded DIR` scores them as rows again:

    python bench/quality.py --folds 5 --only-folds 1,2 --pipeline recipe=runs/cv5_f{fold} --keep bench/results/graded
    python bench/quality.py --folds 5 --only-folds 0,3,4 --pipeline recipe=runs/cv5_f{fold} --keep bench/results/graded
    python bench/quality.py --folds 5 --baselines none --graded bench/results/graded --paired cosine:recipe/grpo
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from taosr1.evaluation import quality as q  # noqa: E402
from taosr1.evaluation.registry import BASELINES, make_baseline  # noqa: E402


def _named(values: list[str], flag: str, key: str) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, pattern = v.partition("=")
        if not sep or not name or f"{{{key}}}" not in pattern:
            sys.exit(f"{flag} {v!r}: expected NAME=PATTERN with {{{key}}} in the pattern, e.g. "
                     f"sft=runs/recipe_{key}{{{key}}}/eval/sft.parquet")
        out[name] = pattern
    return out


def set_field(baselines: dict, arg: str) -> None:
    """--baseline-arg NAME.FIELD=VALUE: a numeric setting, the value cast to the field's type, or a
    cosine's or stack's `model_dir` (a local sentence-transformers folder)."""
    target, _, value = arg.partition("=")
    name, _, fld = target.partition(".")
    current = getattr(baselines.get(name), fld, None) if fld and not fld.startswith("_") else None
    if not value or not (type(current) in (int, float) or fld == "model_dir" and isinstance(current, str)):
        sys.exit(f"--baseline-arg {arg}: expected NAME.FIELD=VALUE, NAME one of the baselines run ({list(baselines)}) "
                 f"and FIELD one of its numeric settings or model_dir")
    try:
        setattr(baselines[name], fld, type(current)(value))
    except ValueError:
        sys.exit(f"--baseline-arg {arg}: {fld} must be {type(current).__name__}, got {value!r}")


def model_files(models: dict[str, str], pipelines: dict[str, str], seed: int, key: str = "seed") -> dict[str, Path]:
    """Row name -> graded file of this seed (or fold: `key`)."""
    files = {}
    for name, pattern in models.items():
        files[name] = Path(pattern.format(**{key: seed}))
    for prefix, pattern in pipelines.items():
        d = Path(pattern.format(**{key: seed}))
        order = {"zero_shot": 0, "sft": 1, "dpo": 2, "grpo": 3}  # pipeline order, then any other name
        found = sorted(glob.glob(str(d / "eval" / "*.parquet")), key=lambda f: (order.get(Path(f).stem, 9), f))
        if not found:
            sys.exit(f"--pipeline {prefix}: no graded files {d}/eval/*.parquet for {key} {seed} "
                     f"(run `taosr1 pipeline` with {key if key == 'seed' else 'test_fold'} {seed} and evaluate on)")
        for f in found:
            files[f"{prefix}/{Path(f).stem}"] = Path(f)
    for name, f in files.items():
        if not f.is_file():
            sys.exit(f"model row {name}: {f} ({key} {seed}) does not exist")
    return files


def _check_pipeline_split(pipelines: dict[str, str], seed: int, test_file: Path, key: str = "seed") -> None:
    """A pipeline folder's split/test.parquet must hold the same pairs as this seed's (or fold's) split."""
    ours = pd.read_parquet(test_file, columns=["query_id", "product_id"]).astype(str)
    for prefix, pattern in pipelines.items():
        theirs_f = Path(pattern.format(**{key: seed})) / "split" / "test.parquet"
        if not theirs_f.is_file():
            continue
        theirs = pd.read_parquet(theirs_f, columns=["query_id", "product_id"]).astype(str)
        extra = theirs.merge(ours, how="left", indicator=True)["_merge"].eq("left_only").sum()
        if extra:
            sys.exit(f"--pipeline {prefix}: {theirs_f} holds {extra} test pair(s) outside {key} {seed}'s split "
                     f"({test_file}); was the pipeline run with {key if key == 'seed' else 'test_fold'} {seed} and "
                     f"the same {'test_size' if key == 'seed' else 'test_folds, seed'} and input?")


def compare_rows(rows: dict, a: str, b: str, seed: int, test_f: Path, gold_col: str, work: Path,
                 macro_over: list[str]) -> dict:
    """`taosr1 compare` of rows A and B's graded files on this seed's test pairs."""
    files = [rows[n]["per_seed"][str(seed)]["predictions"] for n in (a, b)]  # names checked before the seed ran
    for n, f in zip((a, b), files):
        if not Path(f).is_file():
            sys.exit(f"--paired {a}:{b}: row {n}'s graded file {f} (split {seed}) is gone; an --include'd row keeps "
                     f"only its numbers: grade that row again in this run")
    return q.taosr1_compare(*files, test_f, gold_col, work / f"{b}-vs-{a}".replace("/", "_"), macro_over)


def other_settings(theirs: dict, setup: dict) -> dict:
    """The split settings (seeds, test_size, input, gold column, folds) in which an earlier result differs."""
    return {k: (theirs.get(k), setup.get(k)) for k in (*setup, "folds") if theirs.get(k) != setup.get(k)}


def _kept_index(d: Path, setup: dict, flag: str) -> dict:
    """DIR/index.json of a --keep folder: the settings it was graded with and each row's kind and files."""
    f = d / "index.json"
    if not f.is_file():
        if flag == "--keep":
            return {"setup": setup, "rows": {}}
        sys.exit(f"--graded {d}: no {f}; name a folder an earlier run wrote with --keep")
    index = json.loads(f.read_text())
    differ = other_settings(index["setup"], setup)
    if differ:
        sys.exit(f"{flag} {d}: its rows were graded with other settings {differ} (theirs, ours); use the same "
                 f"--input, --folds, --seeds, --test-size and --gold-col, or another folder")
    return index


def kept_rows(dirs: list[str], setup: dict, split: int) -> dict[str, tuple[Path, str]]:
    """The rows --graded folders hold for this split: name -> (graded file, kind)."""
    out: dict[str, tuple[Path, str]] = {}
    for d in map(Path, dirs):
        for name, r in _kept_index(d, setup, "--graded")["rows"].items():
            if str(split) in r["files"]:
                out[name] = (d / r["files"][str(split)], r["kind"])
    return out


def keep_graded(d: Path, setup: dict, split: int, key: str, graded: dict[str, tuple[Path, dict]],
                test: pd.DataFrame) -> None:
    """Write this split's graded files to the --keep folder: the keys and query, and the columns the row
    added to the test pairs (label, score, probabilities), not the pairs' texts; index.json lists them."""
    index = _kept_index(d, setup, "--keep")
    ident = ["query_id", "product_id", "query"]
    for name, (f, info) in graded.items():
        df = pd.read_parquet(info.get("source", f))  # a model's own file: its unparsed rows are counted again
        rel = f"{key}{split}/{name.replace('/', '__')}.parquet"
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        df[[c for c in df.columns if c in ident or c not in test.columns]].to_parquet(d / rel, index=False)
        index["rows"].setdefault(name, {"kind": info["kind"], "files": {}})["files"][str(split)] = rel
    (d / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="", help="Split seeds, comma-separated (default 0,1,2; with --folds, 0).")
    ap.add_argument("--test-size", type=float, default=0.3, help="Share of queries held out.")
    ap.add_argument("--folds", type=int, default=0, metavar="K",
                    help="K query folds instead of random splits: fold k is split k's test side, --seeds one "
                         "shuffle seed, {fold} in patterns; each row's K files are also scored pooled.")
    ap.add_argument("--only-folds", default="", metavar="LIST",
                    help="With --folds K: run these folds only (comma-separated); two or more pool, named as such.")
    ap.add_argument("--input", default="", help="Labelled pairs (default: the bundled ESCI sample; "
                                                "bundled:union is the sample and the judged lists with texts).")
    ap.add_argument("--gold-col", default="esci_label")
    ap.add_argument("--baselines", default=",".join(BASELINES), help=f"Comma-separated of {list(BASELINES)}, or none.")
    ap.add_argument("--baseline-arg", action="append", default=[], metavar="NAME.FIELD=VALUE",
                    help="Set a baseline's field, e.g. minilm_ft.epochs=6 or cosine.model_dir=DIR (repeatable).")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FILE_PATTERN",
                    help="A graded file per seed, {seed} in the path (repeatable).")
    ap.add_argument("--pipeline", action="append", default=[], metavar="PREFIX=DIR_PATTERN",
                    help="A `taosr1 pipeline` output folder per seed; one row per DIR/eval/<stage>.parquet.")
    ap.add_argument("--include", action="append", default=[], help="Rows of an earlier result JSON to keep.")
    ap.add_argument("--keep", default="", metavar="DIR",
                    help="Also write each row's graded file of each split to DIR (the keys, the query and the row's "
                         "own columns, listed in DIR/index.json), so folds run apart can be pooled later by --graded.")
    ap.add_argument("--graded", action="append", default=[], metavar="DIR",
                    help="Rows kept by earlier runs' --keep DIR (same settings): scored as if graded in this run, on "
                         "the splits DIR holds; a row this run grades itself on a split wins (repeatable).")
    ap.add_argument("--paired", action="append", default=[], metavar="A:B",
                    help="Two rows of this run (or --include'd): B - A per seed by `taosr1 compare` (repeatable).")
    ap.add_argument("--macro-over", default="", metavar="LABELS",
                    help="Also the mean F1 over these labels (comma-separated, e.g. Excellent,Related,Irrelevant): "
                         "macro-F1 without a grade too rare to resolve; --paired then compares it too, with its interval.")
    ap.add_argument("--work", default="runs/quality", help="Splits, graded files and eval reports go here.")
    ap.add_argument("--out", default="bench/results/quality.json")
    a = ap.parse_args(argv)
    a.seeds = [int(s) for s in (a.seeds or ("0" if a.folds else "0,1,2")).split(",") if s.strip()]
    if a.folds and (a.folds < 2 or len(a.seeds) != 1):
        sys.exit(f"--folds {a.folds}: expected K >= 2 and one --seeds value (the folds' shuffle seed), got {a.seeds}")
    a.key = "fold" if a.folds else "seed"
    a.splits = list(range(a.folds)) if a.folds else a.seeds
    if a.only_folds:
        only = [int(k) for k in a.only_folds.split(",") if k.strip()]
        if not a.folds or not all(0 <= k < a.folds for k in only):
            sys.exit(f"--only-folds {a.only_folds}: expected folds of --folds {a.folds} (0..{a.folds - 1})")
        a.splits = only
    pairs = [tuple(p.split(":")) for p in a.paired]
    if any(len(p) != 2 or not all(p) for p in pairs):
        sys.exit(f"--paired {a.paired}: expected A:B, two row names, e.g. recipe/sft:recipe/grpo")
    a.paired = pairs
    a.baselines = [] if a.baselines.strip() == "none" else [b.strip() for b in a.baselines.split(",") if b.strip()]
    a.macro_over = [x.strip() for x in a.macro_over.split(",") if x.strip()]
    return a


def macro_over(rows: dict[str, dict], labels: list[str], known: list[str]) -> dict[str, dict]:
    """Per row: the mean F1 over `labels` on each seed, and its mean (min-max) over seeds."""
    unknown = [x for x in labels if x not in known]
    if unknown:
        sys.exit(f"--macro-over {','.join(labels)}: {unknown} not labels of the scheme {known}")
    out = {}
    for name, r in rows.items():
        per = {k: sum(m["per_class_f1"].get(x) or 0.0 for x in labels) / len(labels) for k, m in r["per_seed"].items()}
        out[name] = {"per_seed": per, "summary": q.spread(list(per.values()))}
    return out


def _included(paths: list[str], setup: dict) -> dict[str, dict]:
    """The rows of earlier results made with the same seeds (or folds), test_size, input and gold column."""
    rows: dict[str, dict] = {}
    for inc in paths:
        prev = json.loads(Path(inc).read_text())
        differ = other_settings(prev, setup)
        if differ:
            sys.exit(f"--include {inc}: made with other settings {differ} (theirs, ours); rerun those rows instead")
        rows.update(prev["rows"])
    return rows


def _metrics(name: str, f: Path, info: dict, test_f: Path, gold_col: str, n_test: int, labels: list[str],
             out: Path) -> dict:
    """`taosr1 eval`'s metrics of one graded file; a file whose every response was unparsed scores 0."""
    if info.get("unparsed") and pd.read_parquet(f).empty:
        # every response unparsed (a think-first model graded by generation): `taosr1 eval` has no row to
        # score; nothing was answered, so nothing is right
        print(f"  {name:<20} every response unparsed ({info['unparsed']}): macro-F1 0", flush=True)
        return {"n": 0, "macro_f1": 0.0, "accuracy": 0.0, "macro_over": labels, "gold_without_prediction": n_test,
                "per_class": {k: {"f1": 0.0, "predicted": 0} for k in labels}}
    return q.taosr1_eval(f, test_f, gold_col, out)


def _grade_seed(seed: int, a: argparse.Namespace, baselines: dict, rows: dict, labels: list[str]) -> dict[str, dict]:
    """Split, fit and grade the baselines, score every row with `taosr1 eval`; the --paired results of this seed."""
    sdir = Path(a.work) / f"{a.key}{seed}"
    train_f, test_f = q.split_for_seed(a.seeds[0] if a.folds else seed, sdir, a.test_size, a.input, log=print,
                                       folds=a.folds, fold=seed if a.folds else 0)
    train, test = pd.read_parquet(train_f), pd.read_parquet(test_f)
    print(f"{a.key} {seed}: {len(train)} training / {len(test)} test pairs ({test_f})", flush=True)
    files = model_files(a.models, a.pipelines, seed, a.key)
    kept = {n: v for n, v in kept_rows(a.graded, a.setup, seed).items() if n not in baselines and n not in files}
    known = [*rows, *baselines, *files, *kept]
    for pa, pb in a.paired:  # before any baseline is fitted: a typo fails in seconds
        if pa not in known or pb not in known:
            sys.exit(f"--paired {pa}:{pb}: no row {pa if pa not in known else pb!r} on {a.key} {seed}; "
                     f"the rows are {known}")
    graded: dict[str, tuple[Path, dict]] = {}
    for n, b in baselines.items():
        f = sdir / "baselines" / f"{n}.parquet"
        graded[n] = (f, {"kind": "baseline", **q.run_baseline(b, train, test, a.gold_col, f)})
    _check_pipeline_split(a.pipelines, seed, test_f, a.key)
    for n, (f, kind) in {**{n: (f, "model") for n, f in files.items()}, **kept}.items():
        scored, unparsed = q.without_unparsed(f, sdir / "models" / f"{n.replace('/', '_')}.parquet")
        graded[n] = (scored, {"kind": kind, "source": str(f), "unparsed": unparsed})
    if a.keep:
        keep_graded(Path(a.keep), a.setup, seed, a.key, {n: g for n, g in graded.items() if n not in kept}, test)
    for n, (f, info) in graded.items():
        m = _metrics(n, f, info, test_f, a.gold_col, len(test), labels, sdir / "eval" / n.replace("/", "_"))
        row = rows.setdefault(n, {"kind": info["kind"], "per_seed": {}})
        row["per_seed"][str(seed)] = {**q.seed_row(m), "predictions": str(f), **{k: v for k, v in info.items()
                                                                               if k != "kind"}}
        nd = m.get("ndcg_at_10")
        print(f"  {n:<20} macro-F1 {m['macro_f1']:.4f}  accuracy {m['accuracy']:.4f}  "
              f"NDCG@10 {'-' if nd is None else f'{nd:.4f}'}  n {m['n']}", flush=True)
    return {f"{pb} - {pa}": compare_rows(rows, pa, pb, seed, test_f, a.gold_col, sdir / "compare", a.macro_over)
            for pa, pb in a.paired}


def pooled(rows: dict[str, dict], a: argparse.Namespace, labels: list[str]) -> dict:
    """--folds: each row's K graded files as one file of every pair, scored once by `taosr1 eval`, and
    --paired by `taosr1 compare` on those files (every query once, so one interval over all of them)."""
    missing = [k for k in range(a.folds) if k not in a.splits]
    part = "_folds" + "-".join(map(str, a.splits)) if missing else ""  # a partial pool says so
    work = Path(a.work) / f"pooled{a.folds}{part}"
    gold = work / "test.parquet"
    work.mkdir(parents=True, exist_ok=True)
    pairs = pd.concat([pd.read_parquet(Path(a.work) / f"fold{k}" / "split" / "test.parquet") for k in a.splits],
                      ignore_index=True)
    pairs.to_parquet(gold, index=False)
    out, skipped = {}, []
    for name, r in rows.items():
        files = [r["per_seed"].get(str(k), {}).get("predictions") for k in a.splits]
        if not all(f and Path(f).is_file() for f in files):
            skipped.append(name)  # an --include'd row keeps only its numbers
            continue
        f = work / "rows" / f"{name.replace('/', '_')}.parquet"
        f.parent.mkdir(parents=True, exist_ok=True)
        pd.concat([pd.read_parquet(x) for x in files], ignore_index=True).to_parquet(f, index=False)
        m = q.taosr1_eval(f, gold, a.gold_col, work / "eval" / name.replace("/", "_"))
        out[name] = {"kind": r["kind"], "per_seed": {"pooled": {**q.seed_row(m), "predictions": str(f)}}}
        out[name]["summary"] = q.summarize(out[name]["per_seed"])
    paired = {f"{pb} - {pa}": {"pooled": q.taosr1_compare(out[pa]["per_seed"]["pooled"]["predictions"],
                                                          out[pb]["per_seed"]["pooled"]["predictions"], gold,
                                                          a.gold_col, work / "compare" / f"{pb}-vs-{pa}".replace("/", "_"),
                                                          a.macro_over)}
              for pa, pb in a.paired if pa in out and pb in out}
    return {"rows": out, "paired": paired, "skipped": skipped, "pairs": len(pairs), "folds": a.splits,
            "missing_folds": missing,
            "macro_over": macro_over(out, a.macro_over, labels) if a.macro_over else {}}


def _print_pooled(p: dict, a: argparse.Namespace, labels: list[str]) -> None:
    gone = p["missing_folds"]
    which = f"folds {','.join(map(str, p['folds']))} of {a.folds} (not every pair: fold{'s' * (len(gone) > 1)} " \
        f"{','.join(map(str, gone))} not run)" if gone else f"the {a.folds} folds"
    print(f"\npooled over {which}: every one of the {p['pairs']} pairs graded once by a model (or baseline "
          f"fit) that did not see its query, scored once by `taosr1 eval`:\n")
    print(q.markdown_table(p["rows"], labels, "split"))
    if p["skipped"]:
        print(f"\nnot pooled (no graded files of every fold in this run): {', '.join(p['skipped'])}")
    if p["macro_over"]:
        print(f"\nmean F1 over {', '.join(a.macro_over)}, pooled:\n")
        print("\n".join(f"| {n} | {q.cell(v['summary'])} |" for n, v in p["macro_over"].items()))
    if p["paired"]:
        print("\npooled, B - A (`taosr1 compare`: 95% bootstrap interval over all the queries, McNemar p):\n")
        print(q.paired_table(p["paired"], ["pooled"], ""))
        for metric in ("macro_f1_over", "ndcg_at_10", "spearman") if a.macro_over else ("ndcg_at_10", "spearman"):
            print("\n" + q.paired_table(p["paired"], ["pooled"], "", metric))


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    a.models, a.pipelines = _named(a.model, "--model", a.key), _named(a.pipeline, "--pipeline", a.key)
    setup = {"seeds": a.seeds, "test_size": a.test_size, "input": a.input or "bundled ESCI sample",
             "gold_col": a.gold_col, **({"folds": a.folds} if a.folds else {})}
    a.setup = setup
    rows = _included(a.include, setup)
    baselines = {n: make_baseline(n) for n in a.baselines}  # one instance per baseline: cosine keeps its embeddings
    for arg in a.baseline_arg:
        set_field(baselines, arg)
    labels = baselines[a.baselines[0]].scheme.names if baselines else ["Excellent", "Related", "Mismatch", "Irrelevant"]
    if a.macro_over:
        macro_over({}, a.macro_over, labels)  # a typo fails before any baseline is fitted
    paired: dict[str, dict] = {}
    for seed in a.splits:
        for name, result in _grade_seed(seed, a, baselines, rows, labels).items():
            paired.setdefault(name, {})[str(seed)] = result
    for r in rows.values():
        r["summary"] = q.summarize(r["per_seed"])

    table = q.markdown_table(rows, labels, a.key)
    print(f"\nmean (min-max) over {a.key}s " + ",".join(map(str, a.splits)) + ", each computed by `taosr1 eval`:\n")
    print(table)
    print(f"\nmacro-F1 / accuracy per {a.key}:\n")
    print(q.per_seed_table(rows, a.splits, a.key))
    subset = macro_over(rows, a.macro_over, labels) if a.macro_over else {}
    if subset:
        print(f"\nmean F1 over {', '.join(a.macro_over)}: mean (min-max) over {a.key}s\n")
        print("\n".join(f"| {n} | {q.cell(v['summary'])} |" for n, v in subset.items()))
    if paired:
        print("\npaired, B - A (`taosr1 compare`: 95% bootstrap interval over the split's test queries, McNemar p):\n")
        print(q.paired_table(paired, a.splits, a.key))
        if a.macro_over:
            print("\n" + q.paired_table(paired, a.splits, a.key, "macro_f1_over"))
    pool = pooled(rows, a, labels) if a.folds and len(a.splits) >= 2 else {}
    if pool:
        _print_pooled(pool, a, labels)
    result = {**setup, "labels": labels, "rows": rows, "table": table, "paired": paired,
              "macro_over": {"labels": a.macro_over, "rows": subset}, **({"pooled": pool} if pool else {}),
              "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
