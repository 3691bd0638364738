"""Benchmark: an incremental nightly run (reuse: previous) against a full run of the same night.

    python bench/bench_incremental.py                    # tiny model, 20,208 rows, 90% repeated
    python bench/bench_incremental.py --model /path/to/model --copies 16 --repeat 0.9
    python bench/bench_incremental.py --model default --set label.engine.dtype=bfloat16 \
        --out bench/results/bench_incremental_smollm_20k.json   # the shipped model, 20,208 rows

Night 1 grades N pairs (the bundled sample repeated, each copy's titles made distinct, so
no two rows share a fingerprint) and starts the fingerprint table. Night 2 keeps a
`--repeat` share of night 1's pairs unchanged and replaces the rest with new pairs; it
runs twice on warm workers: full (reuse: off, into another table), then incremental
(reuse: previous). Times are end to end around `nightly.run` (read, fingerprint lookup,
grading, commit, fingerprint update, runs row); the Spark session start is excluded.
Prints a table, writes JSON (`--out`, default bench/results/bench_incremental.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def make_nights(copies: int, repeat: float, folder: Path) -> tuple[Path, Path, int, int]:
    import pandas as pd

    from taosr1.core.resources import sample_path

    base = pd.read_csv(sample_path(), dtype=str, keep_default_na=False)

    def copy(k: int):
        part = base.copy()
        part["query_id"] = part["query_id"] + f"-{k}"
        part["product_title"] = part["product_title"] + f" (lot {k})"  # a distinct prompt per copy
        return part

    night1 = pd.concat([copy(k) for k in range(copies)], ignore_index=True)
    keep = night1.sample(frac=repeat, random_state=0)
    new = pd.concat([copy(copies + k) for k in range(copies)], ignore_index=True).head(len(night1) - len(keep))
    night2 = pd.concat([keep, new], ignore_index=True).sample(frac=1.0, random_state=1)
    night1.to_parquet(folder / "night1.parquet", index=False)
    night2.to_parquet(folder / "night2.parquet", index=False)
    return folder / "night1.parquet", folder / "night2.parquet", len(night1), len(keep)


def timed_run(spark, cfg, **kw) -> tuple[dict, float]:
    from taosr1.nightly.job import run

    t = time.perf_counter()
    record = run(spark, cfg, **kw)
    return record, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="",
                    help="model folder; '' = a tiny random model built on the spot, 'default' = the embedded default")
    ap.add_argument("--copies", type=int, default=16, help="copies of the 1,263-row sample (16: 20,208 rows)")
    ap.add_argument("--repeat", type=float, default=0.9, help="share of night 1's pairs night 2 repeats")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a conf/nightly.yaml override for both nights, e.g. label.engine.dtype=bfloat16")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_incremental.json")
    args = ap.parse_args()

    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir
    from taosr1.labeling.models import resolve_model
    from taosr1.nightly.job import NightlyConfig
    from taosr1.spark.session import get_session, load_profile

    with tempfile.TemporaryDirectory(prefix="bench_incremental_") as tmp:
        tmp = Path(tmp)
        if not args.model:
            from taosr1.labeling.tiny import build_tiny_model

            args.model = str(build_tiny_model(tmp / "tiny"))
        elif args.model == "default":
            args.model = resolve_model("")
        n1, n2, rows, repeated = make_nights(args.copies, args.repeat, tmp)
        profile = load_profile("local")
        profile.master = args.master
        spark = get_session(profile)

        def cfg(reuse: str):
            values = {"label.engine.model": args.model, "label.beta": 0.5, "reuse": reuse}
            return cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                               {**values, **cfgmod.parse_overrides(args.overrides)})

        out, full_out = tmp / "grades", tmp / "full"
        first, t1 = timed_run(spark, cfg("previous"), input=str(n1), output=str(out), run_date="2025-06-01")
        full, tf = timed_run(spark, cfg("off"), input=str(n2), output=str(full_out), run_date="2025-06-02")
        incr, ti = timed_run(spark, cfg("previous"), input=str(n2), output=str(out), run_date="2025-06-02")
        spark.stop()

    ratio = ti / tf
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU, shared",
        "model": Path(args.model).name,
        "master": args.master,
        "overrides": args.overrides,
        "rows_per_night": rows,
        "repeated_share": args.repeat,
        "repeated_rows": repeated,
        "night1_with_fingerprints": {"seconds_end_to_end": round(t1, 2), "record_seconds": first["seconds"],
                                     "graded": first["graded"], "fingerprints_added": first["fingerprints_added"]},
        "night2_full": {"seconds_end_to_end": round(tf, 2), "record_seconds": full["seconds"],
                        "graded": full["graded"], "reused": full["reused"]},
        "night2_incremental": {"seconds_end_to_end": round(ti, 2), "record_seconds": incr["seconds"],
                               "graded": incr["graded"], "reused": incr["reused"],
                               "scored": incr["graded"] - incr["reused"],
                               "fingerprints_added": incr["fingerprints_added"], "reuse": incr["reuse"]},
        "incremental_over_full": round(ratio, 3),
        "target": 0.2,
        "load_average_after": os.getloadavg(),
    }
    print(f"\nincremental vs full nightly run: {result['model']}, {rows} rows, {args.repeat:.0%} repeated, "
          f"{args.master}, {result['machine']}")
    print(f"{'':30}{'seconds':>10}{'graded':>10}{'reused':>10}{'scored':>10}")
    print(f"{'night 1 (starts fingerprints)':30}{t1:>10.1f}{first['graded']:>10}{0:>10}{first['graded']:>10}")
    print(f"{'night 2 full':30}{tf:>10.1f}{full['graded']:>10}{0:>10}{full['graded']:>10}")
    print(f"{'night 2 incremental':30}{ti:>10.1f}{incr['graded']:>10}{incr['reused']:>10}"
          f"{incr['graded'] - incr['reused']:>10}")
    print(f"incremental / full = {ratio:.3f} (target <= 0.2); load average {os.getloadavg()[0]:.1f}")
    dest = args.out
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written {dest}")


if __name__ == "__main__":
    main()
