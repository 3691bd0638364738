"""Metrics against scikit-learn on hand-made cases; bootstrap intervals; segments."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_recall_fscore_support,
)

from taosr1.core.labels import load_scheme
from taosr1.evaluation.metrics import (
    SCALARS,
    bootstrap_intervals,
    by_segment,
    clusters_of,
    confusion_scalars,
    evaluate,
    present,
    resample_confusions,
    tier_index,
)

S = load_scheme("esci")  # E 4 Good, S 3 Good, C 2 Mid, I 1 Bad; indices 0..3


def idx(names):
    return np.array([S.names.index(n) for n in names])


# C is never predicted; I is predicted but never in the gold labels.
GOLD = idx("E E E S S C C E S S".split())
PRED = idx("E S I S E E S E S I".split())


def test_metrics_match_sklearn_with_a_class_absent_from_predictions_and_one_from_gold():
    m = evaluate(GOLD, PRED, S)
    g, p = np.array(S.names)[GOLD], np.array(S.names)[PRED]
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(accuracy_score(g, p)) == pytest.approx(0.4)
    # scikit-learn's default macro average runs over the labels in gold or predictions (here all four).
    assert m["macro_f1"] == pytest.approx(f1_score(g, p, average="macro"))
    assert m["macro_over"] == ["E", "S", "C", "I"]
    pr, rc, f1, sup = precision_recall_fscore_support(g, p, labels=S.names, zero_division=0)
    for i, name in enumerate(S.names):
        pc = m["per_class"][name]
        assert pc["support"] == sup[i]
        assert (pc["f1"] or 0.0) == pytest.approx(f1[i])
    assert m["per_class"]["C"]["precision"] is None  # never predicted: undefined, not 0
    assert m["per_class"]["C"]["recall"] == 0.0 and m["per_class"]["C"]["predicted"] == 0
    assert m["per_class"]["I"]["recall"] is None and m["per_class"]["I"]["precision"] == 0.0
    assert m["confusion"]["matrix"] == confusion_matrix(g, p, labels=S.names).tolist()
    grades = np.array(S.grades)
    assert m["ordinal_mae"] == pytest.approx(mean_absolute_error(grades[GOLD], grades[PRED]))


def test_macro_f1_skips_a_label_nobody_used():
    gold, pred = idx("E E S S".split()), idx("E S S S".split())
    m = evaluate(gold, pred, S)
    g, p = np.array(S.names)[gold], np.array(S.names)[pred]
    assert m["macro_over"] == ["E", "S"]
    assert m["macro_f1"] == pytest.approx(f1_score(g, p, average="macro"))
    assert m["per_class"]["C"]["f1"] is None and m["per_class"]["C"]["support"] == 0


def test_tier_metrics_fold_labels_into_tiers():
    m = evaluate(GOLD, PRED, S)
    tier = np.array([lab.tier for lab in S.labels])
    tg, tp = tier[GOLD], tier[PRED]
    assert m["tiers"]["accuracy"] == pytest.approx(accuracy_score(tg, tp))
    assert m["tiers"]["macro_f1"] == pytest.approx(f1_score(tg, tp, average="macro"))
    assert m["tiers"]["confusion"]["matrix"] == confusion_matrix(tg, tp, labels=S.tiers).tolist()
    # E and S are both Good: confusing them costs nothing at tier level
    assert m["tiers"]["accuracy"] > m["accuracy"]


def test_confusion_scalars_equal_sklearn_on_weighted_rows():
    """The bootstrap's fast path: metrics from confusion counts equal scikit-learn with weights."""
    rng = np.random.default_rng(1)
    k = len(S.labels)
    gold, pred = np.repeat(np.arange(k), k), np.tile(np.arange(k), k)
    t = tier_index(S)
    for _ in range(20):
        w = rng.integers(0, 30, size=k * k).astype(float)
        w[rng.integers(0, k * k, 3)] = 0
        conf = np.bincount(gold * k + pred, weights=w, minlength=k * k).reshape(k, k)
        used = w > 0
        classes, tclasses = present(gold[used], pred[used]), present(t[gold][used], t[pred][used])
        got = confusion_scalars(conf, S, classes, tclasses)
        assert got["accuracy"] == pytest.approx(accuracy_score(gold, pred, sample_weight=w))
        assert got["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=classes, average="macro", sample_weight=w,
                                                         zero_division=0))
        assert got["ordinal_mae"] == pytest.approx(mean_absolute_error(np.array(S.grades)[gold], np.array(S.grades)[pred],
                                                                       sample_weight=w))
        assert got["tier_macro_f1"] == pytest.approx(f1_score(t[gold], t[pred], labels=tclasses, average="macro",
                                                              sample_weight=w, zero_division=0))


