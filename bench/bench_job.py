"""Benchmark: the nightly job end to end against the raw engine, same model, same prompts.

    python bench/bench_job.py                      # default model, the sample x2 (2,526 rows)
    python bench/bench_job.py --model /path/to/model --copies 2 --master local[2]

Job: items/s from the input read to the grades commit (Spark session start excluded;
Python worker start, engine loads, tokenizing, shuffles, Parquet and Delta included).
Raw engine: one process, the same prompts (built by the same PromptBuilder), timed
around `engine.score` only, with as many torch threads as the job has cores.
Peak memory: RSS sampled every 0.2 s, summed over the driver, the JVM and the Python
workers (job), and the raw process's own peak RSS. Prints a table, writes
bench/results/bench_job.json.
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
sys.path.insert(0, str(HERE))


def make_input(copies: int, path: Path) -> int:
    """The bundled sample repeated `copies` times, each copy with new keys."""
    import pandas as pd
    from bench_spark_cost import make_input as write_rows

    from taosr1.core.resources import sample_path

    return write_rows(copies * len(pd.read_csv(sample_path(), dtype=str)), path)


def raw_engine(args) -> None:
    """Child process: score the job's prompts with the engine directly; print one JSON line."""
    import resource

    import pandas as pd

    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder, PromptConfig
    from taosr1.core.validate import ColumnConfig, validate_rows
    from taosr1.labeling.engines import EngineConfig, make_engine

    engine = make_engine(EngineConfig(model=args.model, threads=args.cores))
    scheme = load_scheme("taosr1")
    df = pd.read_parquet(args.input)
    fields, reasons = validate_rows(df, ColumnConfig())
    fields = fields[[r is None for r in reasons]]
    built = PromptBuilder(engine.tokenizer, scheme, PromptConfig()).build(fields.to_dict("records"))
    label_ids = scheme.token_ids(engine.tokenizer)
    cpu0, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    engine.score(built.ids, label_ids)
    seconds, cpu1 = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    print(json.dumps({"rows": len(built.ids), "seconds": seconds, "items_per_s": len(built.ids) / seconds,
                      "cpu_seconds": cpu, "items_per_cpu_s": len(built.ids) / cpu,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "padding_efficiency": engine.stats.padding_efficiency}))


class RssSampler:
    """Peak summed RSS of this process and all its descendants (JVM, Python workers), and
    the CPU seconds they used meanwhile (workers live through the run: worker reuse)."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak_total = self.peak_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = workers = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss
                    total += rss
                    if "pyspark.daemon" in " ".join(p.cmdline()) or "pyspark/daemon" in " ".join(p.cmdline()):
                        workers += rss
                except psutil.Error:
                    pass
            self.peak_total = max(self.peak_total, total)
            self.peak_workers = max(self.peak_workers, workers)
            time.sleep(self.interval)

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def __enter__(self):
        self.cpu0 = self.cpu_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.cpu = self.cpu_seconds() - self.cpu0
        self._stop.set()
        self._thread.join()


def run_job(args, input_path: Path, out: Path) -> dict:
    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir
    from taosr1.nightly.job import NightlyConfig, run
    from taosr1.spark.session import get_session, load_profile

    profile = load_profile("local")
    profile.master = args.master
    t = time.perf_counter()
    spark = get_session(profile)
    startup = time.perf_counter() - t
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                      {"label.engine.model": args.model, "partitions": args.partitions})
    with RssSampler() as rss:
        record = run(spark, cfg, input=str(input_path), output=str(out / "grades"), run_date="2025-06-01")
    spark.stop()
    return {"record": record, "startup_seconds": startup, "cpu_seconds": rss.cpu, "peak_rss_mb": rss.peak_total / 2**20,
            "peak_worker_rss_mb": rss.peak_workers / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="model folder ('' = the embedded default model)")
    ap.add_argument("--copies", type=int, default=2, help="copies of the 1,263-row sample (new keys each)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--partitions", type=int, default=0, help="grading partitions (0 = the cores)")
    ap.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--cores", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw_worker:
        return raw_engine(args)

    from taosr1.labeling.models import resolve_model

    args.model = resolve_model(args.model)
    cores = int(args.master.split("[")[1].rstrip("]")) if "[" in args.master else os.cpu_count()
    cores = cores if cores and cores > 0 else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="bench_job_") as tmp:
        tmp = Path(tmp)
        rows = make_input(args.copies, tmp / "pairs.parquet")
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        raw_out = subprocess.run([sys.executable, __file__, "--raw-worker", "--model", args.model,
                                  "--input", str(tmp / "pairs.parquet"), "--cores", str(cores)],
                                 env=env, capture_output=True, text=True, check=True).stdout
        raw = json.loads(raw_out.strip().splitlines()[-1])
        job = run_job(args, tmp / "pairs.parquet", tmp)
    rec = job["record"]
    ratio = rec["items_per_s"] / raw["items_per_s"]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
        "model": Path(args.model).name,
        "rows": rows,
        "master": args.master,
        "raw_engine": {k: round(v, 3) for k, v in raw.items()},
        "job": {"items_per_s": rec["items_per_s"], "seconds": rec["seconds"], "graded": rec["graded"],
                "quarantined": rec["quarantined"], "partitions": rec["partitions"], "workers": rec["workers"],
                "engine_loads": rec["engine_loads"], "padding_efficiency": rec["padding_efficiency"],
                "cpu_seconds": round(job["cpu_seconds"], 1),
                "items_per_cpu_s": round(rec["graded"] / job["cpu_seconds"], 3),
                "spark_startup_seconds_excluded": round(job["startup_seconds"], 1),
                "peak_rss_mb_driver_jvm_workers": round(job["peak_rss_mb"], 1),
                "peak_rss_mb_python_workers": round(job["peak_worker_rss_mb"], 1)},
        "job_over_raw": round(ratio, 3),
        "job_over_raw_per_cpu_second": round(rec["graded"] / job["cpu_seconds"] / raw["items_per_cpu_s"], 3),
        "target": 0.85,
        "load_average_after": os.getloadavg(),
        "note": "items/s is wall clock; on a machine shared with other work the per-CPU-second ratio is the steadier one",
    }
    print(f"\nnightly job vs raw engine: {result['model']}, {rows} rows, {args.master}, {result['machine']}")
    job_cpu = rec["graded"] / job["cpu_seconds"]
    print(f"{'':24}{'items/s':>10}{'seconds':>10}{'items/CPU-s':>13}{'peak RSS MB':>14}")
    print(f"{'raw engine (1 process)':24}{raw['items_per_s']:>10.2f}{raw['seconds']:>10.1f}{raw['items_per_cpu_s']:>13.3f}"
          f"{raw['peak_rss_mb']:>14.0f}")
    print(f"{'nightly job (Spark)':24}{rec['items_per_s']:>10.2f}{rec['seconds']:>10.1f}{job_cpu:>13.3f}"
          f"{job['peak_rss_mb']:>14.0f}   (Python workers {job['peak_worker_rss_mb']:.0f} MB)")
    print(f"job / raw = {ratio:.3f} items/s, {job_cpu / raw['items_per_cpu_s']:.3f} per CPU second (target >= 0.85); "
          f"Spark startup {job['startup_seconds']:.1f} s excluded; load average {os.getloadavg()[0]:.1f}")
    out = HERE / "results" / "bench_job.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
