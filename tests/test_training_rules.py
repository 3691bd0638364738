"""The training stages' data rules, tested exactly on hand-made data (no model)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from taosr1.core.config import ConfigError
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import format_response
from taosr1.core.split import fold_by_query, query_fold_ids, split_by_query
from taosr1.training.dpo import build_pairs
from taosr1.training.grpo import class_balance, coefficient_of_variation, difficulty_filter
from taosr1.training.rewards import make_rewards
from taosr1.training.rules import RuleIndex, load_rules
from taosr1.training.sampling import pass_at_k, pass_rates

SCHEME = load_scheme("taosr1")
STEPS5 = ["q", "i", "c", "a", "j"]


def samples_frame(rows):
    return pd.DataFrame(rows, columns=["pair_id", "sample", "response", "correct"])


# --- DPO pairs ---------------------------------------------------------------------------


def test_pairs_each_case_exactly():
    s = samples_frame([
        (0, 0, "right-a", True), (0, 1, "wrong-a", False), (0, 2, "right-b", True),  # mixed
        (1, 0, "wrong-x", False), (1, 1, "garbage", False),                            # none right
        (2, 0, "ok-1", True), (2, 1, "ok-2", True),                                    # all right
        (3, 0, "wrong-y", False),                                                      # none right, no reference
    ])
    ref = pd.DataFrame({"pair_id": [0, 1, 2], "response": ["REF0", "REF1", "REF2"]})
    pairs, counts = build_pairs(s, ref, seed=0)
    assert counts == {"right_vs_wrong": 1, "reference_vs_sample": 1, "all_right": 1, "no_reference": 1,
                      "pairs": 2, "prompts": 4}
    p0 = pairs[pairs.pair_id == 0].iloc[0]
    assert p0.kind == "right_vs_wrong" and p0.chosen in {"right-a", "right-b"} and p0.rejected == "wrong-a"
    p1 = pairs[pairs.pair_id == 1].iloc[0]
    assert p1.kind == "reference_vs_sample" and p1.chosen == "REF1" and p1.rejected in {"wrong-x", "garbage"}
    assert 2 not in set(pairs.pair_id) and 3 not in set(pairs.pair_id)


def test_pairs_per_prompt_and_determinism():
    s = samples_frame([(0, k, f"r{k}", k < 2) for k in range(5)])  # 2 right, 3 wrong
    ref = pd.DataFrame({"pair_id": [0], "response": ["REF"]})
    pairs, counts = build_pairs(s, ref, pairs_per_prompt=3, seed=7)
    assert len(pairs) == 3 and counts["right_vs_wrong"] == 1
    assert set(pairs.rejected) == {"r2", "r3", "r4"} and set(pairs.chosen) <= {"r0", "r1"}
    again, _ = build_pairs(s, ref, pairs_per_prompt=3, seed=7)
    pd.testing.assert_frame_equal(pairs, again)
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        build_pairs(s, ref, pairs_per_prompt=0)


# --- difficulty, class balance, CV ---------------------------------------------------------


def difficulty(rates, golds=None):
    golds = golds or ["Excellent"] * len(rates)
    return pd.DataFrame({"pair_id": range(len(rates)), "gold": golds, "n": 4,
                         "correct": [int(r * 4) for r in rates], "pass_rate": rates})


def test_difficulty_filter_keeps_open_interval():
    d = difficulty([0.0, 0.25, 0.5, 0.75, 1.0, 0.0])
    kept, counts = difficulty_filter(d, gamma=1.0)
    assert kept["pair_id"].tolist() == [1, 2, 3]
    assert counts == {"prompts": 6, "kept": 3, "never_solved": 2, "always_solved": 1, "above_gamma": 0}
    kept, counts = difficulty_filter(d, gamma=0.6)
    assert kept["pair_id"].tolist() == [1, 2] and counts["above_gamma"] == 1
    with pytest.raises(ValueError, match="gamma"):
        difficulty_filter(d, gamma=0)


def test_coefficient_of_variation_exact():
    assert coefficient_of_variation([6, 3, 1]) == pytest.approx(np.std([6, 3, 1]) / np.mean([6, 3, 1]))
    assert coefficient_of_variation({"a": 5, "b": 5}) == 0.0
    assert coefficient_of_variation([4]) == 0.0


def test_class_balance_downsamples_to_ratio_of_smallest_class():
    df = pd.DataFrame({"pair_id": range(10), "gold": ["A"] * 6 + ["B"] * 3 + ["C"]})
    out, info = class_balance(df, "gold", ratio=1.0, seed=0)
    assert info["counts_before"] == {"A": 6, "B": 3, "C": 1}
    assert info["counts_after"] == {"A": 1, "B": 1, "C": 1}
    assert info["cv_before"] == pytest.approx(round(float(np.std([6, 3, 1]) / np.mean([6, 3, 1])), 4))
    assert info["cv_after"] == 0.0
    assert out["pair_id"].tolist() == sorted(out["pair_id"].tolist()) and 9 in set(out["pair_id"])
    out2, info2 = class_balance(df, "gold", ratio=2.0, seed=0)
    assert info2["counts_after"] == {"A": 2, "B": 2, "C": 1}
    assert info2["cv_after"] == pytest.approx(round(float(np.std([2, 2, 1]) / np.mean([2, 2, 1])), 4))
    same, info3 = class_balance(df, "gold", ratio=0)
    assert len(same) == 10 and info3["cv_after"] == info3["cv_before"]
    with pytest.raises(ValueError):
        class_balance(df, "gold", ratio=0.5)


def test_pass_rates_and_pass_at_k():
    s = pd.DataFrame({"pair_id": [0, 0, 0, 1, 1, 1], "sample": [0, 1, 2, 0, 1, 2], "gold": ["Excellent"] * 3 + ["Related"] * 3,
                      "correct": [False, True, True, False, False, False]})
    d = pass_rates(s)
    assert d["correct"].tolist() == [2, 0] and d["pass_rate"].tolist() == pytest.approx([2 / 3, 0.0])
    assert pass_at_k(s) == {"pass@1": 0.0, "pass@2": 0.5, "pass@3": 0.5}


# --- rewards ------------------------------------------------------------------------------


def test_rewards_right_wrong_malformed_post_cot():
    label_reward, format_reward = make_rewards(SCHEME, "post_cot")
    right = format_response(SCHEME.by_grade(4), STEPS5, "post_cot")
    wrong = format_response(SCHEME.by_grade(1), STEPS5, "post_cot")
    completions = [right, wrong, "The item looks fine", ""]  # ("I ..." would parse: I is an ESCI alias)
    gold = ["Excellent", "Excellent", "Excellent", "E"]
    assert label_reward(completions, gold=gold) == [1.0, 0.0, 0.0, 0.0]
    assert format_reward(completions, gold=gold) == [0.0, 0.0, -1.0, -1.0]
    assert label_reward.__name__ == "label_reward" and format_reward.__name__ == "format_reward"
    assert label_reward([right], gold=["not-a-label"]) == [None]


def test_rewards_think_first_and_conversational():
    label_reward, format_reward = make_rewards(SCHEME, "think_first")
    right = format_response(SCHEME.by_grade(3), STEPS5, "think_first")
    assert label_reward([right, "3\nno answer line"], gold=["Related", "Related"]) == [1.0, 0.0]
    assert format_reward([[{"role": "assistant", "content": right}]]) == [0.0]


# --- rules, split -------------------------------------------------------------------------


def test_rules_retrieval_finds_the_rule_that_applies(tmp_path):
    index = RuleIndex(load_rules())
    ids = [r.id for r in index.search("iphone 13 case | Silicone case cover for iPhone 13, black", k=3)]
    assert "accessory" in ids
    ids = [r.id for r in index.search("womens running shoes size 8 | Nike Men's Air Zoom", k=3)]
    assert "gender-age" in ids
    filler = index.search("zzzz qqqq", k=2)  # nothing matches: default rules fill in
    assert len(filler) == 2 and all(r.is_default for r in filler)


def test_rules_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("rules:\n  - {id: a, text: x, colour: red}\n")
    with pytest.raises(ConfigError, match=r"rule #1 has unknown key\(s\) \['colour'\]"):
        load_rules(bad)
    bad.write_text("rules:\n  - {id: a, text: x}\n  - {id: a, text: y}\n")
    with pytest.raises(ConfigError, match="repeated"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_rules(tmp_path / "nope")


def test_split_by_query_never_shares_a_query(sample_df):
    train, test = split_by_query(sample_df, "query", test_size=0.3, seed=1)
    assert len(train) + len(test) == len(sample_df)
    assert not set(train["query"].str.lower().str.strip()) & set(test["query"].str.lower().str.strip())
    q = sample_df["query"].nunique()
    assert math.isclose(test["query"].nunique() / q, 0.3, abs_tol=0.02)
    with pytest.raises(ValueError, match="missing"):
        split_by_query(sample_df, "nope")


def test_fold_by_query_tests_every_pair_once(sample_df):
    norm = lambda s: set(s.str.strip().str.lower())  # noqa: E731
    tested = []
    for k in range(3):
        train, test = fold_by_query(sample_df, "query", 3, k, seed=1)
        assert len(train) + len(test) == len(sample_df)
        assert not norm(train["query"]) & norm(test["query"])
        tested += list(zip(test["query_id"].astype(str), test["product_id"]))
    assert sorted(tested) == sorted(zip(sample_df["query_id"].astype(str), sample_df["product_id"]))
    ids = query_fold_ids(sample_df, "query", 3, seed=1)  # the one fold assignment, cross-fitting's too
    assert fold_by_query(sample_df, "query", 3, 2, seed=1)[1]["product_id"].tolist() == \
        sample_df["product_id"][ids == 2].tolist()
    assert fold_by_query(sample_df, "query", 3, 0, seed=2)[1]["query"].tolist() != \
        fold_by_query(sample_df, "query", 3, 0, seed=1)[1]["query"].tolist()  # the seed shuffles the folds
    for folds, fold in ((1, 0), (3, 3), (3, -1)):
        with pytest.raises(ValueError, match="test_folds must be >= 2"):
            fold_by_query(sample_df, "query", folds, fold)
    with pytest.raises(ValueError, match="found 2"):
        fold_by_query(sample_df[sample_df["query"].isin(sample_df["query"].unique()[:2])], "query", 3, 0)


def test_training_metrics_count_a_missing_label_as_wrong_and_unparsed():
    """A response with no label is wrong and unparsed, whether it reaches the metrics as None
    (pandas 2 object column) or NaN (pandas 3 string column); it never drops out of the counts."""
    import numpy as np

    from taosr1.training.evaluate import classification_metrics

    scheme = load_scheme("taosr1")
    gold = ["Excellent", "Excellent", "Irrelevant", "Irrelevant"]
    for missing in (None, np.nan, pd.NA):
        m = classification_metrics(gold, ["Excellent", missing, "Irrelevant", missing], scheme)
        assert m["unparsed"] == 2 and m["accuracy"] == 0.5
        assert m["pred_counts"] == {"Excellent": 1, "Irrelevant": 1, "<none>": 2}
        assert m["per_class_f1"] == pytest.approx({"Excellent": 2 / 3, "Irrelevant": 2 / 3}, abs=1e-4)
