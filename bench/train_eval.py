"""Quality of each training stage on the shared ESCI sample, split by query.

Runs the pipeline (split -> cot -> sft -> sample -> dpo -> grpo, each model graded on the
held-out queries the way `taosr1 label` grades), then the think-first SFT ablation, graded by
generation (think-first must decode its reasoning before the answer) next to the post-CoT
SFT model graded the same way on the same rows. Prints a table and writes
bench/results/train_eval.json.

    python bench/train_eval.py --output runs/bench                 # CPU-sized defaults below
    python bench/train_eval.py --output runs/bench --set sft.max_steps=200 --set train_rows=0   # bigger
    python bench/train_eval.py --config conf/train/gpu.yaml --output runs/gpu --gen-rows 0   # one GPU, all rows

Sizes are set for a 2-core CPU: a few hundred pairs, a few dozen steps. Re-running resumes:
complete stages are skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# CPU-sized settings (PipelineConfig keys; see conf/train/*.yaml for the full-size defaults).
BENCH = {
    "test_size": 0.3,       # 30% of the queries held out
    "train_rows": 64,       # pairs with CoT data (SFT sees max_steps x batch of them)
    "test_rows": 48,        # held-out pairs graded with `taosr1 label` scoring
    "seed": 0,
    "model": "",            # the embedded default model (SmolLM2-135M-Instruct)
    "format": "post_cot",
    "eval_threads": 2,
    # attempts 0: gold templates only; the 135M teacher's agreement is measured by conf/train/smoke.yaml
    # (it costs ~25 s per pair here and agreed on 0 of 32 pairs there)
    "cot": {"attempts": 0},
    "sft": {"max_steps": 8, "per_device_train_batch_size": 2, "learning_rate": 2.0e-4, "max_length": 384,
            "warmup_steps": 1, "lr_scheduler_type": "cosine", "logging_steps": 1},
    "sample": {"n": 4, "max_new_tokens": 4, "max_examples": 16, "temperature": 1.0,
               "engine": {"threads": 2, "max_batch_size": 64}},
    "dpo": {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 384, "learning_rate": 1.0e-5,
            "logging_steps": 1},
    "grpo": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 4,
             "learning_rate": 2.0e-6, "logging_steps": 1},
}
GEN_ROWS = 12  # held-out rows graded by generation for the post-CoT vs think-first comparison
GEN_MARGIN = 16  # tokens beyond the longest training response, so no answer is cut off
PARTS = ("pipeline", "think_first", "generate")


def gen_budget(out: Path) -> int:
    """Tokens to generate when grading by generation: the longest think-first training response
    plus a margin. A fixed budget cut think-first answers off before their label (the label comes
    last there), which scored them as wrong; post-CoT gets the same budget, for a fair comparison."""
    from taosr1.labeling.models import load_tokenizer

    cot = pd.read_parquet(out / "cot" / "cot.parquet", columns=["response_think_first"])
    tok = load_tokenizer(str(out / "sft_think_first"))  # every stage shares the base tokenizer
    return max(len(tok(r)["input_ids"]) for r in cot["response_think_first"]) + GEN_MARGIN


def think_first_max_length(cfg, out: Path) -> int:
    """Tokens the think-first SFT must keep: its longest prompt + response (+ EOS and a margin).

    TRL truncates a training row's end, and think-first's label is its last token: at the post-CoT
    max_length (384) the longer rows (prompt ~230 + response up to ~270 tokens) lost their label."""
    from taosr1.core.prompts import PromptBuilder
    from taosr1.labeling.models import load_tokenizer, resolve_model
    from taosr1.training.common import field_rows, serving_setup

    cot = pd.read_parquet(out / "cot" / "cot.parquet")
    tok = load_tokenizer(resolve_model(cfg.model))
    serving = serving_setup(cfg.label_config, cfg.labels, "think_first")
    prompts = PromptBuilder(tok, serving.scheme, serving.prompt).build(field_rows(cot)).ids
    longest = max(len(p) + len(tok(r)["input_ids"]) for p, r in zip(prompts, cot["response_think_first"]))
    return max(int(cfg.sft.get("max_length") or 0), longest + 8)


def wait_for(folder: Path, stage: str, seconds: float) -> None:
    """Wait up to `seconds` for another process (`--parts pipeline`) to complete `stage` in `folder`."""
    from taosr1.training.common import read_stage

    end = time.time() + seconds
    while (read_stage(folder) or {}).get("stage") != stage:
        if time.time() > end:
            sys.exit(f"{folder}: no complete `{stage}` stage after waiting {seconds:.0f} s")
        time.sleep(2)


@dataclass
class Bench:
    """One bench run: its settings, its report, and the results file saved after every part, so a
    run cut short still leaves what it finished."""

    out: Path
    cfg: Any
    results: Path
    report: dict
    t0: float = field(default_factory=time.perf_counter)

    @property
    def timings(self) -> dict:
        return self.report["seconds"]

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.t0, 1)

    def log(self, m: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.0f}s] {m}", flush=True)

    def save(self) -> None:
        self.timings["total"] = self.elapsed()
        self.results.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.results.with_name(self.results.name + ".tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str))
        tmp.replace(self.results)


def main() -> None:
    from taosr1.core import config as cfgmod
    from taosr1.core.config import merge, parse_overrides, read_yaml
    from taosr1.training.pipeline import PipelineConfig

    a = _args()
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        sys.exit(f"--parts: expected a comma-separated subset of {PARTS}, got {a.parts!r}")
    values = merge(read_yaml(a.config) if a.config else BENCH, parse_overrides(a.overrides))
    cfg = cfgmod.build(PipelineConfig, values, source="bench")
    b = Bench(Path(a.output), cfg, Path(a.results),
              {"machine": _machine(), "settings": values, "parts": parts, "seconds": {}})
    summary = pipeline_part(b, a.early_eval) if "pipeline" in parts else {}
    if "think_first" in parts:
        think_first_part(b, a.think_first_epochs, a.wait)
    gen = generate_part(b, a) if "generate" in parts else {}
    print_table(summary.get("eval", {}), gen)
    b.save()
    print(f"\nseconds: {b.timings}\nwrote {b.results}")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="runs/bench")
    ap.add_argument("--config", help="a pipeline YAML to start from instead of the CPU-sized settings below")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "train_eval.json"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--think-first-epochs", type=float, default=0,
                    help="epochs of the think-first SFT (0 = the post-CoT SFT's label_epochs + num_train_epochs)")
    ap.add_argument("--gen-rows", type=int, default=GEN_ROWS, help="held-out rows graded by generation (0 = all)")
    ap.add_argument("--skip-generate", action="append", default=[], choices=["sft", "sft_think_first"],
                    help="Leave this model's generation grading out (it costs ~50 s per row on a loaded 2-core CPU).")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated of pipeline, think_first, generate: two processes can share one output "
                         "folder, one running the pipeline and the other the think-first ablation (it waits for "
                         "the pipeline's cot and sft stages); each writes its own --results")
    ap.add_argument("--wait", type=float, default=0, help="seconds to wait for another process's cot / sft stage")
    ap.add_argument("--early-eval", action="store_true",
                    help="with calib_folds: run the stages and grade the test split (beta 0.5 and argmax) before "
                         "the cross-fitting, kept in OUTPUT/eval_uncalibrated; results survive a run cut short")
    ap.add_argument("--gen-batch-tokens", type=int, default=0, help="engine max_batch_tokens for generation (0 = default)")
    ap.add_argument("--gen-batch-size", type=int, default=0, help="engine max_batch_size for generation (0 = default)")
    return ap.parse_args()


def pipeline_part(b: Bench, early_eval: bool) -> dict:
    """The pipeline's stages, each graded on the held-out queries; its summary."""
    import shutil
    from dataclasses import replace

    from taosr1.training.pipeline import run_pipeline

    if early_eval and b.cfg.calib_folds:
        # the same stages (calib_folds is not in their settings: the full run below skips them), graded before
        # the folds run; the full run then grades again at the cross-fitted beta
        first = run_pipeline(replace(b.cfg, calib_folds=0), b.out, log=b.log)
        b.timings["pipeline_uncalibrated"] = b.elapsed()
        if (b.out / "eval").is_dir():
            shutil.copytree(b.out / "eval", b.out / "eval_uncalibrated", dirs_exist_ok=True)
        b.report.update(split=first.get("split"), eval_score_uncalibrated=first.get("eval", {}), stages=_stages(first))
        b.save()
    summary = run_pipeline(b.cfg, b.out, log=b.log)
    b.timings["pipeline"] = b.elapsed()
    b.report.update(split=summary.get("split"), stages=_stages(summary), calibration=summary.get("calibration"),
                    eval_score=summary.get("eval", {}))
    b.save()
    return summary


