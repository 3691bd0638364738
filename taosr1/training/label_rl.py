"""DPO and GRPO on the label position: the preference and RL stages when the samples are labels.

With `draw: label` a sample, a DPO pair and a GRPO completion are each one label token after
the prompt, and serving reads the softmax over the label tokens' logits at that position. So
both stages train exactly that distribution, with label_loss's shared-prefix forward pass
(one row = its own ~55 tokens behind a ~155-token prefix run once per batch). TRL's trainers
run every row's whole prompt and the full-vocabulary head at each position: on the 2-core
CPU a DPO step of 16 pairs took 167 s there, against seconds here. The losses are TRL's:
- DPO: -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))), pi and ref
  the label distribution of the policy and of the model the stage starts from (frozen); TRL's
  `loss_type` list combines it with `hinge`, `ipo` or `sft` (the chosen label's NLL, as in
  RPO/MPO), weighted by `loss_weights`;
- GRPO: G labels drawn per prompt from the policy, reward 1 for the gold label, advantages
  normalised within the group, groups whose rewards are all equal dropped, one policy-gradient
  step per draw (TRL's defaults: one iteration, so the clipped ratio is 1, and no KL term).
Both take per-row weights: the stages pass the gold class's weight (label_loss.class_weights),
as the SFT label phase does, so that the rare grades are not traded away for the common one.
"""

from __future__ import annotations

from typing import Sequence

from taosr1.training.label_forward import LabelForward
from taosr1.training.label_loop import LoopConfig, Term, fit

LABEL_DPO_LOSSES = ("sigmoid", "hinge", "ipo", "sft")


def dpo_losses(lp, ref, chosen, rejected, *, beta: float, loss_type: Sequence[str]):
    """(rows, kinds) per-row DPO losses of label log-probabilities `lp` against `ref`, as TRL's
    DPOTrainer computes each kind for a pair of one-token completions."""
    import torch
    import torch.nn.functional as F

    rows = torch.arange(lp.size(0))
    logits = (lp[rows, chosen] - ref[rows, chosen]) - (lp[rows, rejected] - ref[rows, rejected])
    kinds = {"sigmoid": lambda: -F.logsigmoid(beta * logits),
             "hinge": lambda: torch.relu(1 - beta * logits),
             "ipo": lambda: (logits - 1 / (2 * beta)) ** 2,
             "sft": lambda: -lp[rows, chosen]}
    return torch.stack([kinds[k]() for k in loss_type], 1), beta * logits


def reference_logprobs(model, prompts: Sequence[Sequence[int]], label_ids: Sequence[int], pad_id: int,
                       batch_size: int = 16, bf16: bool = False):
    """(rows, labels) log-probabilities of the frozen starting model, computed once."""
    return logprobs(LabelForward(model, prompts, label_ids, pad_id, bf16=bf16), batch_size)


def logprobs(forward: LabelForward, batch_size: int = 16):
    """(rows, labels) label log-probabilities of every prompt of `forward`, without gradients."""
    import torch

    was = forward.model.training
    forward.model.eval()
    out = []
    with torch.no_grad(), torch.autocast(forward.device.type, dtype=torch.bfloat16, enabled=forward.bf16):
        for s in range(0, len(forward.prompts), batch_size):
            out.append(torch.log_softmax(forward(list(range(s, min(s + batch_size, len(forward.prompts))))).float(), -1))
    forward.model.train(was)
    return torch.cat(out)


