"""What side-by-side evaluation costs on this machine: making tasks, saving an answer, the
page round trip, and the report.

    python bench/bench_sbs.py [--pairs 100000 1000000] [--items 2000] [--k 3] [--raters 10]

Synthetic prediction sets (4 labels, 5 segments, ~45% of pairs labelled differently).
`make` draws --items regular items plus 10% gold; the report scores random answers from
every rater (bootstrap 1000). The answer timings are one rater answering in sequence:
`store.save` alone (one SQLite commit, WAL, synchronous=FULL), and POST answer + GET next
page through the real threaded server over HTTP. Prints a table and writes
bench/results/bench_sbs.json.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import platform
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = np.array(["Excellent", "Related", "Mismatch", "Irrelevant"])
    la = rng.choice(4, size=n, p=[0.4, 0.2, 0.1, 0.3])
    lb = np.where(rng.random(n) < 0.45, rng.choice(4, size=n), la)
    qid = rng.integers(0, max(1, n // 5), size=n)
    base = pd.DataFrame({"query_id": qid.astype(str), "product_id": np.arange(n).astype(str),
                         "query": [f"query {q}" for q in qid], "product_title": [f"item {i}" for i in range(n)],
                         "source": rng.choice(["a", "b", "c", "d", "e"], size=n), "label_scheme": "taosr1"})
    return base.assign(label=names[la]), base.assign(label=names[lb])


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--raters", type=int, default=10)
    ap.add_argument("--answers", type=int, default=100, help="answers timed one by one")
    ap.add_argument("--out", default="bench/results/bench_sbs.json")
    args = ap.parse_args()

    import logging

    from werkzeug.serving import make_server

    from taosr1.evaluation.report import write_report
    from taosr1.sbs.app import create_app
    from taosr1.sbs.config import SbsConfig, SbsReportConfig
    from taosr1.sbs.make import make_tasks
    from taosr1.sbs.report import sbs_report
    from taosr1.sbs.store import AnswerStore
    from taosr1.sbs.tasks import load_key, load_tasks, write_tasks

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    raters = [f"r{i}" for i in range(args.raters)]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_sbs_"))
    for n in args.pairs:
        a, b = synthetic(n)
        gold = a[["query_id", "product_id"]].assign(gold=a["label"])
        cfg = SbsConfig(size=args.items, k=args.k, raters=raters, segment="source", gold_rate=0.1)
        t_make, (sheet, key, summary) = timed(lambda: make_tasks(a, b, cfg, gold=gold, gold_col="gold"))
        rows.append({"step": "make", "pairs": n, "items": summary["regular_items"] + summary["gold_items"],
                     "seconds": round(t_make, 3)})
        print(f"make      pairs={n:>9,}  items={rows[-1]['items']:>6}  {t_make:8.2f} s", flush=True)

    d = tmp / f"tasks_{n}"
    paths = write_tasks(d, sheet, key)
    tasks = load_tasks(paths["tasks"])
    key = load_key(paths["key"], tasks)
    store = AnswerStore(d / "answers.sqlite", tasks.task_id)
    rng = np.random.default_rng(1)
    answers = [(r, i, str(rng.choice(["left", "same", "right"])), 5.0) for r in raters for i in tasks.queue(r)]
    t_bulk, _ = timed(lambda: store.save_many(answers))
    rows.append({"step": "save_many (one commit)", "answers": len(answers), "seconds": round(t_bulk, 3)})
    print(f"save_many answers={len(answers):>6}  {t_bulk:8.2f} s", flush=True)
    cfg_r = SbsReportConfig(min_gold_accuracy=0.0)
    t_cold, _ = timed(lambda: sbs_report(tasks, key, store.frame(), cfg_r))  # includes importing statsmodels etc.
    t_rep, parts = timed(lambda: sbs_report(tasks, key, store.frame(), cfg_r))
    t_write, _ = timed(lambda: write_report(tmp / "report", "bench", parts[0], parts[1], parts[2],
                                            summary=parts[3], notes=parts[4]))
    rows.append({"step": "report (metrics, figures, bootstrap 1000)", "answers": len(answers),
                 "items": len(tasks.items), "seconds": round(t_rep, 3), "first_call_seconds": round(t_cold, 3)})
    rows.append({"step": "write_report", "seconds": round(t_write, 3)})
    print(f"report    answers={len(answers):>6}  {t_rep:8.2f} s  (first call {t_cold:.2f} s; + write {t_write:.2f} s)",
          flush=True)

    # One rater answering in sequence: the store alone, then through the server.
    solo = AnswerStore(tmp / "solo.sqlite", "bench")
    lat = []
    for j in range(args.answers):
        t, _ = timed(lambda: solo.save("r0", f"it{j}", "left", 3.0))
        lat.append(t * 1000)
    rows.append({"step": "store.save (ms per answer)", "mean": round(float(np.mean(lat)), 2),
                 "p95": round(float(np.percentile(lat, 95)), 2)})
    print(f"store.save        mean {np.mean(lat):6.2f} ms  p95 {np.percentile(lat, 95):6.2f} ms", flush=True)

    app = create_app(paths["tasks"], d / "served.sqlite")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    opener.open(base + "/signin", urllib.parse.urlencode({"name": "r0"}).encode()).read()
    lat = []
    for p in range(1, min(args.answers, len(tasks.queue("r0"))) + 1):
        def one():
            req = urllib.request.Request(f"{base}/rate/{p}", urllib.parse.urlencode({"answer": "same"}).encode(),
                                         headers={"Accept": "application/json"})
            nxt = json.loads(opener.open(req).read())["next"]
            opener.open(base + nxt).read()
        t, _ = timed(one)
        lat.append(t * 1000)
    server.shutdown()
    rows.append({"step": "POST answer + GET next page over HTTP (ms)", "queue": len(tasks.queue("r0")),
                 "mean": round(float(np.mean(lat)), 2), "p95": round(float(np.percentile(lat, 95)), 2)})
    print(f"answer+next page  mean {np.mean(lat):6.2f} ms  p95 {np.percentile(lat, 95):6.2f} ms", flush=True)

    result = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
              "settings": vars(args), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