def think_first_part(b: Bench, epochs: float, wait: float) -> None:
    """The think-first ablation: the same CoT data, the same SFT settings, the other response order.

    It has no label phase (its label is the last token, not read at the prompt's end): its CoT phase
    gets that phase's epochs too, `epochs` in all, and keeps whole rows (think_first_max_length)."""
    from taosr1.training.common import read_stage
    from taosr1.training.pipeline import run_stage, stage_config, values_hash

    cfg, out = b.cfg, b.out
    wait_for(out / "cot", "cot", wait)
    t1 = time.perf_counter()
    sft = {k: v for k, v in cfg.sft.items() if not k.startswith("label_") and k != "class_weight_power"}
    sft["num_train_epochs"] = epochs or (cfg.sft.get("num_train_epochs", 1) + cfg.sft.get("label_epochs", 0))
    sft["max_length"] = think_first_max_length(cfg, out)
    tf_values = {**sft, "model": cfg.model, "data": str(out / "cot"), "output_dir": str(out / "sft_think_first"),
                 "format": "think_first", "label_config": cfg.label_config, "labels": cfg.labels}
    h = values_hash(tf_values)
    if (read_stage(out / "sft_think_first") or {}).get("config_hash") != h:
        b.log(f"sft_think_first: {sft['num_train_epochs']} epochs, max_length {sft['max_length']}")
        run_stage("sft", stage_config("sft", tf_values, "bench"), h)
    b.timings["sft_think_first"] = round(time.perf_counter() - t1, 1)
    b.report.update(sft_think_first_settings=sft, sft_think_first=read_stage(out / "sft_think_first"))
    b.log(f"sft_think_first: done in {b.timings['sft_think_first']} s")
    b.save()