def train_label_dpo(model, prompts: Sequence[Sequence[int]], chosen: Sequence[int], rejected: Sequence[int],
                    label_ids: Sequence[int], *, pad_id: int, beta: float, loop: LoopConfig,
                    loss_type: Sequence[str] = ("sigmoid",), loss_weights: Sequence[float] | None = None,
                    row_weights: Sequence[float] | None = None, log=print) -> dict:
    """DPO over preference pairs (prompt, chosen label index, rejected label index), with the shared
    loop (`loop`: steps or epochs, batch, learning rate, checkpoints). `row_weights` weigh each pair's
    loss (mean 1)."""
    import torch

    unknown = sorted(set(loss_type) - set(LABEL_DPO_LOSSES))
    if unknown or not loss_type:
        raise ValueError(f"label DPO takes loss_type from {LABEL_DPO_LOSSES}, got {list(loss_type)}")
    mix = torch.tensor(list(loss_weights) if loss_weights else [1.0] * len(loss_type))
    if len(mix) != len(loss_type):
        raise ValueError(f"loss_weights {list(mix.tolist())} must give one weight per loss_type {list(loss_type)}")
    forward = LabelForward(model, prompts, label_ids, pad_id, bf16=loop.bf16)
    ref = logprobs(forward, loop.batch_size)  # the starting model's, its frozen blocks' output kept for the steps
    c_idx, r_idx = torch.tensor(list(chosen)), torch.tensor(list(rejected))
    w = torch.tensor(list(row_weights) if row_weights is not None else [1.0] * len(prompts))

    def step_terms(rows, step):
        b = torch.tensor(rows)
        lp = torch.log_softmax(forward(rows).float(), -1)
        losses, margin = dpo_losses(lp, ref[b].to(lp.device), c_idx[b], r_idx[b], beta=beta, loss_type=loss_type)
        total = ((losses * mix.to(lp.device)).sum(1) * w[b].to(lp.device)).sum()
        return [Term(total, float(len(rows)))], {"reward_accuracy": (margin > 0).float().mean().item(),
                                                 "reward_margin": margin.mean().item()}

    out = fit(model, [len(p) for p in prompts], step_terms, loop, log=log, name="label DPO")
    return {"steps": out["steps"], "losses": out["losses"], "metrics": out["metrics"], "train_seconds": out["seconds"],
            "world_size": out["world_size"], "resumed_from_step": out["resumed_from_step"]}


def train_label_grpo(model, prompts: Sequence[Sequence[int]], gold: Sequence[int], label_ids: Sequence[int], *,
                     pad_id: int, num_generations: int, loop: LoopConfig, temperature: float = 1.0,
                     row_weights: Sequence[float] | None = None, log=print) -> dict:
    """GRPO on the label: `loop.max_steps` steps of `loop.batch_size` prompts x `num_generations` draws.

    `row_weights` scale each prompt's advantages (after the group normalisation, which a reward scale
    would cancel). Each prompt's draws come from a generator seeded by the seed, the step's position
    and the prompt, so they do not depend on which process draws them, nor on a resume."""
    import torch

    forward = LabelForward(model, prompts, label_ids, pad_id, bf16=loop.bf16)
    gold_t = torch.tensor(list(gold))
    w = torch.tensor(list(row_weights) if row_weights is not None else [1.0] * len(prompts))
    def step_terms(rows, step):
        logits = forward(rows).float()
        logp = torch.log_softmax(logits / temperature, -1)
        draws = _draws(logp.detach().exp().cpu(), rows, num_generations, loop.seed, step)
        rewards = (draws == gold_t[torch.tensor(rows)].unsqueeze(1)).float()
        std = rewards.std(dim=1, keepdim=True)
        adv = ((rewards - rewards.mean(dim=1, keepdim=True)) / (std + 1e-4) * w[torch.tensor(rows)].unsqueeze(1)).to(logp.device)
        keep = (std.squeeze(1) > 0).to(logp.device)
        taken = logp.gather(1, draws.to(logp.device))
        kept = int(keep.sum().item())
        total = -(adv * taken)[keep].sum() if kept else (logp * 0).sum()
        return [Term(total, float(kept * num_generations))], {"reward": rewards.mean().item(),
                                                             "dropped_equal_reward_groups": 1 - kept / len(rows)}

    out = fit(model, [len(p) for p in prompts], step_terms, loop, log=log, name="label GRPO")
    return {"steps": out["steps"], "losses": out["losses"], "metrics": out["metrics"], "train_seconds": out["seconds"],
            "world_size": out["world_size"], "resumed_from_step": out["resumed_from_step"]}


def _draws(probs, rows, n: int, seed: int, step: int):
    """`n` labels per row drawn from `probs`, each row from its own generator (seed, step, row)."""
    import torch

    out = []
    for p, r in zip(probs, rows):
        g = torch.Generator().manual_seed(hash((seed, step, int(r))) & 0x7FFFFFFFFFFFFFFF)
        out.append(torch.multinomial(p, n, replacement=True, generator=g))
    return torch.stack(out)
