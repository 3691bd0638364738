"""Packed scoring: many prompts in one sequence, separated by an attention mask, no padding.

Post-CoT prompts are a long shared prefix (system prompt, template) and a short per-pair
part (~50 tokens on ESCI). Padded batches of such rows give a GPU small matrices: a row cap
of 256 is ~14k computed tokens. Packing puts the prefix once at the head of a sequence of
`max_batch_tokens` tokens and fills the rest with per-pair parts, so every forward pass is
one large matrix product. Flex attention's block mask keeps each part seeing only the prefix
and itself (causally), and skips the blocks that are all masked; position ids restart after
the prefix, so each part is computed as if it followed the prefix alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

BLOCK = 128  # flex attention's block size; packs are padded to a multiple of it
ATTENTION = "taosr1_packed"  # the attention function `register_attention` adds to transformers
_compiled: dict = {}


@dataclass
class Pack:
    """One packed sequence: its token ids, the part each position belongs to (0 is the shared
    prefix), position ids, and the index in the pack of each row's last token."""

    rows: list[int]
    ids: list[int]
    doc: list[int]
    pos: list[int]
    last: list[int]
    padding: int


def pack_rows(prompts: Sequence[Sequence[int]], shared: int, budget: int) -> list[Pack]:
    """Prompts (which all start with the same `shared` tokens) in packs of at most `budget`
    tokens, prefix included, in input order. A part longer than the budget gets a pack of its own."""
    packs: list[Pack] = []
    cur: Pack | None = None
    for i, p in enumerate(prompts):
        part = list(p[shared:])
        if cur is not None and len(cur.ids) + len(part) > budget:
            packs.append(_close(cur))
            cur = None
        if cur is None:
            cur = Pack([], list(p[:shared]), [0] * shared, list(range(shared)), [], 0)
        cur.rows.append(i)
        cur.ids += part
        cur.doc += [len(cur.rows)] * len(part)
        cur.pos += range(shared, shared + len(part))
        cur.last.append(len(cur.ids) - 1)
    if cur is not None:
        packs.append(_close(cur))
    return packs


def _close(pack: Pack) -> Pack:
    """Pad to a whole number of blocks; the padding is one more part, which no prompt's part sees."""
    pack.padding = -len(pack.ids) % BLOCK
    pack.ids += [0] * pack.padding
    pack.doc += [len(pack.rows) + 1] * pack.padding
    pack.pos += range(pack.padding)
    return pack


def block_mask(doc, device):
    """Flex attention's BlockMask for a pack: position q sees kv when kv <= q and kv is in the
    prefix or in q's own part. Built from block-level part ranges, never a dense T x T mask."""
    import torch
    from torch.nn.attention.flex_attention import BlockMask

    doc = torch.as_tensor(doc, dtype=torch.int32, device=device)
    n = doc.numel() // BLOCK
    d = doc.view(n, BLOCK)
    lo = torch.where(d > 0, d, torch.iinfo(torch.int32).max).amin(1)
    hi = d.amax(1)
    qb, kb = torch.arange(n, device=device)[:, None], torch.arange(n, device=device)[None, :]
    meets = (lo[None, :] <= hi[:, None]) & (lo[:, None] <= hi[None, :])
    live = (kb <= qb) & ((d == 0).any(1)[None, :] | meets)
    order = torch.argsort((~live).to(torch.int8), dim=1, stable=True).to(torch.int32)

    def mask_mod(b, h, q, kv):
        return (kv <= q) & ((doc[kv] == 0) | (doc[kv] == doc[q]))

    return BlockMask.from_kv_blocks(
        live.sum(1, dtype=torch.int32)[None, None], order[None, None], BLOCK_SIZE=BLOCK, mask_mod=mask_mod,
        seq_lengths=(doc.numel(), doc.numel()),
    )


def register_attention() -> str:
    """Register the packed attention with transformers (once) and return its name.

    transformers' own `flex_attention` compiles with automatic dynamic shapes, whose CPU
    kernels fail to build on torch 2.13; here the kernel is compiled with dynamic shapes on
    CUDA (one compile for every pack length) and per pack length on a CPU, where packing is
    for checks (`auto` pads there)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _packed_attention)  # idempotent: the same function each time
    return ATTENTION


def _packed_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    cuda = query.device.type == "cuda"
    if cuda not in _compiled:
        _compiled[cuda] = torch.compile(flex_attention, dynamic=cuda)
    out = _compiled[cuda](query, key, value, block_mask=attention_mask, scale=scaling,
                          enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None
