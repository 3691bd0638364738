"""DPO and GRPO on the label position: the preference and RL stages when the samples are labels.

With `draw: label` a sample, a DPO pair and a GRPO completion are each one label token after
the prompt, and serving reads the softmax over the label tokens' logits at that position. So
both stages train exactly that distribution, with label_loss's shared-prefix forward pass
(one row = its own ~55 tokens behind a ~155-token prefix run once per batch). TRL's trainers
run every row's whole prompt and the full-vocabulary head at each position: on the 2-core
CPU a DPO step of 16 pairs took 167 s there, against seconds here. The losses are TRL's:
- DPO: -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))), pi and ref
  the label distribution of the policy and of the model the stage starts from (frozen);
- GRPO: G labels drawn per prompt from the policy, reward 1 for the gold label, advantages
  normalised within the group, groups whose rewards are all equal dropped, one policy-gradient
  step per draw (TRL's defaults: one iteration, so the clipped ratio is 1, and no KL term).
"""

from __future__ import annotations

from typing import Sequence

from taosr1.training.label_loss import fit, label_logits, shared_prefix_len


def reference_logprobs(model, prompts: Sequence[Sequence[int]], label_ids: Sequence[int], pad_id: int,
                       batch_size: int = 16):
    """(rows, labels) log-probabilities of the frozen starting model, computed once."""
    import torch

    shared = shared_prefix_len(prompts)
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(prompts), batch_size):
            batch = prompts[s: s + batch_size]
            out.append(torch.log_softmax(label_logits(model, batch, label_ids, pad_id, shared).float(), -1))
    return torch.cat(out)


def train_label_dpo(model, prompts: Sequence[Sequence[int]], chosen: Sequence[int], rejected: Sequence[int],
                    label_ids: Sequence[int], *, pad_id: int, beta: float, epochs: float, learning_rate: float,
                    max_steps: int = 0, batch_size: int = 16, bf16: bool = False, seed: int = 0, log=print) -> dict:
    """DPO over preference pairs (prompt, chosen label index, rejected label index); `max_steps`
    > 0 sets the steps, else `epochs` does."""
    import torch
    import torch.nn.functional as F

    ref = reference_logprobs(model, prompts, label_ids, pad_id, batch_size)
    shared = shared_prefix_len(prompts)
    c_idx, r_idx = torch.tensor(list(chosen)), torch.tensor(list(rejected))

    def step_loss(batch):
        lp = torch.log_softmax(label_logits(model, [prompts[i] for i in batch], label_ids, pad_id, shared).float(), -1)
        rows, b = torch.arange(len(batch)), torch.tensor(batch)
        c = lp[rows, c_idx[b]] - ref[b, c_idx[b]]
        r = lp[rows, r_idx[b]] - ref[b, r_idx[b]]
        margin = beta * (c - r)
        return -F.logsigmoid(margin).mean(), {"reward_accuracy": (margin > 0).float().mean().item(),
                                              "reward_margin": margin.mean().item()}

    out = fit(model, [len(p) for p in prompts], step_loss, epochs=epochs, batch_size=batch_size,
              learning_rate=learning_rate, max_steps=max_steps, bf16=bf16, seed=seed, log=log, name="label DPO")
    return {"steps": out["steps"], "losses": out["losses"], "metrics": out["metrics"], "train_seconds": out["seconds"]}


def train_label_grpo(model, prompts: Sequence[Sequence[int]], gold: Sequence[int], label_ids: Sequence[int], *,
                     pad_id: int, num_generations: int, prompts_per_step: int, max_steps: int, learning_rate: float,
                     temperature: float = 1.0, bf16: bool = False, seed: int = 0, log=print) -> dict:
    """GRPO on the label: `max_steps` steps of `prompts_per_step` prompts x `num_generations` draws."""
    import torch

    shared = shared_prefix_len(prompts)
    gen = torch.Generator().manual_seed(seed)
    gold_t = torch.tensor(list(gold))

    def step_loss(batch):
        logits = label_logits(model, [prompts[i] for i in batch], label_ids, pad_id, shared).float()
        logp = torch.log_softmax(logits / temperature, -1)
        draws = torch.multinomial(logp.detach().exp().cpu(), num_generations, replacement=True, generator=gen)
        rewards = (draws == gold_t[torch.tensor(batch)].unsqueeze(1)).float()
        std = rewards.std(dim=1, keepdim=True)
        adv = ((rewards - rewards.mean(dim=1, keepdim=True)) / (std + 1e-4)).to(logp.device)
        keep = (std.squeeze(1) > 0).to(logp.device)
        taken = logp.gather(1, draws.to(logp.device))
        kept = keep.sum().item()
        loss = -(adv * taken)[keep].sum() / (kept * num_generations) if kept else (logp * 0).sum()
        return loss, {"reward": rewards.mean().item(), "dropped_equal_reward_groups": 1 - kept / len(batch)}

    out = fit(model, [len(p) for p in prompts], step_loss, epochs=0, max_steps=max_steps, batch_size=prompts_per_step,
              learning_rate=learning_rate, bf16=bf16, seed=seed, log=log, name="label GRPO")
    return {"steps": out["steps"], "losses": out["losses"], "metrics": out["metrics"], "train_seconds": out["seconds"]}
