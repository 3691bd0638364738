"""Benchmark: Spark's own cost per row in the nightly job, phase by phase, against the raw engine.

    python bench/bench_spark_cost.py                       # tiny model, 50,000 rows, local[2]
    python bench/bench_spark_cost.py --rows 200000 --small 20000

With a model that costs almost nothing (the tiny random model) the job's time is Spark's:
read, shuffle (hash partitioning and the duplicate-key window), prepare (validate and
tokenize in Python workers), sort, grade, write and commit. Each phase is timed as a
cumulative plan run to Spark's `noop` sink on warm workers, so a phase's cost is the
difference to the one before; then the whole job (`nightly.run`) runs, with the RSS of
the driver's Python process, the JVM and the Python workers sampled. The raw engine
scores the same prompts in one process (bench/bench_job.py's raw worker). `--small`
reruns the job on fewer rows to show the driver's memory does not grow with the rows.
Also: what the persisted `prepared` frame holds (Spark's storage info), and the prepare
step's cost per row on one core, split into validate, cut, render and tokenize.
Prints tables, writes bench/results/bench_spark_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def sample_rows(rows: int):
    """The bundled sample repeated to `rows` rows, each copy with new query ids (a DataFrame)."""
    import pandas as pd

    from taosr1.core.resources import sample_path

    base = pd.read_csv(sample_path(), dtype=str, keep_default_na=False)
    parts, k = [], 0
    while sum(map(len, parts)) < rows:
        part = base.copy()
        part["query_id"] = part["query_id"] + f"-{k}"
        parts.append(part)
        k += 1
    return pd.concat(parts, ignore_index=True).head(rows)


def make_input(rows: int, path: Path) -> int:
    df = sample_rows(rows)
    df.to_parquet(path, index=False)
    return len(df)


class Rss:
    """Peak RSS by kind: the driver's Python process, the JVM, the Python workers (summed)."""

    def __init__(self, interval: float = 0.3):
        import psutil

        self.me = psutil.Process()
        self.interval = interval
        self.peak = {"driver_python": 0, "jvm": 0, "python_workers": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            now = {"driver_python": 0, "jvm": 0, "python_workers": 0}
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    cmd = " ".join(p.cmdline())
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                kind = ("driver_python" if p.pid == self.me.pid else "jvm" if "java" in cmd
                        else "python_workers" if "pyspark" in cmd else None)
                if kind:
                    now[kind] += rss
            for k, v in now.items():
                self.peak[k] = max(self.peak[k], v)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def mb(self) -> dict[str, float]:
        return {k: round(v / 2**20, 1) for k, v in self.peak.items()}


def prepare_breakdown(model: str, rows: int = 2526) -> dict[str, float]:
    """Microseconds per row of each prepare step, one process, one core."""
    import pandas as pd
    import pyarrow as pa

    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder, PromptConfig
    from taosr1.core.resources import sample_path
    from taosr1.core.validate import ColumnConfig, validate_rows
    from taosr1.labeling.models import load_tokenizer

    base = pd.read_csv(sample_path(), dtype=str, keep_default_na=False)
    table = pa.Table.from_pandas(pd.concat([base] * (rows // len(base) + 1), ignore_index=True).head(rows))
    builder = PromptBuilder(load_tokenizer(model), load_scheme("taosr1"), PromptConfig())
    out: dict[str, float] = {}

    def step(name, fn):
        t = time.perf_counter()
        value = fn()
        out[name] = round((time.perf_counter() - t) / rows * 1e6, 1)
        return value

    df = step("arrow_to_pandas", table.to_pandas)
    fields, _ = step("validate", lambda: validate_rows(df, ColumnConfig()))
    records = step("to_records", lambda: fields.to_dict("records"))
    cut, _ = step("cut_fields_to_budgets", lambda: builder.cut_fields(records))
    step("render_and_tokenize", lambda: builder.build(records))  # includes a second cut_fields
    out["render_and_tokenize"] = round(out["render_and_tokenize"] - out["cut_fields_to_budgets"], 1)
    slow = PromptBuilder(builder.tok, builder.scheme, builder.cfg)
    slow.__dict__["frame"] = None
    step("render_and_tokenize_per_row_template", lambda: slow.build(records))
    out["render_and_tokenize_per_row_template"] = round(
        out["render_and_tokenize_per_row_template"] - out["cut_fields_to_budgets"], 1)
    return out


def phases(spark, cfg, source: str) -> dict[str, object]:
    """Cumulative plans of the job to the noop sink: seconds each, and what persist holds."""
    import dataclasses

    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, BooleanType, IntegerType, StringType, StructField, StructType

    from taosr1.nightly.job import read_input
    from taosr1.spark import dispatch as D

    lc = cfg.label
    spec = D.WorkerSpec(label_cfg=json.dumps(dataclasses.asdict(lc), sort_keys=True), beta=0.5)
    parts = cfg.partitions or spark.sparkContext.defaultParallelism
    keys = [F.col(k) for k in lc.columns.keys]

    def noop(df) -> float:
        t = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t

    def plan(df):
        shuffled = (df.withColumn(D.POS, F.monotonically_increasing_id()).repartition(parts, *keys)
                    .withColumn(D.DUP, F.row_number().over(Window.partitionBy(*keys).orderBy(D.POS)) > 1))
        schema = StructType([*shuffled.schema.fields, StructField(D.REASON, StringType()),
                             StructField(D.IDS, ArrayType(IntegerType())), StructField(D.TRUNCATED, BooleanType()),
                             StructField(D.NTOK, IntegerType())])
        return shuffled, shuffled.mapInArrow(D.prepare_fn(spec), schema), schema

    read = read_input(spark, source)
    noop(plan(read.limit(64))[1])  # Python workers started and their tokenizers loaded before timing
    shuffled, prepared, schema = plan(read)
    out: dict[str, object] = {}
    out["read"] = noop(read)
    out["read+shuffle+window"] = noop(shuffled)
    out["read+shuffle+window+prepare"] = noop(prepared)
    cached = prepared.persist()
    t = time.perf_counter()
    rows = cached.count()
    out["persist_prepared"] = time.perf_counter() - t
    info = [r for r in spark.sparkContext._jsc.sc().getRDDStorageInfo()]
    out["persist_holds"] = {
        "rows": rows,
        "columns": [f"{f.name} {f.dataType.simpleString()}" for f in schema.fields],
        "memory_mb": round(sum(r.memSize() for r in info) / 2**20, 1),
        "disk_mb": round(sum(r.diskSize() for r in info) / 2**20, 1),
        "bytes_per_row": round(sum(r.memSize() + r.diskSize() for r in info) / max(rows, 1)),
        "storage_level": str(cached.storageLevel),
    }
    out["sort_from_persisted"] = noop(cached.filter(F.col(D.REASON).isNull()).sortWithinPartitions(F.desc(D.NTOK), *keys))
    cached.unpersist()
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in out.items()}


def run_job(spark, cfg, source: str, out: Path) -> dict:
    from taosr1.nightly.job import run

    lines: list[str] = []
    with Rss() as rss:
        t = time.perf_counter()
        record = run(spark, cfg, input=source, output=str(out), run_date="2025-06-01", log=lines.append)
        wall = time.perf_counter() - t
    return {"record": record, "wall": wall, "rss_mb": rss.mb(), "log": lines}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="model folder ('' = a tiny random model built on the spot)")
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--small", type=int, default=5000, help="rows of the second, smaller job (driver memory); 0: skip")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()

    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir
    from taosr1.nightly.job import NightlyConfig
    from taosr1.spark.session import get_session, load_profile

    cores = int(args.master.split("[")[1].split(",")[0].rstrip("]")) if "[" in args.master else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="bench_spark_cost_") as tmp:
        tmp = Path(tmp)
        if not args.model:
            from taosr1.labeling.tiny import build_tiny_model

            args.model = str(build_tiny_model(tmp / "tiny"))
        big = tmp / "big.parquet"
        rows = make_input(args.rows, big)
        breakdown = prepare_breakdown(args.model)
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        raw = json.loads(subprocess.run(
            [sys.executable, str(HERE / "bench_job.py"), "--raw-worker", "--model", args.model, "--input", str(big),
             "--cores", str(cores)], env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        profile = load_profile("local")
        profile.master = args.master
        spark = get_session(profile)
        cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                          {"label.engine.model": args.model, "label.beta": 0.5})
        phase = phases(spark, cfg, str(big))
        job = run_job(spark, cfg, str(big), tmp / "grades")
        small = None
        if args.small:
            make_input(args.small, tmp / "small.parquet")
            small = run_job(spark, cfg, str(tmp / "small.parquet"), tmp / "grades_small")
        spark.stop()

    rec = job["record"]
    ratio = rec["items_per_s"] / raw["items_per_s"]
    grade_write = job["wall"] - phase["read+shuffle+window+prepare"] - phase["sort_from_persisted"]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU, shared",
        "model": Path(args.model).name,
        "rows": rows,
        "master": args.master,
        "raw_engine": {k: round(v, 3) for k, v in raw.items()},
        "job": {"items_per_s": rec["items_per_s"], "seconds_record": rec["seconds"], "wall_seconds": round(job["wall"], 2),
                "graded": rec["graded"], "quarantined": rec["quarantined"], "partitions": rec["partitions"],
                "peak_rss_mb": job["rss_mb"]},
        "job_over_raw": round(ratio, 3),
        "phases_seconds_cumulative_noop": phase,
        "grade_write_commit_seconds_estimate": round(grade_write, 2),
        "prepare_us_per_row_one_core": breakdown,
        "small_job": None if small is None else {"rows": small["record"]["rows_in"],
                                                  "items_per_s": small["record"]["items_per_s"],
                                                  "peak_rss_mb": small["rss_mb"]},
        "target_job_over_raw": 0.7,
        "load_average_after": os.getloadavg(),
    }
    print(f"\nSpark cost per row: {result['model']}, {rows} rows, {args.master}, {result['machine']}")
    print(f"{'':34}{'items/s':>10}{'seconds':>10}")
    print(f"{'raw engine (1 process)':34}{raw['items_per_s']:>10.1f}{raw['seconds']:>10.1f}")
    print(f"{'nightly job':34}{rec['items_per_s']:>10.1f}{rec['seconds']:>10.1f}   job / raw = {ratio:.3f} (target 0.7)")
    print("\ncumulative plans to the noop sink (warm workers):")
    for k, v in phase.items():
        if k != "persist_holds":
            print(f"  {k:40}{v:>8.1f} s")
    print(f"  {'grade + write + commit (job - above)':40}{grade_write:>8.1f} s")
    h = phase["persist_holds"]
    print(f"persist holds {h['rows']} rows: {h['memory_mb']} MB memory + {h['disk_mb']} MB disk "
          f"({h['bytes_per_row']} B/row, {h['storage_level']}); columns: {', '.join(h['columns'])}")
    print("prepare, us per row on one core: " + ", ".join(f"{k} {v}" for k, v in breakdown.items()))
    print(f"peak RSS MB at {rows} rows: {job['rss_mb']}")
    if small:
        print(f"peak RSS MB at {small['record']['rows_in']} rows: {small['rss_mb']}")
    dest = HERE / "results" / "bench_spark_cost.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written {dest}")


if __name__ == "__main__":
    main()
