"""The label logits serving reads, computed for training: once per prompt for the frozen lower blocks.

Serving reads one thing from the model: the logits of the label tokens at the last prompt
position (taosr1/labeling/engines/hf.py). The label-position stages (the SFT label phase, label
DPO, label GRPO, label sampling) train and read exactly that. Two savings make them fit a CPU:

- the prefix every prompt shares (the system prompt, most of a prompt's tokens) runs once per
  batch, and every row attends to its KV cache (gradients flow through it);
- the blocks below the first one with a trainable weight (LoRA on the top `lora_layers` blocks)
  give the same hidden states at every step and in every stage that starts from the same base:
  `LabelForward` runs them once per prompt and keeps their output (`frozen` blocks), so a step
  runs only the trainable blocks. On the 2-core CPU, with 10 of SmolLM2's 30 blocks trained, a
  training epoch costs about a third of a full forward-and-backward pass.

The cached path computes what the full forward computes (tested against it within float
rounding); `frozen=0` is the plain path.
"""

from __future__ import annotations

import contextlib
from typing import Sequence


def shared_prefix_len(prompts: Sequence[Sequence[int]], keep: int = 1) -> int:
    """Tokens every prompt starts with, leaving each at least `keep` of its own."""
    first = prompts[0]
    n = min(len(p) for p in prompts) - keep
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def decoder(model):
    """The causal LM's decoder body (embeddings, blocks, final norm), under peft or not."""
    if hasattr(model, "get_base_model"):  # a peft model: its adapters live inside the base model's layers
        model = model.get_base_model()
    return model, getattr(model, model.base_model_prefix)


def frozen_blocks(model) -> int:
    """How many leading blocks have no trainable weight, embeddings included (0 when they train)."""
    _, body = decoder(model)
    if any(p.requires_grad for p in body.embed_tokens.parameters()):
        return 0
    for i, layer in enumerate(body.layers):
        if any(p.requires_grad for p in layer.parameters()):
            return i
    return len(body.layers)


def _mask(body, hidden, attention_mask, cache, positions, first: int):
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(config=body.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=cache, position_ids=positions, layer_idx=first)


def run_blocks(body, hidden, first: int, last: int, cache, attention_mask=None, start_pos: int = 0):
    """Blocks [first, last) over `hidden` (batch, tokens, dim) at positions start_pos.., attending to
    what `cache` holds for those blocks (and adding to it): the loop of the model's own forward."""
    import torch

    positions = (start_pos + torch.arange(hidden.shape[1], device=hidden.device))[None].expand(hidden.shape[0], -1)
    mask = _mask(body, hidden, attention_mask, cache, positions, first)
    rope = body.rotary_emb(hidden, position_ids=positions)
    for layer in body.layers[first:last]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=rope, position_ids=positions,
                       past_key_values=cache, use_cache=True)
    return hidden


def _padded(rows, device, dtype):
    """Right-padded (batch, width, dim) hidden states and the lengths of the rows."""
    import torch

    lengths = [r.shape[0] for r in rows]
    out = torch.zeros(len(rows), max(lengths), rows[0].shape[-1], device=device, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : lengths[i]] = r
    return out, lengths


