"""Export a trained model as a small LoRA adapter over its base: what the repository ships.

The stages each train and merge their own adapter (SFT, then DPO, then GRPO), so the final
model differs from the base by a sum of low-rank updates. Each changed linear weight's
difference is factored by SVD and truncated to `rank`, saved as a peft adapter in float16.
The export then grades prompts with the base + adapter and with the trained model and
reports how often the top label agrees and the largest probability gap: the adapter ships
only when it reproduces the model (the pipeline's `export_tolerance`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from taosr1.core.config import ConfigError


def weight_deltas(tuned: str, base: str) -> tuple[dict[str, Any], list[str]]:
    """{module name: tuned - base} for changed 2-D linear weights, and any other changed tensors."""
    import torch
    from safetensors.torch import load_file

    def tensors(folder: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    a, b = tensors(tuned), tensors(base)
    deltas, other = {}, []
    for k, w in a.items():
        if k not in b:
            other.append(k)
            continue
        d = w.float() - b[k].float()
        if not torch.any(d != 0):
            continue
        if k.endswith(".weight") and d.dim() == 2 and ".layers." in k:
            deltas[k[: -len(".weight")]] = d
        else:
            other.append(k)
    return deltas, other


def factor(delta, rank: int) -> tuple[Any, Any, float]:
    """(A, B, relative error) with B @ A the best rank-`rank` approximation of `delta`."""
    import torch

    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    a, b = root[:, None] * vh[:r], u[:, :r] * root[None, :]
    err = float(torch.linalg.norm(delta - b @ a) / torch.linalg.norm(delta).clamp(min=1e-12))
    return a, b, err


def export_adapter(tuned: str, base: str, out: str | Path, *, rank: int = 32) -> dict[str, Any]:
    """Write `out`/adapter_model.safetensors + adapter_config.json (peft, float16); return its report."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    deltas, other = weight_deltas(tuned, base)
    if other:
        raise ConfigError(f"{tuned} differs from {base} outside the transformer blocks' linear layers "
                          f"({other[:3]}...); a LoRA adapter cannot carry that (train with lora_r > 0)")
    if not deltas:
        raise ConfigError(f"{tuned} has the same weights as {base}: nothing to export")
    modules = sorted({k.rsplit(".", 1)[-1] for k in deltas})
    layers = sorted({int(k.split(".layers.")[1].split(".")[0]) for k in deltas})
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=modules,
                     layers_to_transform=layers, task_type="CAUSAL_LM")  # alpha = r: scale 1, B @ A is the delta
    peft = get_peft_model(model, cfg)
    state = peft.state_dict()  # lora_B starts at zero: a module that did not change keeps a zero update
    errors = {}
    for name, d in deltas.items():
        a, b, _ = factor(d, rank)
        key = f"base_model.model.{name}"
        state[f"{key}.lora_A.default.weight"].copy_(a)
        state[f"{key}.lora_B.default.weight"].copy_(b)
        errors[name] = factor_error(d, a, b)
    peft = peft.to(torch.float16)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    peft.save_pretrained(str(out))
    size = (out / "adapter_model.safetensors").stat().st_size
    return {"rank": rank, "modules": modules, "layers": layers, "matrices": len(deltas), "bytes": size,
            "max_relative_error": round(max(errors.values()), 5),
            "mean_relative_error": round(sum(errors.values()) / len(errors), 5),
            "sha256": hashlib.sha256((out / "adapter_model.safetensors").read_bytes()).hexdigest()}


def factor_error(delta, a, b) -> float:
    """Relative Frobenius error of B @ A against `delta`, with A and B rounded to float16 as shipped."""
    import torch

    approx = b.half().float() @ a.half().float()
    return float(torch.linalg.norm(delta - approx) / torch.linalg.norm(delta).clamp(min=1e-12))


def agreement(tuned: str, merged: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], label_ids: Sequence[int]
              ) -> dict[str, float]:
    """Top-label agreement and the largest P(label) gap between the trained model and base + adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    from taosr1.training.label_forward import label_logits, shared_prefix_len

    ref = AutoModelForCausalLM.from_pretrained(tuned, dtype=torch.float32).eval()
    shared = shared_prefix_len(prompts)
    p, q = [], []
    with torch.inference_mode():
        for k in range(0, len(prompts), 16):
            batch = prompts[k : k + 16]
            p.append(label_logits(ref, batch, label_ids, tokenizer.pad_token_id, shared).softmax(-1))
            q.append(label_logits(merged, batch, label_ids, tokenizer.pad_token_id, shared).softmax(-1))
    p, q = torch.cat(p), torch.cat(q)
    return {"rows": len(prompts), "top_label_agreement": round(float((p.argmax(1) == q.argmax(1)).float().mean()), 4),
            "max_abs_prob_diff": round(float((p - q).abs().max()), 5)}


def write_card(out: str | Path, report: dict[str, Any], **info: Any) -> Path:
    """taosr1_model.json: the adapter's hash (checked at every load), beta per scheme, and how it was made."""
    f = Path(out) / "taosr1_model.json"
    f.write_text(json.dumps({**info, **report}, indent=2, sort_keys=True, default=str) + "\n")
    return f
