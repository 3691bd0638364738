"""`taosr1 sbs make`: stratified sample, blinding kept apart, k raters per item, gold at the configured rate."""

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from sbs_data import build, gold_table, two_systems

from taosr1.cli.main import main
from taosr1.core.config import ConfigError
from taosr1.sbs.config import SbsConfig, load_sbs_config
from taosr1.sbs.make import apportion, make_tasks


def test_config_file_loads_and_rejects_unknown_keys(tmp_path):
    cfg = load_sbs_config()
    assert cfg == SbsConfig()  # the YAML states the dataclass defaults
    assert cfg.k == 3 and cfg.gold_rate == 0.1 and cfg.report.min_gold_accuracy == 0.7
    assert load_sbs_config(None, {"raters": "ann, bo", "report.bootstrap": 50}).raters == ["ann", "bo"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: 10\ngold_ratio: 0.2\n")
    with pytest.raises(ConfigError, match="gold_ratio"):
        load_sbs_config(bad)
    with pytest.raises(ConfigError, match="distinct"):
        SbsConfig(raters=["Ann", "ann"])
    with pytest.raises(ConfigError, match="gold_rate"):
        SbsConfig(gold_rate=1.0)


def test_apportion_is_proportional_capped_and_exact():
    assert apportion([50, 30, 20], 10).tolist() == [5, 3, 2]
    assert apportion([1, 1000], 10, at_least_one=True).tolist() == [1, 9]
    assert apportion([1, 1000], 10).tolist() == [0, 10]
    assert apportion([3, 2], 100).tolist() == [3, 2]
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 50, size=rng.integers(1, 8))
        n = int(rng.integers(0, 120))
        got = apportion(counts, n, at_least_one=True)
        assert got.sum() == min(n, counts.sum()) and (got <= counts).all() and (got >= 0).all()


def test_sample_is_stratified_by_segment_and_disagreement(tmp_path):
    tasks, key, summary, _ = build(tmp_path, size=200, segment="source", gold_rate=0.1, k=2)
    a, b = two_systems()
    reg = [r for r in key["items"].values() if r["kind"] == "regular"]
    assert len(reg) == summary["regular_items"] == 200
    pop = a["source"].value_counts()
    got = Counter(r["segment"] for r in reg)
    for seg, n_pop in pop.items():  # proportional to the segment's pairs, within rounding
        assert abs(got[seg] - 200 * n_pop / len(a)) <= 1.5, (seg, got[seg])
    dis_pop = (a["label"] != b["label"]).mean()
    assert abs(np.mean([r["disagree"] for r in reg]) - dis_pop) < 0.03
    strata = key["strata"]
    assert sum(s["sampled"] for s in strata) == 200
    assert sum(s["population"] for s in strata) == len(a) - summary["gold_items"]
    # The same seed gives the same task set; another seed another one.
    t2, _, _, _ = build(tmp_path / "again", size=200, segment="source", gold_rate=0.1, k=2)
    t3, _, _, _ = build(tmp_path / "other", size=200, segment="source", gold_rate=0.1, k=2, seed=1)
    assert t2.task_id == tasks.task_id != t3.task_id


def test_disagree_share_oversamples_disagreements(tmp_path):
    _, key, summary, _ = build(tmp_path, size=100, segment="source", disagree_share=0.9, gold_rate=0)
    reg = [r for r in key["items"].values() if r["kind"] == "regular"]
    assert 0.85 <= np.mean([r["disagree"] for r in reg]) <= 0.95
    assert summary["gold_items"] == 0


