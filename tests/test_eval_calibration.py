"""Reliability bins and ECE against scikit-learn and by hand; the CumPT curve; the report writer."""

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.calibration import calibration_curve

from taosr1.core.cumpt import best_beta, beta_curve
from taosr1.core.labels import load_scheme
from taosr1.evaluation import plots
from taosr1.evaluation.calibration import calibration_report, cumpt_curve, ece, reliability_bins
from taosr1.evaluation.report import write_report

S = load_scheme("esci")


def test_reliability_bins_match_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    conf = rng.random(2000)
    hit = rng.random(2000) < conf**1.5
    bins = reliability_bins(conf, hit, 10)
    true, predicted = calibration_curve(hit, conf, n_bins=10, strategy="uniform")
    used = bins[bins["n"] > 0]
    np.testing.assert_allclose(used["accuracy"], true)
    np.testing.assert_allclose(used["confidence"], predicted)
    assert bins["n"].sum() == 2000


def test_ece_by_hand():
    # bin [0.2, 0.3): 2 rows at 0.25, one right -> gap 0.25; bin [0.9, 1]: 2 rows at 1.0, both right -> gap 0
    bins = reliability_bins(np.array([0.25, 0.25, 1.0, 1.0]), np.array([1, 0, 1, 1]), 10)
    assert ece(bins) == pytest.approx(0.5 * 0.25)
    assert bins.loc[9, "n"] == 2  # 1.0 falls in the last (closed) bin


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_large():
    rng = np.random.default_rng(1)
    n, k = 20000, 4
    p = rng.dirichlet(np.ones(k) * 0.7, size=n)
    gold = np.array([rng.choice(k, p=row) for row in p])  # gold drawn from P: calibrated by construction
    good, _, _ = calibration_report(p, gold, S)
    sharp = p**4 / (p**4).sum(axis=1, keepdims=True)  # same argmax, overconfident
    bad, _, _ = calibration_report(sharp, gold, S)
    assert good["ece"] < 0.02 < 0.1 < bad["ece"]
    assert good["argmax_accuracy"] == bad["argmax_accuracy"]
    assert good["brier"] < bad["brier"] and good["log_loss"] < bad["log_loss"]
    assert set(good["classwise_ece"]) == set(S.names)


def test_cumpt_curve_agrees_with_calibrate_and_adds_tier_precision():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 4, 500)
    logits = rng.normal(size=(500, 4))
    logits[np.arange(500), gold] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    curve = cumpt_curve(p, gold, S)
    ref = beta_curve(p, gold, S)
    np.testing.assert_allclose(curve[["beta", "macro_f1", "accuracy"]].to_numpy(), np.array(ref))
    assert {"precision_Good", "precision_Mid", "precision_Bad", "tier_macro_f1"} <= set(curve.columns)
    # a higher beta walks further down the grades: fewer rows called Good, so Good gets more precise
    good = curve["precision_Good"].dropna().to_numpy()
    assert good[-1] > good[0]
    assert best_beta(ref) in curve["beta"].tolist()


def test_write_report_writes_every_format_and_valid_pngs(tmp_path):
    """The writer other reports reuse: any metrics, figures and tables."""
    fig = plots.confusion_figure([[5, 1], [2, 7]], ["good", "bad"], "A vs B")
    table = pd.DataFrame({"name": [f"r{i}" for i in range(80)], "value": np.arange(80) / 7, "note": ["a|b"] * 80})
    metrics = {"n": 14, "win_rate": 0.5, "nan": float("nan"), "nested": {"x": np.int64(3), "arr": np.arange(3)}}
    paths = write_report(tmp_path / "r", "GSB: side by side", metrics, {"heat": fig}, {"rows": table},
                         notes=["a note"], captions={"heat": "how to read the heat map"}, max_rows=20)
    data = json.loads(paths["metrics"].read_text())
    assert data == {"n": 14, "win_rate": 0.5, "nan": None, "nested": {"x": 3, "arr": [0, 1, 2]}}
    with Image.open(paths["figures"]["heat"]) as im:
        im.verify()
    with Image.open(paths["figures"]["heat"]) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert pd.read_csv(paths["tables"]["rows"]).shape == (80, 3)
    md = paths["markdown"].read_text()
    assert "# GSB: side by side" in md and "![heat](figures/heat.png)" in md
    assert "first 20 of 80 rows" in md and "a\\|b" in md and "how to read the heat map" in md
    html = paths["html"].read_text()
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(imgs) == 1 and base64.b64decode(imgs[0]) == paths["figures"]["heat"].read_bytes()
    assert "<figcaption>how to read the heat map</figcaption>" in html
    assert "<td>r19</td>" in html and "<td>r20</td>" not in html and "GSB: side by side" in html
    assert re.findall(r"src='([a-z]+):", html) == ["data"] and "<link" not in html  # self-contained
