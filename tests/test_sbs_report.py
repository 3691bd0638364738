"""`taosr1 sbs report`: un-blinding, GSB and Goodrate, gold scoring, agreement, disputes."""

import json
from collections import Counter

import krippendorff
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from sbs_data import blinded, build, plant
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa

from taosr1.cli.main import main
from taosr1.sbs.config import SbsReportConfig
from taosr1.sbs.report import agreement, sbs_report
from taosr1.sbs.store import AnswerStore

CFG = SbsReportConfig(bootstrap=200)


def answer_all(tasks, key, store, verdicts, *, gold_wrong=None, flip=None, always=None):
    """Every rater answers their whole queue: regular items with the planted verdict (`flip`: raters who
    answer the opposite), gold items right except `gold_wrong[rater]` of them; `always`: rater -> one answer."""
    gold_wrong, flip, always = gold_wrong or {}, flip or set(), always or {}
    rows = []
    for name in tasks.raters:
        wrong_left = gold_wrong.get(name, 0)
        for item_id in tasks.queue(name):
            rec = key["items"][item_id]
            if name in always:
                rows.append((name, item_id, always[name], 4.0))
                continue
            if rec["kind"] == "gold":
                v = rec["expected"]
                if wrong_left:
                    v, wrong_left = {"A": "B", "B": "A", "same": "A"}[v], wrong_left - 1
            else:
                v = verdicts[item_id]
                if name in flip:
                    v = {"A": "B", "B": "A", "same": "A"}[v]
            rows.append((name, item_id, blinded(v, rec["left"]), 5.0))
    store.save_many(rows)


def weighted(key, verdicts, score):
    """Sum over strata of (pairs share) x (mean score of its items): the estimate the report must give."""
    pop = {(s["segment"], s["disagree"]): s["population"] for s in key["strata"] if s["sampled"]}
    total = sum(pop.values())
    out = 0.0
    for (seg, dis), n_pop in pop.items():
        items = [i for i, r in key["items"].items() if r["kind"] == "regular" and r["segment"] == seg
                 and r["disagree"] == dis]
        out += n_pop / total * np.mean([score(verdicts[i]) for i in items])
    return out


def test_planted_answers_unblind_to_the_known_gsb(tmp_path):
    tasks, key, _, _ = build(tmp_path, size=150, k=3, segment="source", gold_rate=0.1)
    verdicts = plant(key)
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    answer_all(tasks, key, store, verdicts)
    m, figures, tables, summary, notes = sbs_report(tasks, key, store.frame(), CFG)
    c = Counter(verdicts.values())
    assert (m["G"], m["S"], m["B"]) == (c["B"], c["same"], c["A"])
    gsb = weighted(key, verdicts, lambda v: (v == "B") - (v == "A"))
    assert m["gsb"] == pytest.approx(gsb, abs=1e-12)
    assert abs(m["gsb"] - (c["B"] - c["A"]) / 150) < 0.02  # proportional sample: close to the raw figure
    assert m["item_goodrate_a"] == pytest.approx(weighted(key, verdicts, lambda v: v != "B"), abs=1e-12)
    assert m["item_goodrate_b"] - m["item_goodrate_a"] == pytest.approx(m["gsb"], abs=1e-12)
    items = pd.DataFrame([{"q": key["items"][i]["query_key"], "v": v} for i, v in verdicts.items()])
    per_q = items.groupby("q")["v"].agg(lambda s: (s != "B").all())
    assert m["query_goodrate_a"] == pytest.approx(per_q.mean())
    assert m["queries"] == items["q"].nunique()
    assert m["ci"]["gsb"]["low"] < m["gsb"] < m["ci"]["gsb"]["high"]
    assert m["excluded_raters"] == [] and m["disputes"] == 0
    seg = m["segments"].set_index("segment")
    for s in seg.index:
        mine = [v for i, v in verdicts.items() if key["items"][i]["segment"] == s]
        assert seg.loc[s, "G"] == mine.count("B") and seg.loc[s, "B"] == mine.count("A")
    # Ignoring the key would be wrong: a rater who always says "left" gives exactly the share of
    # items whose left side was B minus the share whose left side was A.
    store2 = AnswerStore(tmp_path / "left.sqlite", tasks.task_id)
    answer_all(tasks, key, store2, verdicts, always={n: "left" for n in tasks.raters})
    m2 = sbs_report(tasks, key, store2.frame(), SbsReportConfig(bootstrap=0, min_gold_accuracy=0))[0]
    lefts = {i: key["items"][i]["left"] for i in verdicts}
    assert m2["gsb"] == pytest.approx(weighted(key, lefts, lambda s: (s == "B") - (s == "A")), abs=1e-12)
    assert (m2["G"], m2["S"], m2["B"]) == (list(lefts.values()).count("B"), 0, list(lefts.values()).count("A"))