def generate_part(b: Bench, a: argparse.Namespace) -> dict:
    """Grade the think-first and post-CoT SFT models by generation on the same held-out rows,
    each as soon as it exists; a model already graded with the same rows and budget is read back."""
    out = b.out
    test = pd.read_parquet(out / "split" / "test.parquet")
    test = test.head(a.gen_rows) if a.gen_rows else test
    gen_tokens = gen_budget(out)
    engine = {k: v for k, v in (("max_batch_tokens", a.gen_batch_tokens), ("max_batch_size", a.gen_batch_size)) if v}
    gen: dict = {}
    b.report.update(gen_rows=len(test), gen_max_new_tokens=gen_tokens, gen_engine=engine, eval_generate=gen)
    for name, fmt in (("sft_think_first", "think_first"), ("sft", "post_cot")):
        if name in a.skip_generate:
            continue
        wait_for(out / name, "sft", a.wait)
        f = out / "eval" / f"gen_{name}.json"
        done = json.loads(f.read_text()) if f.is_file() else {}
        if done.get("rows") == len(test) and done.get("max_new_tokens") == gen_tokens:
            gen[name] = done["metrics"]
            continue
        gen[name] = _generate_one(b, name, fmt, test, gen_tokens, engine)
        b.save()
    return gen


def _generate_one(b: Bench, name: str, fmt: str, test: pd.DataFrame, gen_tokens: int, engine: dict) -> dict:
    from taosr1.training.evaluate import evaluate_generation

    t2 = time.perf_counter()
    m, pred = evaluate_generation(str(b.out / name), test, gold_col=b.cfg.gold, fmt=fmt, threads=b.cfg.eval_threads,
                                  max_new_tokens=gen_tokens, engine=engine)
    (b.out / "eval").mkdir(parents=True, exist_ok=True)
    pred.to_parquet(b.out / "eval" / f"gen_{name}.parquet", index=False)
    (b.out / "eval" / f"gen_{name}.json").write_text(
        json.dumps({"rows": len(test), "max_new_tokens": gen_tokens, "metrics": m}, indent=2, default=str))
    b.timings[f"gen_eval_{name}"] = round(time.perf_counter() - t2, 1)
    b.log(f"generate {name} ({fmt}): macro-F1 {m['macro_f1']:.4f}, {m['n']} rows in {m['seconds']} s, "
          f"{m['unparsed']} unparsed")
    return m


def print_table(ev: dict, gen: dict) -> None:
    rows = [("zero-shot (score)", ev.get("zero_shot")), ("SFT post-CoT (argmax)", ev.get("sft_argmax")),
            ("DPO (argmax)", ev.get("dpo_argmax")), ("GRPO (argmax)", ev.get("grpo_argmax")),
            ("SFT post-CoT (score)", ev.get("sft")), ("DPO (score)", ev.get("dpo")), ("GRPO (score)", ev.get("grpo")),
            ("SFT post-CoT (generate)", gen.get("sft")), ("SFT think-first (generate)", gen.get("sft_think_first"))]
    classes = ["Excellent", "Related", "Mismatch", "Irrelevant"]
    print(f"\n{'model':28} {'n':>4} {'macroF1':>8} {'acc':>6} " + " ".join(f"{c[:6]:>7}" for c in classes)
          + "  unparsed  items/s")
    for name, m in rows:
        if m:
            f1 = [m["per_class_f1"].get(c) for c in classes]
            speed = m["n"] / m["seconds"] if m.get("seconds") else float("nan")
            print(f"{name:28} {m['n']:4d} {m['macro_f1']:8.4f} {m['accuracy']:6.3f} "
                  + " ".join(f"{x:7.3f}" if x is not None else f"{'-':>7}" for x in f1)
                  + f"  {m['unparsed']:8d}  {speed:7.2f}")


def _stages(summary: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk not in ("rules_used",)} for k, v in summary.get("stages", {}).items()}


def _machine() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU"


if __name__ == "__main__":
    main()
