"""The transformers engine on one GPU: post-CoT scoring and think-first generation on
random-weight Qwen2-shaped models (0.5B and 7B), against DESIGN.md section 4's anchors.

    python bench/bench_gpu.py [--shapes 0.5b,7b] [--batching padded,packed,packed+compile] [--out bench/results/bench_gpu.json]

Needs CUDA; nothing is downloaded (weights are random, bf16, SDPA; only the shape matters
for speed). Workloads, each on the same seeded prompts:
- anchor: 256 prompt tokens per pair, no shared prefix (DESIGN.md's anchor setting);
- realistic: the bundled sample's shape under the serving prompt with the default
  tokenizer: a 155-token shared system prefix plus a per-pair part of 52 +- 16.5 tokens
  (12 to 139), scored with prefix reuse, as `taosr1 label` runs it;
- think-first: HF `generate` of 128 tokens before the label, on the anchor prompts.
Scoring runs with each `batching` of the engine: `padded` (length-sorted rows, at most
--max-batch-size of them, after the shared prefix's KV cache) and `packed` (prompts packed
into sequences of --pack-tokens, flex attention keeping them apart; no row cap).
`packed+compile` is `packed` with the decoder body under `torch.compile` (dynamic shapes on
CUDA): the experiment for the 0.5B shape, whose element-wise work between the matmuls (norms,
rotary, SiLU, residuals) may be what keeps its MFU low; not an engine option until it is measured.
MFU counts the FLOPs of the positions actually computed (2 x non-embedding parameters per
token, plus causal attention 4 x layers x q-width x context), over the bf16 matmul peak
measured in the same run (8192^3, mean of 10 after 3 warm-ups). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# Qwen2-0.5B and Qwen2-7B shapes (their published config.json values).
SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}
ANCHORS = {"0.5b": {"score": 1600, "think_first": 124}, "7b": {"score": 152, "think_first": 49}}
ROWS = {"0.5b": 8192, "7b": 1024}  # anchor workload
REALISTIC_ROWS = {"0.5b": 32768, "7b": 4096, "smoke": 64}  # enough packs of 64k tokens to time
GEN_ROWS = {"0.5b": 1024, "7b": 256}
# --smoke: a tiny shape on the CPU, to check this script's code paths without a GPU.
SHAPES["smoke"] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=1000, tie_word_embeddings=True)
ANCHORS["smoke"], ROWS["smoke"], GEN_ROWS["smoke"] = {"score": None, "think_first": None}, 64, 16
DEVICE = "cuda"
LABEL_IDS = [16, 17, 18, 19]
PREFIX, SUFFIX_MEAN, SUFFIX_SD, SUFFIX_MIN, SUFFIX_MAX = 155, 52, 16.5, 12, 139


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def peak_tflops(n: int = 8192) -> float:
    import torch

    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync()
    return 2 * n**3 * 10 / (time.perf_counter() - t) / 1e12


def prompts(kind: str, n: int, vocab: int, seed: int = 0) -> tuple[list[list[int]], int]:
    """Token-id prompts and the length of the prefix they share."""
    rng = np.random.default_rng(seed)
    if kind == "anchor":
        return [rng.integers(100, vocab, 256).tolist() for _ in range(n)], 0
    prefix = rng.integers(100, vocab, PREFIX).tolist()
    lengths = np.clip(rng.normal(SUFFIX_MEAN, SUFFIX_SD, n).round(), SUFFIX_MIN, SUFFIX_MAX).astype(int)
    return [prefix + rng.integers(100, vocab, k).tolist() for k in lengths], PREFIX


def flops(cfg, lengths: list[int], shared: int) -> float:
    """Forward FLOPs of the computed positions: each row's own tokens (after the shared
    prefix, which is computed once) attend to everything before them."""
    d, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * inter  # q, o; k, v; gate, up, down
    dense = 2 * layers * per_layer
    total = 0.0
    for L in lengths:
        t = np.arange(shared + 1, L + 1)
        total += dense * len(t) + 4 * layers * d * t.sum()
    t = np.arange(1, shared + 1)
    total += dense * shared + 4 * layers * d * t.sum()
    return float(total)


def build(shape: str):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, attn_implementation="sdpa")
    with torch.device(DEVICE):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = None
    return model.eval(), cfg


def engine(model, batching: str, **settings):
    """A bf16 TransformersEngine around `model`; `packed+compile` compiles its decoder body."""
    import torch

    from taosr1.labeling.engines.base import EngineConfig
    from taosr1.labeling.engines.hf import TransformersEngine

    mode = batching.removesuffix("+compile")
    eng = TransformersEngine.from_model(model, None, EngineConfig(device=DEVICE, dtype="bfloat16", batching=mode,
                                                                  **settings))
    if mode != batching:  # per pack length on a CPU, where inductor's dynamic flex kernel fails to build (packing.py)
        eng.body = torch.compile(eng.body, dynamic=DEVICE == "cuda")
    return eng


def score_rows(model, cfg, shape: str, kind: str, batching: str, peak: float, a) -> dict:
    """Time `engine.score` on one workload with one batching (after a warm-up that compiles)."""
    budget = a.pack_tokens if batching.startswith("packed") else a.max_batch_tokens
    eng = engine(model, batching, max_batch_tokens=budget, max_batch_size=a.max_batch_size,
                 reuse_prefix=kind == "realistic")
    ps, shared = prompts(kind, (REALISTIC_ROWS if kind == "realistic" else ROWS)[shape], cfg.vocab_size)
    t = time.perf_counter()
    for k in (a.max_batch_size, 3 * a.max_batch_size):  # warm-up: kernels, allocator, flex's compile
        eng.score(ps[:k], LABEL_IDS)
    _sync()
    warm = time.perf_counter() - t
    eng.stats = type(eng.stats)()
    t = time.perf_counter()
    p = eng.score(ps, LABEL_IDS)
    _sync()
    dt = time.perf_counter() - t
    assert np.allclose(p.sum(axis=1), 1)
    f = flops(cfg, [len(x) for x in ps], shared)
    return {"shape": shape, "work": f"score ({kind})", "batching": batching, "rows": len(ps), "seconds": round(dt, 3),
            "items_per_s": round(len(ps) / dt, 1), "mfu": round(f / dt / 1e12 / peak, 3),
            "tokens_per_item": round(float(np.mean([len(x) for x in ps])), 1),
            "computed_tokens_per_item": round(eng.stats.computed_tokens / len(ps), 1),
            "padding_efficiency": round(eng.stats.padding_efficiency, 4), "forward_passes": eng.stats.forward_passes,
            "batch_tokens": budget, "warmup_seconds": round(warm, 1),
            "anchor_items_per_s": ANCHORS[shape]["score"] if kind == "anchor" else None}


def agreement(model, cfg, shape: str) -> dict:
    """Packed against padded on the same realistic prompts: the largest difference in P(label);
    and the compiled packed path against the eager one."""
    ps, _ = prompts("realistic", 512, cfg.vocab_size, seed=2)
    got = {b: engine(model, b, max_batch_tokens=16384, max_batch_size=64).score(ps, LABEL_IDS)
           for b in ("padded", "packed", "packed+compile")}
    d = np.abs(got["padded"] - got["packed"])
    same = float((got["padded"].argmax(1) == got["packed"].argmax(1)).mean())
    return {"shape": shape, "rows": len(ps), "max_abs_dp": round(float(d.max()), 5), "mean_abs_dp": round(float(d.mean()), 6),
            "same_argmax": round(same, 4),
            "compiled_max_abs_dp": round(float(np.abs(got["packed+compile"] - got["packed"]).max()), 5)}


def run_shape(shape: str, peak: float, a) -> tuple[list[dict], dict]:
    import torch

    t = time.perf_counter()
    model, cfg = build(shape)
    _sync()
    built = time.perf_counter() - t
    out = []
    for kind in ("anchor", "realistic"):
        for batching in a.batching.split(","):
            try:
                out.append(score_rows(model, cfg, shape, kind, batching, peak, a))
            except Exception as e:  # one failed mode must not lose the others' numbers
                out.append({"shape": shape, "work": f"score ({kind})", "batching": batching, "error": repr(e)[:500]})
            print(json.dumps(out[-1]), flush=True)
    try:
        agree = agreement(model, cfg, shape)
    except Exception as e:
        agree = {"shape": shape, "error": repr(e)[:500]}
    print(json.dumps(agree), flush=True)
    if not a.no_generate:
        out.append(think_first(model, cfg, shape))
    for r in out:
        r["model_build_seconds"] = round(built, 1)
    del model
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return out, agree


def think_first(model, cfg, shape: str) -> dict:
    """HF `generate` of 128 tokens on the anchor prompts, in batches of up to 256."""
    import torch

    ps, _ = prompts("anchor", GEN_ROWS[shape], cfg.vocab_size, seed=1)
    ids = torch.tensor(ps, device=DEVICE)
    bs = min(len(ps), 256)
    with torch.inference_mode():
        model.generate(input_ids=ids[:8], max_new_tokens=4, do_sample=False, pad_token_id=0)
        _sync()
        t = time.perf_counter()
        for i in range(0, len(ps), bs):
            model.generate(input_ids=ids[i:i + bs], attention_mask=torch.ones_like(ids[i:i + bs]), max_new_tokens=128,
                           min_new_tokens=128, do_sample=False, pad_token_id=0)
        _sync()
    dt = time.perf_counter() - t
    return {"shape": shape, "work": "think-first (generate 128)", "batching": "padded", "rows": len(ps),
            "seconds": round(dt, 3), "items_per_s": round(len(ps) / dt, 1), "mfu": None, "tokens_per_item": 256,
            "anchor_items_per_s": ANCHORS[shape]["think_first"], "batch": bs}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="0.5b,7b")
    ap.add_argument("--max-batch-tokens", type=int, default=65536, help="padded: rows x longest prompt")
    ap.add_argument("--max-batch-size", type=int, default=256, help="padded: rows per forward pass")
    ap.add_argument("--pack-tokens", type=int, default=65536, help="packed: tokens per pack")
    ap.add_argument("--batching", default="padded,packed,packed+compile")
    ap.add_argument("--no-generate", action="store_true", help="skip the think-first generate timing")
    ap.add_argument("--smoke", action="store_true", help="tiny shape on the CPU: checks the code, measures nothing")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_gpu.json"))
    a = ap.parse_args()
    global DEVICE
    if a.smoke:
        DEVICE, a.shapes, a.out = "cpu", "smoke", "/tmp/bench_gpu_smoke.json"
    elif not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU (--smoke checks it on a CPU)")
    peak = peak_tflops(512 if a.smoke else 8192)
    rows, agree = [], []
    for shape in a.shapes.split(","):
        got, same = run_shape(shape, peak, a)
        rows.extend(got)
        agree.append(same)
    dev = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    print(f"\ntransformers engine on {dev}, torch {torch.__version__}, bf16, SDPA; measured bf16 peak {peak:.0f} TFLOP/s")
    print(f"{'shape':6} {'work':28} {'batching':15} {'rows':>6} {'items/s':>9} {'MFU':>6} {'anchor':>7} {'tok/item':>9} {'computed':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:6} {r['work']:28} {r['batching']:15} failed: {r['error'][:80]}")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(f"{r['shape']:6} {r['work']:28} {r['batching']:15} {r['rows']:6d} {r['items_per_s']:9.1f} {mfu:>6} "
              f"{r['anchor_items_per_s'] or '-':>7} {r['tokens_per_item']:9} {r.get('computed_tokens_per_item', '-'):>9}")
    for g in agree:
        print(f"packed vs padded, {g['shape']}: " + ", ".join(f"{k} {v}" for k, v in g.items() if k != "shape"))
    report = {"device": dev, "torch": torch.__version__, "host": platform.node(), "peak_bf16_tflops": round(peak, 1),
              "max_batch_tokens": a.max_batch_tokens, "max_batch_size": a.max_batch_size, "pack_tokens": a.pack_tokens,
              "results": rows, "packed_vs_padded": agree}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
