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

from taosr1.training.label_loop import LoopConfig, Term, fit


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


def ordinal_rows(logits, gold):
    """Per-row binary cross-entropy of each cumulative probability P(grade >= g), g over the grade
    boundaries (labels best first): what CumPT reads to pick a grade. A prediction three grades off
    crosses three boundaries and costs more than one a grade off, which CE treats alike."""
    import torch

    total = torch.logsumexp(logits, dim=1, keepdim=True)
    at_least = torch.logcumsumexp(logits, dim=1)[:, :-1] - total  # log P(grade >= g), g = 0 .. k-2
    below = torch.logcumsumexp(logits.flip(1), dim=1).flip(1)[:, 1:] - total  # log P(grade < g)
    target = (gold[:, None] <= torch.arange(logits.shape[1] - 1, device=logits.device)[None, :]).float()
    return -(target * at_least + (1 - target) * below).mean(1)


def ordinal_loss(logits, gold, weights):
    """Class-weighted mean of `ordinal_rows`."""
    w = weights[gold]
    return (w * ordinal_rows(logits.float(), gold)).sum() / w.sum()


def label_terms(logits, gold, weights, loss: str = "ce", soft=None, soft_weight: float = 0.0,
                queries=None, rank_weight: float = 0.0) -> list[Term]:
    """The label phase's loss on rows, as terms over their normalisers (taosr1/training/label_loop.py):
    class-weighted CE (or the ordinal loss) on the gold labels, `soft_weight` of the cross-entropy
    against soft labels (rows of P(grade)), and `rank_weight` of a pairwise ranking loss: for two rows
    of one query (`queries`) with different gold grades, softplus of the expected-grade margin by which
    the worse one is ahead, what NDCG within a query reads."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    w = weights[gold]
    per_row = ordinal_rows(logits, gold) if loss == "ordinal" else F.cross_entropy(logits, gold, reduction="none")
    terms = [Term((w * per_row).sum(), float(w.sum()), 1.0 - (soft_weight if soft is not None else 0.0))]
    if soft is not None and soft_weight:
        terms.append(Term(-(soft * torch.log_softmax(logits, dim=1)).sum(), float(len(gold)), soft_weight))
    if queries is not None and rank_weight:
        terms.append(rank_term(logits, gold, queries, rank_weight))
    return terms


def rank_term(logits, gold, queries, weight: float) -> Term:
    """softplus(-(s_better - s_worse) / RANK_SCALE) over the same-query pairs of the rows, s the
    expected grade index (best first: label 0 is the best grade). On several processes each one
    pairs the rows of its own share of the batch: unlike the per-row terms, this is not exactly
    the one-process gradient (a pair split across two shares is not formed)."""
    import torch
    import torch.nn.functional as F

    p = torch.softmax(logits, dim=1)
    s = -(p * torch.arange(logits.shape[1], device=logits.device, dtype=p.dtype)).sum(1)  # higher = better
    q = torch.as_tensor(queries, device=logits.device)
    better = (q[:, None] == q[None, :]) & (gold[:, None] < gold[None, :])
    i, j = better.nonzero(as_tuple=True)
    return Term(F.softplus(-(s[i] - s[j]) / RANK_SCALE).sum(), float(len(i)), weight)


RANK_SCALE = 0.5  # a margin of half a grade costs softplus(-1); the pair's loss vanishes past ~2 grades


def label_objective(logits, gold, weights, loss: str = "ce", soft=None, soft_weight: float = 0.0):
    """`label_terms` of one batch on one process, as one number."""
    return sum(t.coef * t.numerator / t.normaliser for t in label_terms(logits, gold, weights, loss, soft, soft_weight)
               if t.normaliser)


def train_labels(model, prompts: Sequence[Sequence[int]], gold: Sequence[int], label_ids: Sequence[int], *,
                 pad_id: int, loop: LoopConfig, class_weight_power: float = 1.0, loss: str = "ce", soft=None,
                 soft_weight: float = 0.0, queries: Sequence[int] | None = None, rank_weight: float = 0.0,
                 log=print) -> dict:
    """Fit the label logits serving reads (`label_terms`) with the shared loop (`label_loop.fit`).

    Only parameters with requires_grad train (LoRA adapters, or every weight). Returns the losses per
    epoch, the seconds taken and the number of processes.
    """
    import torch

    from taosr1.training.label_forward import LabelForward

    device = next(p for p in model.parameters() if p.requires_grad).device
    weights = torch.tensor(class_weights(gold, len(label_ids), class_weight_power), device=device)
    forward = LabelForward(model, prompts, label_ids, pad_id, bf16=loop.bf16)
    targets = None if soft is None else torch.tensor(soft, dtype=torch.float32, device=device)
    gold_t = torch.tensor(list(gold), device=device)
    qs = None if queries is None else torch.tensor(list(queries), device=device)

    def step_terms(rows, step):
        r = torch.tensor(rows, device=device)
        terms = label_terms(forward(rows), gold_t[r], weights, loss, None if targets is None else targets[r],
                            soft_weight, None if qs is None else qs[r], rank_weight)
        return terms, {}

    ranked = queries is not None and bool(rank_weight)  # the ranking term needs a query's rows in one batch
    out = fit(model, [len(p) for p in prompts], step_terms, loop, log=log, name="label phase",
              groups=list(queries) if ranked else None)
    return {"label_steps": out["steps"], "label_losses": out["losses"], "label_seconds": out["seconds"],
            "class_weights": [round(float(w), 3) for w in weights], "world_size": out["world_size"],
            "label_resumed_from_step": out["resumed_from_step"],
            **({"soft_label_weight": soft_weight} if targets is not None and soft_weight else {}),
            **({"rank_weight": rank_weight, "batches": "by query"} if ranked else {})}
