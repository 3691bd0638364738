"""The label loss: the scorer's own computation, with gradients.

Serving reads one thing from the model: the logits of the label tokens at the last prompt
position (taosr1/labeling/engines/hf.py). Training on the whole response makes the label one token in
~90, and the model learns the template and the label prior. This module trains exactly what
serving reads (taosr1/training/label_forward.py computes it: the shared prefix once per batch, the
frozen lower blocks once per prompt): a class-weighted cross-entropy over the label tokens' logits
at the last position is the loss. `fit` is the loop every label-position stage shares.
"""

from __future__ import annotations

from typing import Sequence


def class_weights(gold: Sequence[int], n_labels: int, power: float = 1.0) -> list[float]:
    """Inverse-frequency weights to the `power` (0 = uniform, 1 = balanced), mean 1 over the rows.

    A class absent from `gold` gets weight 0 (it has no rows to weigh).
    """
    counts = [0] * n_labels
    for g in gold:
        counts[g] += 1
    raw = [(len(gold) / (n_labels * c)) ** power if c else 0.0 for c in counts]
    mean = sum(raw[g] for g in gold) / max(len(gold), 1)
    return [r / mean if mean else 0.0 for r in raw]


def ordinal_loss(logits, gold, weights):
    """Class-weighted binary cross-entropy of each cumulative probability P(grade >= g), g over the
    grade boundaries (labels best first): what CumPT reads to pick a grade. A prediction three
    grades off crosses three boundaries and costs more than one a grade off, which CE treats alike."""
    import torch

    total = torch.logsumexp(logits, dim=1, keepdim=True)
    at_least = torch.logcumsumexp(logits, dim=1)[:, :-1] - total  # log P(grade >= g), g = 0 .. k-2
    below = torch.logcumsumexp(logits.flip(1), dim=1).flip(1)[:, 1:] - total  # log P(grade < g)
    target = (gold[:, None] <= torch.arange(logits.shape[1] - 1, device=logits.device)[None, :]).float()
    per_row = -(target * at_least + (1 - target) * below).mean(1)
    w = weights[gold]
    return (w * per_row).sum() / w.sum()


def label_objective(logits, gold, weights, loss: str = "ce", soft=None, soft_weight: float = 0.0):
    """The label phase's loss on a batch: class-weighted CE (or `ordinal_loss`) on the gold labels,
    mixed with `soft_weight` of the cross-entropy against soft labels (rows of P(grade)), if given."""
    import torch

    logits = logits.float()
    hard = ordinal_loss(logits, gold, weights) if loss == "ordinal" else \
        torch.nn.functional.cross_entropy(logits, gold, weight=weights)
    if soft is None or not soft_weight:
        return hard
    soft_ce = -(soft * torch.log_softmax(logits, dim=1)).sum(1).mean()
    return (1 - soft_weight) * hard + soft_weight * soft_ce


def length_batches(lengths: Sequence[int], batch_size: int, rng) -> list[list[int]]:
    """Shuffled batches of rows of similar length (little padding), in a shuffled order."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    for k in range(0, len(idx), batch_size * 8):  # sort within windows of 8 batches: similar lengths, still random
        window = sorted(idx[k : k + batch_size * 8], key=lambda i: lengths[i])
        batches += [window[j : j + batch_size] for j in range(0, len(window), batch_size)]
    rng.shuffle(batches)
    return batches


def train_labels(model, prompts: Sequence[Sequence[int]], gold: Sequence[int], label_ids: Sequence[int], *,
                 pad_id: int, epochs: float, learning_rate: float, batch_size: int = 16,
                 class_weight_power: float = 1.0, warmup_ratio: float = 0.05, max_grad_norm: float = 1.0,
                 bf16: bool = False, seed: int = 0, loss: str = "ce", soft=None, soft_weight: float = 0.0,
                 log=print) -> dict:
    """Fit the label logits serving reads: AdamW, linear warm-up then cosine decay, `label_objective`:
    class-weighted CE (`loss` "ce") or `ordinal_loss` ("ordinal"), mixed with soft labels (`soft`,
    one row of P(grade) per prompt) at `soft_weight`.

    Only parameters with requires_grad train (LoRA adapters, or every weight). Returns the
    losses per epoch and the seconds taken.
    """
    import torch

    from taosr1.training.label_forward import LabelForward

    device = next(p for p in model.parameters() if p.requires_grad).device
    weights = torch.tensor(class_weights(gold, len(label_ids), class_weight_power), device=device)
    forward = LabelForward(model, prompts, label_ids, pad_id, bf16=bf16)
    targets = None if soft is None else torch.tensor(soft, dtype=torch.float32, device=device)

    def step_loss(batch):
        logits = forward(batch)
        y = torch.tensor([gold[i] for i in batch], device=device)
        t = None if targets is None else targets[torch.tensor(batch, device=device)]
        return label_objective(logits, y, weights, loss, t, soft_weight), {}

    out = fit(model, [len(p) for p in prompts], step_loss, epochs=epochs, batch_size=batch_size,
              learning_rate=learning_rate, warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm, bf16=bf16,
              seed=seed, log=log, name="label phase")
    return {"label_steps": out["steps"], "label_losses": out["losses"], "label_seconds": out["seconds"],
            "class_weights": [round(float(w), 3) for w in weights],
            **({"soft_label_weight": soft_weight} if targets is not None and soft_weight else {})}


def fit(model, lengths: Sequence[int], step_loss, *, epochs: float, batch_size: int, learning_rate: float,
        max_steps: int = 0, warmup_ratio: float = 0.05, max_grad_norm: float = 1.0, bf16: bool = False, seed: int = 0,
        log=print, name: str = "label phase") -> dict:
    """The training loop the label-position stages share: AdamW, linear warm-up then cosine decay.

    `step_loss(rows)` -> (loss, metrics) for a batch of row indices (batches of like lengths,
    shuffled each epoch). `max_steps` > 0 sets the steps, else `epochs` does. Returns steps,
    mean loss and mean metrics per epoch, and seconds.
    """
    import math
    import random
    import time

    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    per_epoch = math.ceil(len(lengths) / batch_size)
    total = max_steps if max_steps > 0 else max(1, round(per_epoch * epochs))
    warm = max(1, round(total * warmup_ratio))
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(i, total) / total))))
    autocast = torch.autocast(params[0].device.type, dtype=torch.bfloat16, enabled=bf16)
    model.train()
    start, step, losses, metrics = time.perf_counter(), 0, [], []
    while step < total:
        run, seen = 0.0, {}
        batches = length_batches(lengths, batch_size, rng)[: total - step]
        for batch in batches:
            with autocast:
                loss, m = step_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            run += loss.item()
            for k, v in m.items():
                seen[k] = seen.get(k, 0.0) + float(v)
            step += 1
        losses.append(round(run / max(len(batches), 1), 4))
        metrics.append({k: round(v / max(len(batches), 1), 4) for k, v in seen.items()})
        log(f"{name}: epoch {len(losses)} loss {losses[-1]:.4f} {metrics[-1] or ''} ({step}/{total} steps, "
            f"{time.perf_counter() - start:.0f} s)")
    model.eval()
    return {"steps": step, "losses": losses, "metrics": metrics, "seconds": round(time.perf_counter() - start, 1)}
