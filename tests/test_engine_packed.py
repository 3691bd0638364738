"""Packed scoring (flex attention, many prompts per sequence) against the unbatched reference."""

import numpy as np
import pytest
from test_engine_hf import reference

from taosr1.core.config import ConfigError
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptBuilder
from taosr1.labeling.engines import EngineConfig, make_engine
from taosr1.labeling.engines.packing import BLOCK, block_mask, pack_rows


@pytest.fixture(scope="module")
def prompts(tiny_engine, sample_df):
    rows = [{"query": q, "title": t} for q, t in zip(sample_df["query"][:40], sample_df["product_title"][:40])]
    rows[3]["title"] = "x"
    rows[7]["title"] = " ".join(sample_df["product_title"][:12])  # one part longer than a small pack
    return PromptBuilder(tiny_engine.tokenizer, load_scheme("taosr1")).build(rows).ids


def test_packs_cover_each_row_once_within_the_budget():
    prompts = [[1] * 20 + [2] * k for k in (5, 30, 300, 7, 7, 1)]
    packs = pack_rows(prompts, shared=20, budget=128)
    assert sorted(i for p in packs for i in p.rows) == list(range(6))
    for p in packs:
        assert len(p.ids) % BLOCK == 0 and p.ids[:20] == [1] * 20 and p.doc[:20] == [0] * 20
        real = len(p.ids) - p.padding
        assert real <= 128 or p.rows == [2]  # only the 300-token part runs over, alone
        for k, i in enumerate(p.rows):  # each row's last token is its own, at its own position
            assert p.doc[p.last[k]] == k + 1 and p.pos[p.last[k]] == len(prompts[i]) - 1


def test_block_mask_is_causal_and_keeps_parts_apart():
    import torch

    doc = [0] * 100 + [1] * 60 + [2] * 90 + [3] * 6  # 256 positions: two blocks
    mask = block_mask(doc, "cpu").to_dense()[0, 0]  # block-level: which blocks are computed
    assert mask.tolist() == [[1, 0], [1, 1]]
    bm = block_mask(doc, "cpu")
    d = torch.tensor(doc)
    q, kv = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    allowed = bm.mask_mod(0, 0, q, kv)
    assert allowed[120, 10] and allowed[120, 119] and not allowed[120, 121]  # prefix and own part, causally
    assert not allowed[200, 120] and allowed[200, 99]  # part 2 never sees part 1, always the prefix
    assert allowed[50, 49] and not allowed[50, 51] and not allowed[50, 120]  # the prefix sees only itself
    assert (allowed == ((kv <= q) & ((d[kv] == 0) | (d[kv] == d[q])))).all()


@pytest.mark.parametrize("budget", [256, 100_000])
def test_packed_scores_match_the_reference(tiny_model, prompts, budget):
    engine = make_engine(EngineConfig(model=tiny_model, batching="packed", max_batch_tokens=budget))
    ids = load_scheme("taosr1").token_ids(engine.tokenizer)
    got = engine.score(prompts, ids)
    np.testing.assert_allclose(got, reference(engine, prompts, ids), atol=1e-5)
    s, shared = engine.stats, engine._prefix_len(prompts)
    packs = pack_rows(prompts, shared, budget)
    assert shared > 16 and s.forward_passes == len(packs) and (len(packs) == 1) == (budget == 100_000)
    assert s.real_tokens == sum(len(p) for p in prompts)
    # the shared prefix is computed once per pack, not once per row
    assert s.computed_tokens == sum(len(p) - shared for p in prompts) + shared * len(packs) + s.padding_tokens
    # generation after packed scoring still runs on SDPA with a normal cache
    assert engine.model.config._attn_implementation == "sdpa"
    assert engine.generate(prompts[:2], max_new_tokens=3) == make_engine(EngineConfig(model=tiny_model)).generate(
        prompts[:2], max_new_tokens=3)


def test_auto_pads_on_a_cpu_and_a_bad_value_is_refused(tiny_model):
    assert not make_engine(EngineConfig(model=tiny_model)).packed
    with pytest.raises(ConfigError, match="batching must be one of"):
        EngineConfig(batching="ragged")