class LabelForward:
    """(rows, labels) label logits at each prompt's last position, for batches of prompt indices.

    Args:
        model: the (peft) causal LM being trained, or evaluated.
        prompts: every prompt's token ids; they share a leading prefix (the system prompt).
        label_ids: the label tokens' ids, in the scheme's order.
        cache_frozen: keep the frozen lower blocks' output per prompt (computed on the first call);
            False runs every block every time.
        bf16: compute that output under bf16 autocast, as the training steps run.
        frozen: how many leading blocks to keep the output of (default: those with no trainable weight);
            grading a trained model names the blocks its training left as the base's.

    The kept output is shared within the process: a later stage whose model has the same frozen
    blocks (SFT, then label sampling, DPO and GRPO from the same base) reuses it for the prompts it
    has already seen (`FROZEN`, keyed by those blocks' weights).
    """

    def __init__(self, model, prompts: Sequence[Sequence[int]], label_ids: Sequence[int], pad_id: int,
                 cache_frozen: bool = True, bf16: bool = False, frozen: int | None = None):
        self.model, self.prompts, self.pad_id, self.bf16 = model, prompts, pad_id, bf16
        self.label_ids = list(label_ids)
        self.shared = shared_prefix_len(prompts)
        self.causal, self.body = decoder(model)
        self.frozen = 0 if not cache_frozen else frozen_blocks(model) if frozen is None else min(frozen, len(self.body.layers))
        self._rows: list | None = None  # the frozen blocks' output per prompt (own tokens)
        self._prefix = None  # ... and the shared prefix's

    @property
    def device(self):
        return self.causal.get_output_embeddings().weight.device

    def __call__(self, batch: Sequence[int]):
        import torch

        if self.frozen and self._rows is None:
            self._cache_frozen()
        n = len(self.body.layers)
        cache = self._new_cache()
        prefix = self._prefix if self.frozen else self.body.embed_tokens(self._ids([self.prompts[0][: self.shared]]))
        if self.shared:
            run_blocks(self.body, prefix, self.frozen, n, cache)
            cache.batch_repeat_interleave(len(batch))
        if self.frozen:
            hidden, lengths = _padded([self._rows[i] for i in batch], self.device, self._prefix.dtype)
        else:
            own = [self.prompts[i][self.shared:] for i in batch]
            lengths = [len(o) for o in own]
            hidden = self.body.embed_tokens(self._ids(own, pad=True))
        mask = self._attention(lengths)
        hidden = self.body.norm(run_blocks(self.body, hidden, self.frozen, n, cache, mask, self.shared))
        last = hidden[torch.arange(len(batch), device=hidden.device), torch.tensor(lengths, device=hidden.device) - 1]
        return self._head(last)

    def _head(self, h):
        import torch

        head = self.causal.get_output_embeddings()
        idx = torch.tensor(self.label_ids, device=h.device)
        logits = h.float() @ head.weight.index_select(0, idx).float().T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias.index_select(0, idx).float()
        return logits

    def _ids(self, rows, pad: bool = False):
        import torch

        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        return out.to(self.device)

    def _attention(self, lengths):
        import torch

        mask = torch.zeros(len(lengths), self.shared + max(lengths), dtype=torch.long)
        mask[:, : self.shared] = 1
        for i, n in enumerate(lengths):
            mask[i, self.shared : self.shared + n] = 1
        return mask.to(self.device)

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.body.config)

    def _cache_frozen(self, batch_tokens: int = 4096) -> None:
        """Run the frozen blocks once over the prefix and every prompt not yet kept, longest first in
        token-budget batches."""
        import torch

        key = (self._frozen_digest(), self.frozen, tuple(self.prompts[0][: self.shared]), self.bf16, str(self.device))
        if key not in FROZEN:
            while len(FROZEN) >= KEEP:  # the oldest goes
                FROZEN.pop(next(iter(FROZEN)))
            FROZEN[key] = {}
        kept = FROZEN[key]
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        with torch.no_grad(), _eval(self.model), autocast:
            cache = self._new_cache()
            prefix = self.body.embed_tokens(self._ids([self.prompts[0][: self.shared]]))
            self._prefix = run_blocks(self.body, prefix, 0, self.frozen, cache) if self.shared else prefix[:, :0]
            todo = [i for i in range(len(self.prompts)) if tuple(self.prompts[i]) not in kept]
            order = sorted(todo, key=lambda i: -len(self.prompts[i]))
            for batch in _token_batches(order, [len(self.prompts[i]) - self.shared for i in order], batch_tokens):
                own = [self.prompts[i][self.shared:] for i in batch]
                lengths = [len(o) for o in own]
                past = _repeat(cache, len(batch)) if self.shared else self._new_cache()
                h = run_blocks(self.body, self.body.embed_tokens(self._ids(own, pad=True)), 0, self.frozen, past,
                               self._attention(lengths), self.shared)
                for j, i in enumerate(batch):
                    kept[tuple(self.prompts[i])] = h[j, : lengths[j]].clone()
        self._rows = [kept[tuple(p)] for p in self.prompts]

    def _frozen_digest(self) -> str:
        """The frozen blocks' weights (embeddings included) by content."""
        import hashlib

        import torch

        h = hashlib.blake2b(digest_size=16)
        for module in (self.body.embed_tokens, *self.body.layers[: self.frozen]):
            for t in module.state_dict().values():
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


FROZEN: dict = {}  # the process's kept frozen-block output: {(weights, blocks, prefix, bf16, device): {prompt ids: rows}}
KEEP = 2  # models' worth of kept output (SFT's base, and one other)


def _token_batches(order: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive rows of `order` in batches of at most `budget` padded tokens (longest first)."""
    batches, cur, width = [], [], 0
    for i, n in zip(order, lengths):
        if cur and max(width, n) * (len(cur) + 1) > budget:
            batches.append(cur)
            cur, width = [], 0
        cur.append(i)
        width = max(width, n)
    return batches + ([cur] if cur else [])


def _repeat(cache, n: int):
    import copy

    out = copy.deepcopy(cache)
    out.batch_repeat_interleave(n)
    return out


@contextlib.contextmanager
def _eval(model):
    """Dropout off while the frozen blocks' output is computed (it has none to drop: they are frozen)."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def label_logits(model, prompts: Sequence[Sequence[int]], label_ids: Sequence[int], pad_id: int, shared: int = 0):
    """(rows, labels) label logits of `prompts` through every block (the reference for LabelForward)."""
    forward = LabelForward(model, prompts, label_ids, pad_id, cache_frozen=False)
    forward.shared = shared
    return forward(list(range(len(prompts))))
