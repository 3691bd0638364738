"""The transformers engine against an unbatched full-vocabulary reference."""

import numpy as np
import pytest
import torch

from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptBuilder
from taosr1.labeling.engines import EngineConfig, length_batches, make_engine


@pytest.fixture(scope="module")
def prompts(tiny_engine, sample_df):
    rows = [{"query": q, "title": t} for q, t in zip(sample_df["query"][:24], sample_df["product_title"][:24])]
    rows[3]["title"] = "x"  # a short prompt among long ones: plenty of padding in a batch
    return PromptBuilder(tiny_engine.tokenizer, load_scheme("taosr1")).build(rows).ids


def reference(engine, prompts, label_ids):
    """Full forward pass, one prompt at a time, logits over the whole vocabulary."""
    out = []
    for p in prompts:
        with torch.inference_mode():
            logits = engine.model(input_ids=torch.tensor([p])).logits[0, -1].double()
        out.append(torch.softmax(logits[label_ids], dim=0).numpy())
    return np.stack(out)


@pytest.mark.parametrize("reuse_prefix", [True, False])
@pytest.mark.parametrize("max_batch_size,max_batch_tokens", [(1, 100_000), (4, 100_000), (64, 100_000), (64, 400)])
def test_probabilities_match_reference_whatever_the_batching(tiny_model, prompts, max_batch_size, max_batch_tokens, reuse_prefix):
    engine = make_engine(EngineConfig(model=tiny_model, max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens,
                                      reuse_prefix=reuse_prefix))
    ids = load_scheme("taosr1").token_ids(engine.tokenizer)
    got = engine.score(prompts, ids)
    ref = reference(engine, prompts, ids)
    assert got.shape == (len(prompts), 4)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert len(set(np.round(got[:, 0], 6))) > 1  # the rows really differ


def test_order_of_prompts_does_not_change_a_row(tiny_engine, prompts):
    ids = load_scheme("esci").token_ids(tiny_engine.tokenizer)
    a = tiny_engine.score(prompts, ids)
    rev = tiny_engine.score(prompts[::-1], ids)[::-1]
    np.testing.assert_allclose(a, rev, atol=1e-6)


def test_length_batches_respect_budget_and_cover_every_index():
    lengths = [5, 100, 7, 50, 51, 8, 300]
    batches = length_batches(lengths, max_batch_tokens=120, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120
    assert batches[0] == [6]  # longer than the budget: alone, and first


def test_token_counters_and_shared_prefix_reuse(tiny_model, prompts):
    ids = load_scheme("taosr1").token_ids(make_engine(EngineConfig(model=tiny_model)).tokenizer)
    plain = make_engine(EngineConfig(model=tiny_model, max_batch_size=64, reuse_prefix=False))
    plain.score(prompts, ids)
    s = plain.stats
    assert s.real_tokens == sum(len(p) for p in prompts)
    assert s.computed_tokens == s.real_tokens + s.padding_tokens
    assert 0 < s.padding_efficiency < 1  # one short prompt among long ones pads the batch
    reused = make_engine(EngineConfig(model=tiny_model, max_batch_size=64))
    reused.score(prompts, ids)
    r = reused.stats
    assert r.real_tokens == s.real_tokens
    assert r.computed_tokens < s.computed_tokens / 2  # the system prompt ran once, not 24 times


def test_prompts_without_a_shared_prefix_still_score(tiny_engine):
    ids = load_scheme("taosr1").token_ids(tiny_engine.tokenizer)
    prompts = [[5, 6, 7, 8], [9, 10, 11], [5, 6, 7, 8, 9]]
    got = tiny_engine.score(prompts, ids)
    np.testing.assert_allclose(got, reference(tiny_engine, prompts, ids), atol=1e-5)


def test_generate_gives_n_samples_reproducibly(tiny_engine, prompts):
    a = tiny_engine.generate(prompts[:3], n=2, temperature=1.0, max_new_tokens=6, seed=7)
    b = tiny_engine.generate(prompts[:3], n=2, temperature=1.0, max_new_tokens=6, seed=7)
    assert [len(x) for x in a] == [2, 2, 2]
    assert a == b
    assert all(isinstance(t, str) and t for x in a for t in x)
    # a prompt's samples depend on the seed and the prompt, not on the batch it is in
    assert tiny_engine.generate(prompts[1:3], n=2, temperature=1.0, max_new_tokens=6, seed=7) == a[1:]
    assert tiny_engine.generate(prompts[:3][::-1], n=2, temperature=1.0, max_new_tokens=6, seed=7) == a[::-1]
    assert tiny_engine.generate(prompts[:3], n=2, temperature=1.0, max_new_tokens=6, seed=8) != a
    greedy = tiny_engine.generate(prompts[:2], n=1, temperature=0.0, max_new_tokens=6)
    assert greedy == tiny_engine.generate(prompts[:2], n=1, temperature=0.0, max_new_tokens=6, seed=99)


def test_sampled_tokens_follow_the_models_distribution(tiny_engine):
    """The per-row seeded sampler (Gumbel-max) draws from softmax(logits / temperature)."""
    prompt, t, n = [5, 6, 7, 8, 9], 0.05, 2000  # a low temperature: a few likely tokens
    with torch.inference_mode():
        logits = tiny_engine.model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    probs = torch.softmax(logits / t, dim=0).numpy()
    texts = tiny_engine.generate([prompt], n=n, temperature=t, max_new_tokens=1, seed=3)[0]
    for k in np.argsort(-probs)[:4]:
        text = tiny_engine.tokenizer.decode([int(k)])
        expected = sum(probs[j] for j in range(len(probs)) if tiny_engine.tokenizer.decode([j]) == text)
        share = sum(x == text for x in texts) / n
        assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / n), (text, share, expected)


def test_bfloat16_on_cpu_stays_close(tiny_model, prompts):
    f32 = make_engine(EngineConfig(model=tiny_model))
    bf16 = make_engine(EngineConfig(model=tiny_model, dtype="bfloat16"))
    ids = load_scheme("taosr1").token_ids(f32.tokenizer)
    np.testing.assert_allclose(bf16.score(prompts, ids), f32.score(prompts, ids), atol=0.05)
