"""`draw: label`: pass@N samples and GRPO completions whose label comes from the label tokens only,
on the tiny model. A model trained on the label tokens' softmax may put little of its
full-vocabulary mass on them, so free samples would be unparseable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taosr1.core.config import ConfigError
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptBuilder, PromptConfig
from taosr1.training.dpo import build_pairs, reference_responses
from taosr1.training.label_loop import LoopConfig
from taosr1.training.sampling import SampleConfig, draw_labels, sample_batch

SCHEME = load_scheme("taosr1")


@pytest.fixture(scope="module")
def prompts(tiny_engine, sample_df):
    from taosr1.training.common import field_rows

    df = sample_df.rename(columns={"product_title": "title"}).head(3)
    return PromptBuilder(tiny_engine.tokenizer, SCHEME, PromptConfig()).build(field_rows(df)).ids


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_drawn_labels_follow_the_scorers_distribution_at_the_temperature(tiny_engine, prompts, temperature):
    n = 4000
    p = tiny_engine.score(prompts, SCHEME.token_ids(tiny_engine.tokenizer))
    drawn = draw_labels(tiny_engine, prompts, SCHEME, n=n, temperature=temperature, seed=3)
    tokens = [lab.token for lab in SCHEME.labels]
    for probs, labels in zip(p, drawn):
        assert len(labels) == n and set(labels) <= set(tokens)
        q = probs ** (1 / temperature)
        freq = np.array([labels.count(t) for t in tokens]) / n
        assert np.abs(freq - q / q.sum()).max() < 0.04  # 4,000 draws: a standard error under 0.008


def test_a_prompts_draws_do_not_depend_on_its_batch_and_follow_the_seed(tiny_engine, prompts):
    together = draw_labels(tiny_engine, prompts, SCHEME, n=16, temperature=1.0, seed=5)
    alone = draw_labels(tiny_engine, prompts[2:], SCHEME, n=16, temperature=1.0, seed=5)
    assert together[2] == alone[0]
    assert draw_labels(tiny_engine, prompts, SCHEME, n=16, temperature=1.0, seed=6) != together


def test_every_drawn_sample_parses_and_is_scored_against_gold(tiny_engine, sample_df):
    df = sample_df.rename(columns={"product_title": "title"}).head(6).assign(
        pair_id=range(6), gold=["Excellent", "Related", "Mismatch", "Irrelevant", "Excellent", "Related"])
    builder = PromptBuilder(tiny_engine.tokenizer, SCHEME, PromptConfig())
    out = sample_batch(df, tiny_engine, builder, n=5, temperature=1.0, max_new_tokens=4, draw="label")
    assert len(out) == 30 and out["label"].notna().all() and out["error"].isna().all()
    token = {lab.name: lab.token for lab in SCHEME.labels}
    assert (out["response"] == out["label"].map(token)).all()  # the post-CoT answer: the label token alone
    assert (out["correct"] == (out["label"] == out["gold"])).all()


def test_draw_label_needs_the_post_cot_format():
    from taosr1.training.grpo import GRPOStageConfig

    with pytest.raises(ConfigError, match="needs draw: response"):
        SampleConfig(format="think_first")
    assert SampleConfig(format="think_first", draw="response").draw == "response"
    with pytest.raises(ConfigError, match="draw must be one of"):
        SampleConfig(draw="tokens")
    with pytest.raises(ConfigError, match="needs draw: response"):
        GRPOStageConfig(output_dir="x", format="think_first")


def test_label_only_dpo_pairs_differ_in_the_judgement_alone():
    t = {lab.name: lab.token for lab in SCHEME.labels}
    cot = pd.DataFrame({"pair_id": [1, 2], "gold": ["Excellent", "Irrelevant"],
                        "response_post_cot": [t["Excellent"] + "\n1. ...", t["Irrelevant"] + "\n1. ..."]})
    samples = pd.DataFrame({"pair_id": [1, 1, 2, 2], "sample": [0, 1, 0, 1],
                            "response": [t["Excellent"], t["Related"], t["Mismatch"], t["Related"]],
                            "correct": [True, False, False, False]})
    ref = reference_responses(cot, SCHEME, "post_cot", label_only=True)
    pairs, counts = build_pairs(samples, ref, pairs_per_prompt=2)
    assert counts["right_vs_wrong"] == 1 and counts["reference_vs_sample"] == 1
    assert set(pairs["chosen"]) == {t["Excellent"], t["Irrelevant"]}  # a right sample; the gold label alone
    assert set(pairs["rejected"]) == {t["Related"], t["Mismatch"]}
    full = reference_responses(cot, SCHEME, "post_cot", label_only=False)
    assert full["response"].tolist() == cot["response_post_cot"].tolist()


def test_label_dpo_moves_the_label_distribution_toward_the_chosen_label(tiny_model):
    import torch

    from taosr1.training.common import load_for_training
    from taosr1.training.label_forward import label_logits
    from taosr1.training.label_rl import reference_logprobs, train_label_dpo

    model, tok, _ = load_for_training(tiny_model)
    ids = [tok(t)["input_ids"] for t in ("red shoes for men", "blue lamp", "usb cable 2m", "oak desk")]
    label_ids = SCHEME.token_ids(tok)
    chosen, rejected = [0, 3, 1, 2], [3, 0, 2, 1]
    before = reference_logprobs(model, ids, label_ids, tok.pad_token_id)
    out = train_label_dpo(model, ids, chosen, rejected, label_ids, pad_id=tok.pad_token_id, beta=0.5,
                          loop=LoopConfig(epochs=8, learning_rate=1e-2, batch_size=4), log=lambda m: None)
    with torch.no_grad():
        after = torch.log_softmax(label_logits(model, ids, label_ids, tok.pad_token_id).float(), -1)
    rows = torch.arange(4)
    gain = (after[rows, chosen] - after[rows, rejected]) - (before[rows, chosen] - before[rows, rejected])
    assert (gain > 0).all() and out["steps"] == 8
    assert out["losses"][-1] < out["losses"][0] and out["metrics"][-1]["reward_accuracy"] == 1.0
    assert out["losses"][0] == pytest.approx(np.log(2), abs=0.05)  # the first step: policy == reference


def test_label_grpo_raises_the_gold_labels_probability(tiny_model):
    import torch

    from taosr1.training.common import load_for_training
    from taosr1.training.label_rl import reference_logprobs, train_label_grpo

    model, tok, _ = load_for_training(tiny_model)
    ids = [tok(t)["input_ids"] for t in ("red shoes for men", "blue lamp", "usb cable 2m", "oak desk")]
    label_ids = SCHEME.token_ids(tok)
    gold = [0, 3, 1, 2]
    before = reference_logprobs(model, ids, label_ids, tok.pad_token_id)
    out = train_label_grpo(model, ids, gold, label_ids, pad_id=tok.pad_token_id, num_generations=8,
                           loop=LoopConfig(batch_size=4, max_steps=30, learning_rate=1e-2), log=lambda m: None)
    after = reference_logprobs(model, ids, label_ids, tok.pad_token_id)
    rows = torch.arange(4)
    # the tiny model's prompts share nearly one hidden state, so they compete: the mean moves, not each row
    assert out["steps"] == 30 and after[rows, gold].mean() > before[rows, gold].mean() + 0.5
    reward = [m["reward"] for m in out["metrics"]]  # one step per epoch here
    assert np.mean(reward[-5:]) > np.mean(reward[:5])
    assert all(0 <= m["dropped_equal_reward_groups"] <= 1 for m in out["metrics"])


def test_label_dpo_losses_are_trls_for_one_token_completions():
    import torch

    from taosr1.training.label_rl import dpo_losses

    lp = torch.log_softmax(torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]]), -1)
    ref = torch.log_softmax(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]), -1)
    c, r = torch.tensor([0, 3]), torch.tensor([1, 0])
    losses, margin = dpo_losses(lp, ref, c, r, beta=0.5, loss_type=["sigmoid", "hinge", "ipo", "sft"])
    logits = (lp[[0, 1], c] - ref[[0, 1], c]) - (lp[[0, 1], r] - ref[[0, 1], r])
    torch.testing.assert_close(margin, 0.5 * logits)
    torch.testing.assert_close(losses[:, 0], -torch.nn.functional.logsigmoid(0.5 * logits))
    torch.testing.assert_close(losses[:, 1], torch.relu(1 - 0.5 * logits))
    torch.testing.assert_close(losses[:, 2], (logits - 1.0) ** 2)  # 1 / (2 beta) = 1
    torch.testing.assert_close(losses[:, 3], -lp[[0, 1], c])  # the chosen label's NLL


@pytest.mark.parametrize("stage", ["dpo", "grpo"])
def test_row_weights_reach_the_label_rl_losses(tiny_model, stage):
    """Zero weight on every row leaves the model as it was; the class weights the stages pass
    go through this argument."""
    import torch

    from taosr1.training.common import load_for_training
    from taosr1.training.label_rl import reference_logprobs, train_label_dpo, train_label_grpo

    model, tok, _ = load_for_training(tiny_model)
    ids = [tok(t)["input_ids"] for t in ("red shoes for men", "blue lamp", "usb cable 2m", "oak desk")]
    label_ids = SCHEME.token_ids(tok)
    before = reference_logprobs(model, ids, label_ids, tok.pad_token_id)
    common = {"pad_id": tok.pad_token_id, "log": lambda m: None}
    for weights, moved in (([0.0] * 4, False), ([0.0, 0.0, 0.0, 4.0], True)):
        if stage == "dpo":
            train_label_dpo(model, ids, [0, 3, 1, 2], [3, 0, 2, 1], label_ids, beta=0.5,
                            loop=LoopConfig(epochs=3, batch_size=4, learning_rate=1e-2),
                            loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5], row_weights=weights, **common)
        else:
            train_label_grpo(model, ids, [0, 3, 1, 2], label_ids, num_generations=8,
                             loop=LoopConfig(batch_size=4, max_steps=3, learning_rate=1e-2), row_weights=weights, **common)
        after = reference_logprobs(model, ids, label_ids, tok.pad_token_id)
        assert (not torch.allclose(after, before, atol=1e-6)) == moved


def test_label_dpo_refuses_a_loss_it_does_not_compute(tiny_model):
    from taosr1.training.common import load_for_training
    from taosr1.training.label_rl import train_label_dpo

    model, tok, _ = load_for_training(tiny_model)
    ids = [tok("red shoes")["input_ids"]]
    with pytest.raises(ValueError, match="label DPO takes loss_type from"):
        train_label_dpo(model, ids, [0], [1], SCHEME.token_ids(tok), pad_id=tok.pad_token_id, beta=0.1,
                        loop=LoopConfig(learning_rate=1e-3), loss_type=["robust"])
    with pytest.raises(ValueError, match="one weight per loss_type"):
        train_label_dpo(model, ids, [0], [1], SCHEME.token_ids(tok), pad_id=tok.pad_token_id, beta=0.1,
                        loop=LoopConfig(learning_rate=1e-3), loss_type=["sigmoid", "sft"], loss_weights=[1.0])
