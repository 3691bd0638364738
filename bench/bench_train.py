"""The label phase's training speed: examples/s and achieved GFLOP/s against this machine's bf16 matmul peak,
on 1 and more processes (`taosr1 train sft --processes N`).

The label phase is what the recipe spends its time on (the SFT stage; label DPO and GRPO run the same
loop). It runs here exactly as the pipeline runs it: the default base model, LoRA on the top
`lora_layers` blocks, the frozen blocks' output computed once per prompt in the first epoch
(taosr1/training/label_forward.py), then only the trainable blocks. Each run trains `--epochs`
epochs on the same `--examples` pairs of the union with their product texts; the first epoch's rate
includes the frozen blocks' pass, the later epochs' is the steady training rate.

Achieved GFLOP/s counts the matmul work of the steady epochs: per own token of a row, each trainable
block's forward (2 x its weights, plus attention over the prefix and the row) and its backward (the
same again for the input gradients; the LoRA weight gradients are <2% more), plus the prefix's
tokens through those blocks once per batch. The peak is a bf16 4096 x 4096 matmul on all cores.

    python bench/bench_train.py                                  # 512 examples, 1 and 2 processes
    python bench/bench_train.py --processes 1 --examples 2048 --set lora_layers=10 --out bench/results/bench_train_l10.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def matmul_peak(n: int = 4096, repeats: int = 5) -> float:
    """Best bf16 n x n matmul rate on this machine, GFLOP/s."""
    import torch

    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def make_cot(work: Path, examples: int, input_: str) -> Path:
    out = work / "cot"
    if not (out / "taosr1_stage.json").is_file():
        run(["cot", "--set", f"input={input_}", "--set", f"limit={examples}", "--set", "attempts=0",
             "--set", "negatives_per_query=0", "--output", str(out)])
    return out


def run(args: list[str]) -> str:
    r = subprocess.run([sys.executable, "-m", "taosr1", *args], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(f"taosr1 {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


EPOCH = re.compile(r"label phase: epoch (\d+) loss [\d.]+ .*?\((\d+)/(\d+) steps, (\d+) s")


def train(work: Path, cot: Path, processes: int, a) -> dict:
    out = work / f"p{processes}-{int(time.time())}"
    sets = [f"data={cot}", f"label_epochs={a.epochs}", "num_train_epochs=0", f"label_batch_size={a.batch}",
            "save_strategy=no", *a.set]
    log = run(["train", "sft", *[x for s in sets for x in ("--set", s)], "--output", str(out),
               "--processes", str(processes)])
    (out / "train.log").write_text(log)
    epochs = sorted({(int(e), int(s), int(t)) for e, s, _, t in EPOCH.findall(log)})  # one per epoch
    if not epochs:
        sys.exit(f"no 'label phase: epoch' lines in the log of {out} ({out / 'train.log'})")
    marker = json.loads((out / "taosr1_stage.json").read_text())
    return {"processes": processes, "epochs": epochs, "examples": marker["examples"],
            "world_size": marker["world_size"], "lora_layers": marker["lora_layers"], "folder": str(out)}


def rates(r: dict, flops_per_example: float) -> dict:
    (_, s1, t1), *rest = r["epochs"]
    first = r["examples"] / max(t1, 1e-9)
    steady_s = rest[-1][2] - t1 if rest else None
    steady = r["examples"] * len(rest) / steady_s if steady_s else None
    return {**r, "first_epoch_examples_per_s": round(first, 2),
            "steady_examples_per_s": None if steady is None else round(steady, 2),
            "achieved_gflops": None if steady is None else round(steady * flops_per_example / 1e9, 1)}


def flops_per_example(cot: Path, lora_layers: int, batch: int) -> float:
    """Forward + input-gradient backward matmul FLOPs of the trainable blocks for one example."""
    import pandas as pd
    from transformers import AutoConfig

    from taosr1.core.prompts import PromptBuilder
    from taosr1.labeling.models import load_tokenizer, resolve_model
    from taosr1.training.common import field_rows, serving_setup

    path = resolve_model("base")
    cfg = AutoConfig.from_pretrained(path)
    tok = load_tokenizer(path)
    serving = serving_setup()
    df = pd.read_parquet(cot / "cot.parquet")
    builder = PromptBuilder(tok, serving.scheme, serving.prompt)
    ids = builder.build(field_rows(df)).ids
    prefix = len(builder.frame[2]) if builder.frame else 0
    own = sum(len(x) - prefix for x in ids) / len(ids)
    d, f = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    block = 2 * (d * d + 2 * d * kv + d * d + 3 * d * f)  # q, k, v, o and the MLP, per token
    attn = 4 * d * (prefix + own / 2)  # scores and values over the prefix and the row so far
    per_token = (block + attn) * lora_layers * 2  # forward and the input-gradient backward
    return per_token * own + 2 * block * lora_layers * prefix / batch  # the prefix once per batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--input", default="bundled:union")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="sft stage key, e.g. lora_layers=6")
    ap.add_argument("--work", default="runs/bench_train")
    ap.add_argument("--out", default="bench/results/bench_train.json")
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cot = make_cot(work, a.examples, a.input)
    layers = next((int(s.split("=")[1]) for s in a.set if s.startswith("lora_layers=")), 6)
    a.set = [*a.set] if any(s.startswith("lora_layers=") for s in a.set) else [*a.set, "lora_layers=6", "lora_r=16"]
    fpe = flops_per_example(cot, layers, a.batch)
    peak = matmul_peak()
    results = [rates(train(work, cot, int(p), a), fpe) for p in a.processes.split(",")]
    print(f"\nlabel phase, {a.examples} examples x {a.epochs} epochs, LoRA on the top {layers} blocks, batch {a.batch}; "
          f"bf16 matmul peak {peak:.0f} GFLOP/s\n")
    print("| processes | first epoch, examples/s (with the frozen pass) | later epochs, examples/s | achieved GFLOP/s | of peak |")
    print("|---|---|---|---|---|")
    for r in results:
        g = r["achieved_gflops"]
        print(f"| {r['processes']} | {r['first_epoch_examples_per_s']} | {r['steady_examples_per_s']} | {g} | "
              f"{'-' if g is None else f'{g / peak:.1%}'} |")
    out = {"examples": a.examples, "epochs": a.epochs, "batch": a.batch, "lora_layers": layers, "sets": a.set,
           "flops_per_example": fpe, "bf16_matmul_peak_gflops": round(peak, 1), "results": results,
           "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