def test_gold_accuracy_excludes_careless_raters_and_their_answers(tmp_path):
    tasks, key, _, _ = build(tmp_path, size=90, k=3, raters=["ann", "bo", "cy", "dee"], gold_rate=0.15)
    verdicts = plant(key, seed=3)
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    n_gold = {n: sum(key["items"][i]["kind"] == "gold" for i in tasks.queue(n)) for n in tasks.raters}
    assert min(n_gold.values()) >= 5
    answer_all(tasks, key, store, verdicts, gold_wrong={"cy": 1, "dee": n_gold["dee"]}, flip={"dee"})
    m = sbs_report(tasks, key, store.frame(), CFG)[0]
    r = m["raters"].set_index("rater")
    assert r.loc["ann", "gold_accuracy"] == 1.0 and r.loc["dee", "gold_accuracy"] == 0.0
    assert r.loc["cy", "gold_accuracy"] == pytest.approx((n_gold["cy"] - 1) / n_gold["cy"])
    assert r.loc["cy", "gold_correct"] == n_gold["cy"] - 1 and r.loc["cy", "gold_answered"] == n_gold["cy"]
    assert m["excluded_raters"] == ["dee"] and r.loc["cy", "kept"]
    c = Counter(verdicts.values())  # dee answered every item the opposite way, and counts nowhere
    assert (m["G"], m["S"], m["B"]) == (c["B"], c["same"], c["A"])
    assert m["disputes"] == 0
    # With dee kept (threshold 0), dee's opposite answers put items with 2 of 3 raters against each other.
    m0 = sbs_report(tasks, key, store.frame(), SbsReportConfig(bootstrap=0, min_gold_accuracy=0))[0]
    assert m0["excluded_raters"] == [] and m0["disputes"] > 0


def test_agreement_matches_hand_computation_and_the_libraries():
    # Two raters, ten items: observed agreement 8/10; marginals A 4/4, B 3/4, same 3/2:
    # expected agreement (16 + 12 + 6) / 100 = 0.34, kappa = (0.8 - 0.34) / 0.66 = 23/33.
    r1 = ["A", "A", "A", "B", "B", "same", "same", "B", "A", "same"]
    r2 = ["A", "A", "B", "B", "B", "same", "A", "B", "A", "same"]
    r3 = ["A", "A", "B", "B", "same", "same", "A", "B", None, None]  # two items not rated
    rows = [{"rater": name, "item_id": f"i{j}", "verdict": v}
            for name, vs in (("r1", r1), ("r2", r2), ("r3", r3)) for j, v in enumerate(vs) if v]
    out, pairs = agreement(pd.DataFrame(rows))
    p = pairs.set_index(["rater_1", "rater_2"])
    assert p.loc[("r1", "r2"), "cohen_kappa"] == pytest.approx(23 / 33)
    assert p.loc[("r1", "r2"), "agreement"] == pytest.approx(0.8)
    code = {"A": 0, "same": 1, "B": 2}
    assert p.loc[("r1", "r3"), "cohen_kappa"] == pytest.approx(
        cohen_kappa_score([code[v] for v in r1[:8]], [code[v] for v in r3[:8]]))
    assert out["mean_cohen_kappa"] == pytest.approx(p["cohen_kappa"].mean())
    # Fleiss on the eight items all three rated, by the textbook formula and by statsmodels.
    table = np.array([[sum(code[r[j]] == c for r in (r1, r2, r3)) for c in range(3)] for j in range(8)])
    n = 3
    p_i = ((table ** 2).sum(1) - n) / (n * (n - 1))
    p_j = table.sum(0) / table.sum()
    hand = (p_i.mean() - (p_j ** 2).sum()) / (1 - (p_j ** 2).sum())
    assert out["fleiss_kappa"] == pytest.approx(hand) == pytest.approx(fleiss_kappa(table))
    assert out["fleiss_items"] == 8 and out["fleiss_raters_per_item"] == 3
    data = np.array([[code[v] if v else np.nan for v in r] for r in (r1, r2, r3)], dtype=float)
    for level in ("nominal", "ordinal"):
        assert out[f"krippendorff_alpha_{level}"] == pytest.approx(
            krippendorff.alpha(reliability_data=data, level_of_measurement=level, value_domain=[0, 1, 2]))
    assert out["krippendorff_alpha_ordinal"] > out["krippendorff_alpha_nominal"]  # near misses count less
    pairs_agree = sum(a == b for x, y in ((r1, r2), (r1, r3), (r2, r3)) for a, b in zip(x, y) if a and b)
    pairs_all = sum(1 for x, y in ((r1, r2), (r1, r3), (r2, r3)) for a, b in zip(x, y) if a and b)
    assert out["pairwise_agreement"] == pytest.approx(pairs_agree / pairs_all)