def test_blinding_is_random_per_item_and_kept_out_of_the_sheet(tmp_path):
    tasks, key, _, path = build(tmp_path, size=300, gold_rate=0.1)
    a, b = two_systems()
    a_lab = dict(zip(zip(a["query_id"], a["product_id"]), a["label"]))
    b_lab = dict(zip(zip(b["query_id"], b["product_id"]), b["label"]))
    lefts = [key["items"][i]["left"] for i in tasks.items]
    assert 0.4 < lefts.count("A") / len(lefts) < 0.6
    for item_id, it in tasks.items.items():
        k = (it["keys"]["query_id"], it["keys"]["product_id"])
        left_sys = key["items"][item_id]["left"]
        assert it["left"]["label"] == (a_lab if left_sys == "A" else b_lab)[k]
        assert it["right"]["label"] == (b_lab if left_sys == "A" else a_lab)[k]
    keys, values = set(), set()

    def walk(x):
        if isinstance(x, dict):
            keys.update(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            values.add(x)

    walk(json.loads(path.read_text()))
    assert not keys & {"kind", "expected", "gold_label", "label_a", "label_b", "source", "a", "b", "disagree"}
    assert not values & {"a.parquet", "b.parquet", "base", "new", "gold.csv", "A", "B"}


def test_each_item_goes_to_k_distinct_raters_and_gold_at_the_rate(tmp_path):
    raters = ["ann", "bo", "cy", "dee", "eve"]
    tasks, key, summary, _ = build(tmp_path, size=120, k=3, raters=raters, gold_rate=0.15, gold_same_share=0.25)
    seen = Counter()
    for name in raters:
        q = tasks.queue(name)
        assert len(q) == len(set(q))  # nobody rates an item twice
        reg = [i for i in q if key["items"][i]["kind"] == "regular"]
        gold = [i for i in q if key["items"][i]["kind"] == "gold"]
        seen.update(reg)
        assert len(reg) in (72, 73)  # 120 * 3 / 5
        assert abs(len(gold) / len(q) - 0.15) <= 1 / len(q)  # the configured rate, within rounding
        positions = [q.index(g) for g in gold]  # spread through the queue, not bunched at one end
        assert min(positions) < len(q) / 2 < max(positions)
    assert set(seen.values()) == {3} and len(seen) == 120
    gold_items = {i: r for i, r in key["items"].items() if r["kind"] == "gold"}
    regular_keys = {tuple(tasks.items[i]["keys"].values()) for i in seen}
    assert not regular_keys & {tuple(tasks.items[i]["keys"].values()) for i in gold_items}
    for i, r in gold_items.items():  # the expected answer follows from which side matches the gold label
        ok_a, ok_b = r["label_a"] == r["gold_label"], r["label_b"] == r["gold_label"]
        assert r["expected"] == ("same" if ok_a and ok_b else "A" if ok_a else "B")
        assert ok_a or ok_b
    exp = Counter(r["expected"] for r in gold_items.values())
    assert exp["same"] == round(len(gold_items) * 0.25)


def test_make_refuses_what_it_cannot_do(tmp_path):
    a, b = two_systems(300)
    with pytest.raises(ValueError, match="at least 3"):
        make_tasks(a, b, SbsConfig(raters=["ann", "bo"], k=3, gold_rate=0))
    with pytest.raises(ValueError, match="no gold table"):
        make_tasks(a, b, SbsConfig(raters=["ann", "bo", "cy"]))
    with pytest.raises(ValueError, match="usable"):
        make_tasks(a, b, SbsConfig(raters=["ann", "bo", "cy"], gold_rate=0.5), gold=gold_table(a).head(5),
                   gold_col="esci_label")
    with pytest.raises(ValueError, match="same pairs"):
        make_tasks(a, b.head(200), SbsConfig(raters=["ann", "bo", "cy"], gold_rate=0))
    with pytest.raises(ValueError, match="segment column 'kind'"):
        make_tasks(a, b, SbsConfig(raters=["ann", "bo", "cy"], gold_rate=0, segment="kind"))
    bad = gold_table(a).assign(esci_label="maybe")
    with pytest.raises(ValueError, match="not labels"):
        make_tasks(a, b, SbsConfig(raters=["ann", "bo", "cy"]), gold=bad, gold_col="esci_label")


def test_reasoning_is_shown_only_when_both_systems_have_it(tmp_path):
    a, b = two_systems(200)
    a = a.assign(reasoning=[f"A thinks {i}" for i in range(len(a))])
    sheet, _, _ = make_tasks(a, b, SbsConfig(raters=["ann"], k=1, gold_rate=0, size=20))
    assert sheet["show_reasoning"] is False and "reasoning" not in sheet["items"][0]["left"]
    b = b.assign(reasoning=[f"B thinks {i}" for i in range(len(b))])
    sheet, key, _ = make_tasks(a, b, SbsConfig(raters=["ann"], k=1, gold_rate=0, size=20))
    it = sheet["items"][0]
    side = key["items"][it["item_id"]]["left"]
    assert sheet["show_reasoning"] and it["left"]["reasoning"].startswith(f"{side} thinks")


def test_cli_make_writes_sheet_and_key_and_protects_answers(tmp_path):
    a, b = two_systems()
    a.to_parquet(tmp_path / "a.parquet")
    b.to_parquet(tmp_path / "b.parquet")
    gold_table(a).to_csv(tmp_path / "gold.csv", index=False)
    out = tmp_path / "sbs"
    args = ["sbs", "make", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--out", str(out),
            "--raters", "ann,bo,cy", "--k", "2", "--size", "60", "--segment", "source", "--gold",
            str(tmp_path / "gold.csv"), "--gold-col", "esci_label"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    line = json.loads(r.output.strip().splitlines()[-1])
    assert line["regular_items"] == 60 and line["gold_items"] > 0
    assert (out / "tasks.json").is_file() and (out / "key.json").is_file()
    # one secret link per rater and an admin link, printed once; only their HMACs are stored
    from taosr1.sbs.access import load_access
    from taosr1.sbs.tasks import load_tasks

    links = line["links"]
    assert sorted(links) == ["admin", "ann", "bo", "cy"]
    tokens = {n: u.rsplit("/t/", 1)[1] for n, u in links.items()}
    assert all(u.startswith("http://127.0.0.1:5000/t/") and len(tokens[n]) >= 43 for n, u in links.items())
    assert oct((out / "access.json").stat().st_mode & 0o777) == "0o600"
    stored = (out / "tasks.json").read_text() + (out / "access.json").read_text() + (out / "key.json").read_text()
    assert not any(t in stored for t in tokens.values())
    acc = load_access(out / "access.json", load_tasks(out / "tasks.json"))
    assert acc.key not in (out / "tasks.json").read_text()
    assert {n: (g.role, g.rater) for n in tokens for g in [acc.check(tokens[n])]} == {
        "ann": ("rater", "ann"), "bo": ("rater", "bo"), "cy": ("rater", "cy"), "admin": ("admin", None)}
    (out / "answers.sqlite").write_bytes(b"")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "already holds answers" in r.output
