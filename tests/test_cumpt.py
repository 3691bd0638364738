import numpy as np
import pytest

from taosr1.core.config import ConfigError
from taosr1.core.cumpt import best_beta, beta_curve, cumpt_index, expected_grade, grade_rows
from taosr1.core.labels import load_scheme

S = load_scheme("taosr1")  # grades 4, 3, 2, 1; tiers Good, Good, Mid, Bad


def test_cumpt_walks_best_to_worst_until_beta():
    p = np.array([[0.30, 0.25, 0.25, 0.20]])  # running sums 0.30, 0.55, 0.80, 1.00
    assert cumpt_index(p, 0.30)[0] == 0
    assert cumpt_index(p, 0.31)[0] == 1
    assert cumpt_index(p, 0.5)[0] == 1
    assert cumpt_index(p, 0.56)[0] == 2
    assert cumpt_index(p, 0.81)[0] == 3
    assert cumpt_index(p, 1.0)[0] == 3


def test_beta_half_is_the_median_grade_not_the_argmax():
    p = np.array([[0.40, 0.0, 0.0, 0.60], [0.10, 0.45, 0.05, 0.40]])
    g = grade_rows(p, S, 0.5)
    assert g["grade"].tolist() == [1, 3]  # row 0: argmax is 1 too; row 1: sums 0.10, 0.55
    assert g["label"].tolist() == ["Irrelevant", "Related"]
    assert g["tier"].tolist() == ["Bad", "Good"]


def test_float_rounding_short_of_one_still_reaches_last_grade():
    p = np.array([[0.25, 0.25, 0.25, 0.2499999999]], dtype=np.float32)
    assert cumpt_index(p, 1.0)[0] == 3


def test_expected_grade_is_probability_weighted():
    p = np.array([[0.5, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0]])
    assert expected_grade(p, S).tolist() == pytest.approx([2.5, 3.0])


@pytest.mark.parametrize("beta", [0.0, -0.1, 1.01])
def test_beta_outside_unit_interval_is_refused(beta):
    with pytest.raises(ConfigError, match=r"beta must be in \(0, 1\]"):
        cumpt_index(np.array([[1.0, 0, 0, 0]]), beta)


def test_calibration_curve_finds_the_separating_beta():
    # The model leans optimistic: gold grade is reached only when beta is high.
    probs = np.array([[0.6, 0.3, 0.05, 0.05]] * 10 + [[0.05, 0.05, 0.3, 0.6]] * 10)
    gold = np.array([1] * 10 + [3] * 10)  # Related, Irrelevant
    curve = beta_curve(probs, gold, S, betas=np.array([0.5, 0.7, 0.9]))
    by_beta = {b: f1 for b, f1, _ in curve}
    assert by_beta[0.7] > by_beta[0.5]
    assert best_beta(curve) == 0.7


def test_a_grade_seen_twice_does_not_pick_beta():
    """Calibration's macro-F1 leaves out grades with fewer than min_support gold pairs: two
    Mismatch pairs, one of them hit at a high beta, would otherwise pull beta up by themselves."""
    from taosr1.core.cumpt import supported_classes

    related = [[0.1, 0.8, 0.05, 0.05]] * 10 + [[0.1, 0.5, 0.1, 0.3]] * 2  # 2 of 12 slip to Irrelevant at 0.85
    irrelevant = [[0.05, 0.05, 0.05, 0.85]] * 12
    mismatch = [[0.1, 0.6, 0.25, 0.05], [0.1, 0.1, 0.1, 0.7]]  # the first is a Mismatch hit at 0.85 only
    probs = np.array(related + irrelevant + mismatch)
    gold = np.array([1] * 12 + [3] * 12 + [2, 2])
    betas = np.array([0.5, 0.85])
    assert supported_classes(gold, 4, 10) == [1, 3] and supported_classes(gold, 4, 100) == [0, 1, 2, 3]
    assert best_beta(beta_curve(probs, gold, S, betas)) == 0.85  # the lone Mismatch hit wins
    assert best_beta(beta_curve(probs, gold, S, betas, min_support=10)) == 0.5