def test_reweighting_when_disagreements_are_oversampled(tmp_path):
    tasks, key, _, _ = build(tmp_path, size=120, k=1, raters=["ann"], segment="source", disagree_share=0.9,
                             gold_rate=0)
    verdicts = {i: ("B" if r["disagree"] else "same") for i, r in key["items"].items()}
    verdicts.update({i: "A" for i in list(verdicts)[:5] if key["items"][i]["disagree"]})
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    answer_all(tasks, key, store, verdicts)
    m, _, _, _, notes = sbs_report(tasks, key, store.frame(), CFG)
    assert m["reweighted"] and any("weight each stratum" in n for n in notes)
    expected = weighted(key, verdicts, lambda v: (v == "B") - (v == "A"))
    assert m["gsb"] == pytest.approx(expected, abs=1e-12)
    c = Counter(verdicts.values())
    assert m["gsb"] < (c["B"] - c["A"]) / len(verdicts) - 0.2  # the raw figure would overstate the gain
    assert m["agreement"] == {"raters": 1}


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_report_with_disputes_and_adjudication(tmp_path):
    tasks, key, _, tasks_path = build(tmp_path, size=40, k=3, segment="source", gold_rate=0.1)
    verdicts = plant(key, seed=5)
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    out = tmp_path / "rep"
    r = run(["sbs", "report", str(tasks_path), "--out", str(out)])
    assert r.exit_code == 2 and "no regular item" in r.output
    answer_all(tasks, key, store, verdicts)
    # One item split three ways: a tie, counted Same, in dispute.
    split = next(i for i, v in verdicts.items() if v == "B")
    raters = [n for n in tasks.raters if split in tasks.queue(n)]
    for name, ans in zip(raters, ("left", "same", "right")):
        store.save(name, split, ans)
    r = run(["sbs", "report", str(tasks_path), "--out", str(out), "--set", "report.bootstrap=100"])
    assert r.exit_code == 0, r.output
    line = json.loads(r.output.strip().splitlines()[-1])
    m = json.loads((out / "metrics.json").read_text())
    c = Counter(verdicts.values())
    assert (m["G"], m["S"], m["B"]) == (c["B"] - 1, c["same"] + 1, c["A"]) and m["disputes"] == 1
    assert line["gsb"] == m["gsb"] and line["report"].endswith("report.html")
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figs == ["goodrate.png", "gsb.png", "rater_gold_accuracy.png"]
    for f in figs:
        with Image.open(out / "figures" / f) as im:
            im.verify()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Goodrate" in html
    assert {p.name for p in (out / "tables").glob("*.csv")} == {
        "segments.csv", "raters.csv", "agreement_pairs.csv", "disputes.csv", "strata.csv", "items.csv"}
    disputes = pd.read_csv(out / "tables" / "disputes.csv", dtype=str, keep_default_na=False)
    assert disputes["item_id"].tolist() == [split] and disputes["majority"].tolist() == ["tie"]
    # The adjudicator (blind) says the left grade is right: the verdict becomes the left system.
    disputes["adjudicated"] = "left"
    disputes.to_csv(tmp_path / "adj.csv", index=False)
    r = run(["sbs", "report", str(tasks_path), "--out", str(tmp_path / "rep2"), "--adjudication",
             str(tmp_path / "adj.csv"), "--set", "report.bootstrap=0"])
    assert r.exit_code == 0, r.output
    m2 = json.loads((tmp_path / "rep2" / "metrics.json").read_text())
    left = key["items"][split]["left"]
    assert m2["adjudicated"] == 1
    assert (m2["G"], m2["B"]) == ((c["B"], c["A"]) if left == "B" else (c["B"] - 1, c["A"] + 1))
    disputes.loc[0, "adjudicated"] = "maybe"
    disputes.to_csv(tmp_path / "adj.csv", index=False)
    r = run(["sbs", "report", str(tasks_path), "--out", str(tmp_path / "rep3"), "--adjudication",
             str(tmp_path / "adj.csv")])
    assert r.exit_code == 2 and "line 2" in r.output and "maybe" in r.output


def test_report_refuses_a_key_or_answers_of_another_task_set(tmp_path):
    t1, key1, _, p1 = build(tmp_path / "one", size=20, k=1, raters=["ann"], gold_rate=0)
    t2, _, _, p2 = build(tmp_path / "two", size=20, k=1, raters=["ann"], gold_rate=0, seed=7)
    AnswerStore(tmp_path / "one" / "answers.sqlite", t1.task_id).save("ann", t1.queue("ann")[0], "left")
    r = run(["sbs", "report", str(p2), "--out", str(tmp_path / "r"), "--key", str(tmp_path / "one" / "key.json")])
    assert r.exit_code == 2 and "key of task set" in r.output
    r = run(["sbs", "report", str(p2), "--out", str(tmp_path / "r"), "--db", str(tmp_path / "one" / "answers.sqlite")])
    assert r.exit_code == 2 and "holds answers to task set" in r.output
    r = run(["sbs", "status", str(p1)])
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1])["raters"] == {"ann": 1}
