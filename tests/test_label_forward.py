"""The training forward of the label logits (taosr1/training/label_forward.py): the frozen lower blocks
run once per prompt, and what comes out is what the full forward computes."""

from __future__ import annotations

import pytest
import torch

from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptBuilder
from taosr1.labeling.models import load_tokenizer
from taosr1.labeling.tiny import build_tiny_model
from taosr1.training import label_forward as lf


@pytest.fixture(scope="module")
def four_blocks(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny4"), layers=4)


def _lora_model(path, top: int, seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    m = get_peft_model(m, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                     layers_to_transform=list(range(4 - top, 4))))
    for name, p in m.named_parameters():
        if "lora_B" in name:  # a trained adapter, not the zero init
            torch.nn.init.normal_(p, std=0.2)
    return m


def _prompts(path, sample_df, n=12):
    tok = load_tokenizer(path)
    rows = [{"query": r.query, "title": r.product_title} for r in sample_df.head(n).itertuples()]
    scheme = load_scheme("taosr1")
    return PromptBuilder(tok, scheme).build(rows).ids, scheme.token_ids(tok), tok.pad_token_id


def test_cached_frozen_blocks_give_the_full_forward(four_blocks, sample_df):
    model = _lora_model(four_blocks, top=2)
    ids, label_ids, pad = _prompts(four_blocks, sample_df)
    fast = lf.LabelForward(model, ids, label_ids, pad)
    assert fast.frozen == 2 and fast.shared > 0
    full = lf.label_logits(model, ids, label_ids, pad, fast.shared)
    torch.testing.assert_close(fast([3, 0, 7]), full[[3, 0, 7]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast(list(range(len(ids)))), full, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_trainable_blocks_only(four_blocks, sample_df):
    model = _lora_model(four_blocks, top=2)
    ids, label_ids, pad = _prompts(four_blocks, sample_df)
    model.train()
    lf.LabelForward(model, ids, label_ids, pad)([0, 1, 2]).logsumexp(1).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


def test_a_later_stage_with_the_same_frozen_blocks_reuses_their_output(four_blocks, sample_df):
    """DPO after SFT starts from another model whose lower blocks are the base's: the kept output is
    reused for the prompts seen (no recompute), and a model with other lower blocks computes its own."""
    lf.FROZEN.clear()
    ids, label_ids, pad = _prompts(four_blocks, sample_df)
    first = lf.LabelForward(_lora_model(four_blocks, top=2, seed=0), ids, label_ids, pad)
    first([0])
    kept = next(iter(lf.FROZEN.values()))
    assert len(kept) == len(ids)
    calls = []
    later_model = _lora_model(four_blocks, top=2, seed=1)  # other adapters, same frozen blocks
    later = lf.LabelForward(later_model, ids[:5], label_ids, pad)
    original = lf.run_blocks
    lf.run_blocks = lambda body, h, first_block, *a, **k: calls.append(first_block) or original(body, h, first_block, *a, **k)
    try:
        out = later([0, 4])
    finally:
        lf.run_blocks = original
    assert 0 not in calls[1:]  # the frozen blocks ran for the prefix only, no prompt
    torch.testing.assert_close(out, lf.label_logits(later_model, ids[:5], label_ids, pad, later.shared)[[0, 4]],
                               atol=1e-5, rtol=1e-5)
    other = _lora_model(four_blocks, top=3)  # block 1 trains now: its output cannot be kept
    assert lf.LabelForward(other, ids, label_ids, pad).frozen == 1


def test_nothing_frozen_runs_every_block(four_blocks, sample_df):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(four_blocks, dtype=torch.float32)  # full fine-tuning
    ids, label_ids, pad = _prompts(four_blocks, sample_df, 4)
    fast = lf.LabelForward(model, ids, label_ids, pad)
    assert fast.frozen == 0
    torch.testing.assert_close(fast([0, 1, 2, 3]), lf.label_logits(model, ids, label_ids, pad, fast.shared))
