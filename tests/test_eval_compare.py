"""`taosr1 compare` on planted differences: McNemar counts, paired intervals, disagreement rows."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from taosr1.cli.main import main
from taosr1.core.labels import load_scheme
from taosr1.evaluation.compare import compare, mcnemar

S = load_scheme("esci")


def planted(seed=0):
    """200 pairs: both right 100, only A right 15, only B right 35, both wrong 50 (20 of them with
    different wrong labels). Rows shuffled."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 4, 200)
    wrong = (gold + 1) % 4
    other_wrong = (gold + 2) % 4
    kind = np.array(["both"] * 100 + ["a"] * 15 + ["b"] * 35 + ["none_same"] * 30 + ["none_diff"] * 20)
    rng.shuffle(kind)
    a = np.where(np.isin(kind, ["both", "a"]), gold, wrong)
    b = np.where(np.isin(kind, ["both", "b"]), gold, np.where(kind == "none_diff", other_wrong, wrong))
    return gold, a, b, kind


def frames(gold, a, b):
    names = np.array(S.names)
    keys = {"query_id": [f"q{i // 4}" for i in range(len(gold))], "product_id": [f"p{i}" for i in range(len(gold))]}
    base = pd.DataFrame({**keys, "query": "q", "product_title": "t", "gold": names[gold], "label_scheme": "esci"})
    return base.assign(label=names[a]), base.assign(label=names[b])


def test_mcnemar_counts_and_exact_p_on_planted_differences():
    gold, a, b, _ = planted()
    mc = mcnemar(a == gold, b == gold)
    assert (mc["both_correct"], mc["only_a_correct"], mc["only_b_correct"], mc["both_wrong"]) == (100, 15, 35, 50)
    assert mc["p_value"] == pytest.approx(binomtest(35, 50, 0.5).pvalue)
    assert mc["p_value"] < 0.01
    assert mc["chi2_corrected"] == pytest.approx((35 - 15 - 1) ** 2 / 50)
    same = mcnemar(a == gold, a == gold)
    assert same["discordant"] == 0 and same["p_value"] == 1.0


def test_paired_intervals_see_a_real_difference_and_not_a_null_one():
    gold, a, b, _ = planted()
    r = compare(gold, a, b, S, n_boot=1000, seed=0)
    acc = r["differences"]["accuracy"]
    assert acc["difference"] == pytest.approx((135 - 115) / 200)
    assert 0 < acc["low"] < acc["difference"] < acc["high"]
    assert acc["interval_excludes_zero"] is True
    again = compare(gold, a, b, S, n_boot=1000, seed=0)["differences"]
    assert again == r["differences"]
    null = compare(gold, a, a, S, n_boot=200, seed=0)["differences"]
    assert all(v["difference"] == 0 and v["low"] == 0 == v["high"] for v in null.values())
    # Paired intervals are narrower than what two independent intervals would suggest
    from taosr1.evaluation.metrics import bootstrap_intervals

    ia, ib = bootstrap_intervals(gold, a, S, n_boot=1000), bootstrap_intervals(gold, b, S, n_boot=1000)
    unpaired = np.hypot(ia["accuracy"]["high"] - ia["accuracy"]["low"], ib["accuracy"]["high"] - ib["accuracy"]["low"])
    assert acc["high"] - acc["low"] < unpaired


def test_query_intervals_do_not_call_two_queries_a_real_difference():
    # 20 queries of 10 pairs; B beats A on every pair of two queries and nowhere else. Pairs resampled one by
    # one call the 0.1 accuracy gain certain; resampling whole queries (the default) does not.
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 200)
    queries = np.repeat(np.arange(20), 10)
    a = np.where(queries < 2, (gold + 1) % 4, gold)
    b = gold.copy()
    by_pair = compare(gold, a, b, S, n_boot=1000, seed=0)["differences"]["accuracy"]
    by_query = compare(gold, a, b, S, n_boot=1000, seed=0, clusters=queries)["differences"]["accuracy"]
    assert by_pair["difference"] == by_query["difference"] == pytest.approx(0.1)
    assert by_pair["interval_excludes_zero"] is True and by_query["interval_excludes_zero"] is False


def test_compare_cli_writes_the_disagreements_and_the_report(tmp_path):
    gold, a, b, kind = planted()
    fa, fb = frames(gold, a, b)
    fa.to_parquet(tmp_path / "a.parquet", index=False)
    fb.sample(frac=1, random_state=1).to_csv(tmp_path / "b.csv", index=False)  # other order, other format
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.csv"), "--gold-col", "gold",
                                  "--out", str(tmp_path / "cmp"), "--name-a", "base", "--name-b", "dpo"])
    assert r.exit_code == 0, r.output
    line = json.loads(r.output.strip().splitlines()[-1])
    assert line["mcnemar"]["only_a_correct"] == 15 and line["mcnemar"]["only_b_correct"] == 35
    dis = pd.read_csv(tmp_path / "cmp" / "tables" / "disagreements.csv")
    assert len(dis) == 70 == line["disagreements"]
    assert dis["correct"].value_counts().to_dict() == {"only B": 35, "neither": 20, "only A": 15}
    assert list(dis["correct"][:15]) == ["only A"] * 15  # the ones to read first
    expected = set(fa["product_id"][kind != "both"][kind[kind != "both"] != "none_same"])
    assert set(dis["product_id"]) == expected
    m = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert m["differences"]["accuracy"]["difference"] == pytest.approx(0.1)
    assert m["a"] == "base" and m["metrics_b"]["n"] == 200
    assert m["bootstrap"]["unit"] == "whole query_id clusters (50 of them)"  # four pairs a query in `frames`
    assert "resamples of whole query_id clusters (50 of them)" in (tmp_path / "cmp" / "report.md").read_text()
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.csv"), "--gold-col", "gold",
                                  "--out", str(tmp_path / "cmp_pairs"), "--set", "bootstrap_unit=pair"])
    assert r.exit_code == 0, r.output
    pairs = json.loads((tmp_path / "cmp_pairs" / "metrics.json").read_text())
    assert pairs["bootstrap"]["unit"] == "pairs"
    assert pairs["differences"]["accuracy"]["low"] != m["differences"]["accuracy"]["low"]
    assert (tmp_path / "cmp" / "figures" / "differences.png").stat().st_size > 10_000