def _noisy(n, seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 4, n)
    pred = np.where(rng.random(n) < 0.6, gold, rng.integers(0, 4, n))
    return gold, pred


def test_bootstrap_intervals_contain_the_estimate_and_repeat_with_a_seed():
    gold, pred = _noisy(400, 0)
    m = evaluate(gold, pred, S)
    a = bootstrap_intervals(gold, pred, S, n_boot=500, seed=7)
    assert a == bootstrap_intervals(gold, pred, S, n_boot=500, seed=7)
    assert a != bootstrap_intervals(gold, pred, S, n_boot=500, seed=8)
    assert set(a) == set(SCALARS)
    for name, value in (("accuracy", m["accuracy"]), ("macro_f1", m["macro_f1"]), ("ordinal_mae", m["ordinal_mae"])):
        assert a[name]["low"] < value < a[name]["high"]
    # accuracy is a proportion: the interval is about +-1.96 standard errors
    se = np.sqrt(m["accuracy"] * (1 - m["accuracy"]) / 400)
    assert a["accuracy"]["high"] - a["accuracy"]["low"] == pytest.approx(2 * 1.96 * se, rel=0.2)
    narrower = bootstrap_intervals(gold, pred, S, n_boot=500, seed=7, level=0.5)
    assert narrower["macro_f1"]["high"] - narrower["macro_f1"]["low"] < a["macro_f1"]["high"] - a["macro_f1"]["low"]


def test_query_bootstrap_draws_whole_queries():
    # query a: two rows in cell 0; query b: three rows in cell 1. A draw of two queries is a+a, a+b or b+b.
    codes, queries = np.array([0, 1, 0, 1, 1]), np.array(["a", "b", "a", "b", "b"])
    draws = resample_confusions(codes, 2, 200, 0, queries)
    assert {tuple(d) for d in draws} == {(4, 0), (2, 3), (0, 6)}
    np.testing.assert_array_equal(draws, resample_confusions(codes, 2, 200, 0, queries))
    pairs = resample_confusions(codes, 2, 200, 0)
    assert (pairs.sum(1) == 5).all() and len({tuple(d) for d in pairs}) > 3


def test_query_bootstrap_is_wider_when_a_query_s_pairs_share_one_fate():
    # 40 queries of 10 pairs, each query graded all right or all wrong: 40 independent outcomes, not 400
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 4, 400)
    right = np.repeat(rng.random(40) < 0.6, 10)
    pred = np.where(right, gold, (gold + 1) % 4)
    queries = np.repeat(np.arange(40), 10)
    by_pair = bootstrap_intervals(gold, pred, S, n_boot=1000, seed=0)["accuracy"]
    by_query = bootstrap_intervals(gold, pred, S, n_boot=1000, seed=0, clusters=queries)["accuracy"]
    acc = right.mean()
    assert by_query["low"] <= acc <= by_query["high"]
    # sqrt(10) wider in theory; at least twice here
    assert by_query["high"] - by_query["low"] > 2 * (by_pair["high"] - by_pair["low"])
    seg = by_segment(gold, pred, np.where(queries < 20, "a", "b"), S, n_boot=500, seed=0, clusters=queries)
    seg_pairs = by_segment(gold, pred, np.where(queries < 20, "a", "b"), S, n_boot=500, seed=0)
    assert ((seg["accuracy_high"] - seg["accuracy_low"]) > (seg_pairs["accuracy_high"] - seg_pairs["accuracy_low"])).all()


def test_clusters_of_names_the_unit_and_falls_back_to_pairs():
    import pandas as pd

    frame = pd.DataFrame({"query_id": [7, 7, None, 8], "product_id": list("abcd")})
    ids, unit = clusters_of(frame, "query_id")
    assert ids[0] == ids[1] != ids[3] and ids[2] not in (ids[0], ids[3])  # a missing query is its own cluster
    assert unit == "whole query_id clusters (3 of them)"
    assert clusters_of(frame, "pair") == (None, "pairs")
    assert clusters_of(frame, "session") == (None, "pairs (no column session to resample whole clusters by)")


def test_segments_each_get_their_own_metrics():
    gold, pred = _noisy(300, 2)
    seg = np.where(np.arange(300) < 100, "a", "b").astype(object)
    seg[5] = None
    table = by_segment(gold, pred, seg, S, n_boot=200, seed=0)
    assert list(table["segment"]) == ["(missing)", "a", "b"]
    assert table["n"].tolist() == [1, 99, 200]
    b = table.set_index("segment").loc["b"]
    g, p = gold[100:], pred[100:]
    assert b["accuracy"] == pytest.approx(accuracy_score(g, p))
    assert b["macro_f1"] == pytest.approx(f1_score(g, p, average="macro"))
    assert b["macro_f1_low"] <= b["macro_f1"] <= b["macro_f1_high"]