def test_compare_refuses_different_pairs(tmp_path):
    gold, a, b, _ = planted()
    fa, fb = frames(gold, a, b)
    fa.to_parquet(tmp_path / "a.parquet", index=False)
    fb.iloc[3:].to_parquet(tmp_path / "b.parquet", index=False)
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--gold-col",
                                  "gold", "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 2
    assert "3 only in A, 0 only in B, 197 in both" in r.output


def test_compare_refuses_two_label_schemes(tmp_path):
    gold, a, b, _ = planted()
    fa, fb = frames(gold, a, b)
    fa.to_parquet(tmp_path / "a.parquet", index=False)
    fb.assign(label_scheme="taosr1").to_parquet(tmp_path / "b.parquet", index=False)
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--gold-col",
                                  "gold", "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 2 and "uses label scheme esci" in r.output and "uses taosr1" in r.output


def test_macro_over_compares_the_mean_f1_of_the_named_grades_only(tmp_path):
    """--macro-over: the mean F1 over the named grades, each side from its own confusion matrix, its
    difference with a paired interval of its own; a rare grade B alone gets right moves macro-F1 only."""
    from sklearn.metrics import f1_score

    gold, a, b, _ = planted()
    b = np.where(gold == 2, 2, a)  # B = A, except that B gets every C (the rare grade here) right
    over = [0, 1, 3]
    r = compare(gold, a, b, S, n_boot=500, seed=0, macro_over=over)["differences"]
    assert r["macro_f1_over"]["a"] == pytest.approx(f1_score(gold, a, labels=over, average="macro"))
    assert r["macro_f1_over"]["b"] == pytest.approx(f1_score(gold, b, labels=over, average="macro"))
    assert r["macro_f1"]["difference"] > 0.05 > abs(r["macro_f1_over"]["difference"])
    assert r["macro_f1_over"]["low"] <= r["macro_f1_over"]["difference"] <= r["macro_f1_over"]["high"]
    assert r["macro_f1_over"]["high"] - r["macro_f1_over"]["low"] < r["macro_f1"]["high"] - r["macro_f1"]["low"]
    assert "macro_f1_over" not in compare(gold, a, b, S, n_boot=0)["differences"]
    fa, fb = frames(gold, a, b)
    fa.to_parquet(tmp_path / "a.parquet", index=False)
    fb.to_parquet(tmp_path / "b.parquet", index=False)
    args = ["compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--gold-col", "gold"]
    out = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "cmp"), "--macro-over", "E, S,I"])
    assert out.exit_code == 0, out.output
    line = json.loads(out.output.strip().splitlines()[-1])
    assert line["macro_over"] == ["E", "S", "I"]
    assert line["macro_f1_over_difference"]["difference"] == pytest.approx(r["macro_f1_over"]["difference"])
    assert "macro-F1 over E, S, I" in (tmp_path / "cmp" / "report.md").read_text()
    bad = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "bad"), "--macro-over", "E,Excellent"])
    assert bad.exit_code == 2 and "['Excellent'] are not labels of scheme esci" in bad.output


def test_eval_macro_over_reports_the_mean_f1_of_the_named_grades_with_a_query_interval(tmp_path):
    """`taosr1 eval --macro-over`: one model's mean F1 over the named grades (sklearn's), its interval
    from the same query resamples, in the printed line, metrics.json and the report; a typo stops it."""
    from sklearn.metrics import f1_score

    gold, a, _, _ = planted()
    fa, _ = frames(gold, a, a)
    fa.to_parquet(tmp_path / "a.parquet", index=False)
    args = ["eval", str(tmp_path / "a.parquet"), "--gold-col", "gold", "--bootstrap", "300"]
    out = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "ev"), "--macro-over", "E, S,I"])
    assert out.exit_code == 0, out.output
    line = json.loads(out.output.strip().splitlines()[-1])
    expected = f1_score(gold, a, labels=[0, 1, 3], average="macro")
    assert line["macro_over"] == ["E", "S", "I"] and line["macro_f1_over"] == pytest.approx(expected)
    assert line["macro_f1_over"] != pytest.approx(line["macro_f1"])
    ci = line["macro_f1_over_ci"]
    assert ci["low"] < line["macro_f1_over"] < ci["high"]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["macro_f1_over"] == line["macro_f1_over"] and metrics["ci"]["macro_f1_over"] == ci
    assert metrics["bootstrap"]["unit"].startswith("whole query_id clusters")
    assert "macro-F1 over E, S, I" in (tmp_path / "ev" / "report.md").read_text()
    plain = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "plain")])
    assert "macro_f1_over" not in json.loads(plain.output.strip().splitlines()[-1])
    bad = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "bad"), "--macro-over", "Excellent"])
    assert bad.exit_code == 2 and "['Excellent'] are not labels of scheme esci" in bad.output
