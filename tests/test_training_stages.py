"""The training stages on the tiny model: CoT acceptance, the SFT data format, every stage
run for a step or two through the CLI, resumption, and the trained models served by `taosr1 label`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from taosr1.cli.main import main
from taosr1.core import config as cfgmod
from taosr1.core.config import ConfigError, read_yaml
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptBuilder, PromptConfig, format_response
from taosr1.core.resources import conf_dir, sample_path
from taosr1.core.validate import ColumnConfig
from taosr1.training.common import bf16_autocast, write_stage
from taosr1.training.cot import CoTConfig, build_cot, parse_steps
from taosr1.training.pipeline import PipelineConfig, stage_config
from taosr1.training.rules import RuleIndex, load_rules

SCHEME = load_scheme("taosr1")
STEPS = ["asks for x", "is y", "same type", "colour matches", "fits"]


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


# --- configs ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["cot", "sft", "sample", "dpo", "grpo"])
def test_every_stage_config_loads_and_rejects_unknown_keys(stage):
    path = conf_dir() / "train" / f"{stage}.yaml"
    assert path.read_text().startswith("#") and "taosr1 " in path.read_text().splitlines()[1]
    cfg = stage_config(stage, read_yaml(path), source=str(path))
    if stage in ("sft", "dpo", "grpo"):
        assert cfg.use_cpu and cfg.bf16 is bf16_autocast() and cfg.gradient_checkpointing is False and cfg.report_to == []
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['colour'\]"):
        stage_config(stage, {**read_yaml(path), "colour": "blue"})


def test_pipeline_configs_load_and_refuse_wired_keys():
    cfg = cfgmod.load(PipelineConfig, conf_dir() / "train" / "smoke.yaml")
    assert cfg.stages == ["cot", "sft", "sample", "dpo", "grpo"] and cfg.sft["max_steps"] == 4 and cfg.train_rows == 16
    with pytest.raises(ConfigError, match=r"sft: key\(s\) \['model'\] are set by the pipeline"):
        cfgmod.load(PipelineConfig, conf_dir() / "train" / "smoke.yaml", {"sft.model": "x"})
    with pytest.raises(ConfigError, match="pipeline order"):
        cfgmod.load(PipelineConfig, None, {"stages": ["sft", "cot"]})
    with pytest.raises(ConfigError, match="gamma"):
        stage_config("grpo", {"gamma": 1.5})


@pytest.mark.parametrize("name", ["cpu", "gpu", "default_model"])
def test_recipe_configs_build_every_stage(tmp_path, name):
    """The recipe's configs run for an hour (gpu.yaml on a lent GPU, with no second try): every stage
    section must be a valid stage config (a misspelt TRL key fails here, not minutes into the run)."""
    from taosr1.training.pipeline import _stage_values

    cfg = cfgmod.load(PipelineConfig, conf_dir() / "train" / f"{name}.yaml")
    full = ["cot", "sft", "sample", "dpo", "grpo"]
    assert cfg.train_rows == 0 and cfg.test_rows == 0
    # the recipe; the default may ship its first stages only (default_model.yaml ships all five)
    assert cfg.stages == full if name != "default_model" else cfg.stages == full[: len(cfg.stages)]
    assert cfg.sft["label_epochs"] > 0 and cfg.cot["negatives_per_query"] > 0  # extends cpu.yaml: the same recipe
    assert (cfg.calib_size > 0) != (cfg.calib_folds >= 2)  # beta from a slice or cross-fitted, never from test
    for stage in full:
        stage_config(stage, _stage_values(cfg, stage, tmp_path, str(tmp_path / "train.parquet")), source=name)
    grpo = cfg.grpo
    assert grpo["per_device_train_batch_size"] * grpo.get("gradient_accumulation_steps", 1) % grpo["num_generations"] == 0
    if name == "default_model":
        assert cfg.test_size == 0 and cfg.export_rank > 0 and cfg.ship_to == "taosr1/data/default_model"


# --- CoT acceptance, retries, fallback ------------------------------------------------------


class ScriptedTeacher:
    """A teacher whose answers are fixed per round: the acceptance rules need controlled answers,
    which a real (tiny, random) model cannot give. Records what each round was asked."""

    def __init__(self, tokenizer, rounds):
        self.tokenizer = tokenizer
        self.rounds = rounds
        self.asked: list[int] = []

    def generate(self, prompts, *, n, temperature, max_new_tokens, seed, progress=None):
        answers = self.rounds[len(self.asked)]
        self.asked.append(len(prompts))
        assert len(prompts) == len(answers) and n == 1
        return [[a] for a in answers]


def test_cot_keeps_only_agreeing_teacher_answers_and_falls_back(tiny_engine, sample_df):
    df = sample_df.head(6).copy()
    df["gold"] = ["E", "I", "S", "E", "bogus", "C"]
    df.loc[5, "product_title"] = ""  # invalid row: quarantined
    builder = PromptBuilder(tiny_engine.tokenizer, SCHEME, PromptConfig())
    right = lambda g: format_response(SCHEME.parse(g), STEPS, "post_cot")  # noqa: E731
    teacher = ScriptedTeacher(tiny_engine.tokenizer, [
        # round 1: wrong label / unparseable / right label but no steps / right
        [right("I"), "hmm, not sure", "3\n1. Query: only one step", right("E")],
        # round 2, only the three rejected pairs: right / still unparseable / still no steps
        [right("E"), "???", "3"],
    ])
    cfg = CoTConfig(attempts=2, rules_per_pair=2)
    res = build_cot(df, gold_col="gold", builder=builder, columns=ColumnConfig(), index=RuleIndex(load_rules()),
                    engine=teacher, cfg=cfg)
    assert teacher.asked == [4, 3]
    f = res.frame
    assert f["source"].tolist() == ["teacher", "template", "template", "teacher"]
    assert f["attempts"].tolist() == [2, 2, 2, 1]
    assert f["gold"].tolist() == ["Excellent", "Irrelevant", "Related", "Excellent"]
    assert f.loc[0, "response_post_cot"] == right("E") and list(f.loc[0, "steps"]) == STEPS
    # the template states the gold judgement, in both formats, and parses back to the gold label
    from taosr1.core.prompts import parse_response

    for _, r in f.iterrows():
        assert parse_response(r["response_post_cot"], SCHEME, "post_cot").label.name == r["gold"]
        assert parse_response(r["response_think_first"], SCHEME, "think_first").label.name == r["gold"]
        assert parse_steps(r["response_post_cot"].split("\n", 1)[1]) == list(r["steps"])
    assert "Irrelevant" in f.loc[1, "steps"][4] and f.loc[1, "query"] in f.loc[1, "steps"][0]
    assert sorted(res.quarantine["reason"].str.split(":").str[0]) == ["bad_gold", "empty_title"]
    s = res.stats
    assert s["pairs"] == 4 and s["teacher_rows"] == 2 and s["pair_agreement_rate"] == 0.5
    assert s["teacher_responses"] == 7 and s["outcomes"] == {"label_mismatch": 1, "unparseable": 2, "missing_steps": 2, "accepted": 2}
    assert s["response_label_agreement"] == pytest.approx(round(4 / 7, 4))


def test_cot_without_teacher_is_all_template(tiny_engine, sample_df):
    builder = PromptBuilder(tiny_engine.tokenizer, SCHEME, PromptConfig())
    res = build_cot(sample_df.head(5), gold_col="esci_label", builder=builder, columns=ColumnConfig(),
                    index=RuleIndex(load_rules()), engine=None, cfg=CoTConfig(attempts=0))
    assert (res.frame["source"] == "template").all() and res.stats["teacher_responses"] == 0
    with pytest.raises(ValueError, match="gold label column 'nope'"):
        build_cot(sample_df.head(2), gold_col="nope", builder=builder, columns=ColumnConfig(),
                  index=RuleIndex(load_rules()), engine=None, cfg=CoTConfig())


# --- SFT data: the serving prompt, loss on the response only -------------------------------


def test_sft_prompts_are_the_serving_prompts_and_loss_is_on_the_response(tiny_model, tmp_path, sample_df):
    from datasets import Dataset
    from trl import SFTTrainer

    from taosr1.training.common import field_rows, load_for_training
    from taosr1.training.sft import SFTStageConfig, sft_dataset

    builder = PromptBuilder(load_for_training(tiny_model)[1], SCHEME, PromptConfig())
    res = build_cot(sample_df.head(3), gold_col="esci_label", builder=builder, columns=ColumnConfig(),
                    index=RuleIndex(load_rules()), engine=None, cfg=CoTConfig(attempts=0))
    model, tok, _ = load_for_training(tiny_model)
    data = sft_dataset(res.frame, builder, "post_cot")
    args = cfgmod.build(SFTStageConfig, {"output_dir": str(tmp_path), "max_steps": 1})
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_pandas(data), processing_class=tok)
    served = builder.build(field_rows(res.frame)).ids  # what `taosr1 label` feeds the model
    for i, row in enumerate(trainer.train_dataset):
        n = len(served[i])
        assert row["input_ids"][:n] == served[i]
        assert all(x == -100 for x in row["labels"][:n])
        response = tok.decode([t for t in row["labels"][n:] if t != -100])
        assert response == res.frame.loc[i, "response_post_cot"] + tok.eos_token


# --- every stage through the CLI, resumption, serving ---------------------------------------


def test_pipeline_stages_resume_and_serve(tiny_model, tmp_path):
    out = tmp_path / "run"
    sets = ["model=" + tiny_model, "cot.teacher.model=" + tiny_model, "train_rows=16", "test_rows=12",
            "stages=[cot, sft, sample, dpo]", "cot.max_new_tokens=8", "sft.max_steps=2",
            "sample.max_new_tokens=4", "sample.n=3", "sample.max_examples=0", "dpo.max_steps=1"]
    args = ["pipeline", "--config", str(conf_dir() / "train" / "smoke.yaml"), "--output", str(out)]
    for s in sets:
        args += ["--set", s]
    r = run(args)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "pipeline_summary.json").read_text())
    assert summary["split"]["queries_in_both"] == 0 and summary["split"]["test_rows"] == 12
    st = summary["stages"]
    assert st["cot"]["pairs"] == 16 and st["sft"]["steps"] == 2 and st["sample"]["samples"] == 48
    counts = st["dpo"]["pair_counts"]
    assert counts["prompts"] == 16 and counts["pairs"] == counts["right_vs_wrong"] + counts["reference_vs_sample"]
    assert st["sample"]["draw"] == "label" and st["sample"]["unparseable"] == 0  # labels drawn from the scorer
    assert st["dpo"]["trainer"] == "label position" and st["dpo"]["pairs_trained"] == counts["pairs"]
    served = {"zero_shot", "sft", "dpo"}
    assert set(summary["eval"]) == served | {f"{m}_argmax" for m in served}
    assert all(m["n"] == 12 for m in summary["eval"].values())
    # each trained model's beta comes from the calibration slice: training queries no stage trained on
    assert summary["split"]["calib_rows"] > 0 and set(summary["calibration"]) == {"sft", "dpo"}
    for stage in ("sft", "dpo"):
        assert summary["eval"][stage]["beta"] == summary["calibration"][stage]["beta"]
        assert summary["eval"][f"{stage}_argmax"]["mode"] == "argmax"

    # resumed: every stage complete with the same settings is skipped
    r = run(args)
    assert r.exit_code == 0 and r.output.count(", skipped\n") == 4
    # a changed SFT setting reruns SFT and every later stage, not the CoT data
    r = run(args + ["--set", "sft.learning_rate=3e-5"])
    assert "cot: complete" in r.output and "sft: running (settings changed)" in r.output
    assert "dpo: running (an earlier stage ran again)" in r.output

    # the trained models serve
    for stage in ("sft", "dpo"):
        r = run(["label", str(sample_path()), str(tmp_path / f"{stage}.csv"), "--model", str(out / stage), "--limit", "5"])
        assert r.exit_code == 0, r.output
        assert last_json(r.output)["graded"] == 5

    # GRPO on hand-made pass rates: the difficulty filter and class balance decide the prompts
    cot = pd.read_parquet(out / "cot" / "cot.parquet")
    rates = [0.0, 0.5, 1.0, 0.25] * 4
    diff = pd.DataFrame({"pair_id": cot["pair_id"], "gold": cot["gold"], "n": 4,
                         "correct": [int(x * 4) for x in rates], "pass_rate": rates})
    samples_dir = tmp_path / "samples"
    samples_dir.mkdir()
    diff.to_parquet(samples_dir / "difficulty.parquet")
    pd.DataFrame({"pair_id": cot["pair_id"], "sample": 0, "gold": cot["gold"], "response": "4", "label": "Excellent",
                  "correct": True, "error": None}).to_parquet(samples_dir / "samples.parquet")
    write_stage(samples_dir, "sample", {"format": "post_cot"})
    kept = cot[[0 < x < 1 for x in rates]]["gold"].value_counts()
    r = run(["train", "grpo", "--output", str(out / "grpo"), "--set", f"model={out / 'dpo'}", "--set", f"data={out / 'cot'}",
             "--set", f"samples={samples_dir}", "--set", "max_steps=1", "--set", "num_generations=2",
             "--set", "per_device_train_batch_size=2", "--set", "max_completion_length=4"])
    assert r.exit_code == 0, r.output
    g = last_json(r.output)
    assert g["difficulty"] == {"prompts": 16, "kept": 8, "never_solved": 4, "always_solved": 4, "above_gamma": 0}
    assert g["balance"]["counts_before"] == kept.sort_index().to_dict()
    assert set(g["balance"]["counts_after"].values()) == {kept.min()} and g["balance"]["cv_after"] == 0.0
    assert g["prompts"] == kept.min() * len(kept) and g["steps"] == 1 and g["trainer"] == "label position"
    r = run(["label", str(sample_path()), str(tmp_path / "grpo.csv"), "--model", str(out / "grpo"), "--limit", "5"])
    assert r.exit_code == 0 and last_json(r.output)["graded"] == 5

    # whole responses sampled (draw: response): DPO through TRL's DPOTrainer
    r = run(["sample", "--output", str(out / "sample_resp"), "--set", f"data={out / 'cot'}", "--set",
             f"engine.model={out / 'sft'}", "--set", "draw=response", "--set", "n=2", "--set", "max_new_tokens=4"])
    assert r.exit_code == 0 and last_json(r.output)["draw"] == "response"
    r = run(["train", "dpo", "--output", str(out / "dpo_resp"), "--set", f"model={out / 'sft'}", "--set",
             f"data={out / 'cot'}", "--set", f"samples={out / 'sample_resp'}", "--set", "max_steps=1",
             "--set", "per_device_train_batch_size=2"])
    assert r.exit_code == 0, r.output
    d = last_json(r.output)
    assert "trainer" not in d and d["steps"] == 1 and d["pairs_trained"] == d["pair_counts"]["pairs"]

    # think-first ablation with LoRA: adapters merged into a plain model folder that serves
    r = run(["train", "sft", "--output", str(out / "sft_tf"), "--set", f"model={tiny_model}", "--set", f"data={out / 'cot'}",
             "--set", "format=think_first", "--set", "lora_r=4", "--set", "max_steps=1", "--set", "per_device_train_batch_size=4"])
    assert r.exit_code == 0, r.output
    assert last_json(r.output)["format"] == "think_first" and not (out / "sft_tf" / "adapter_config.json").exists()
    r = run(["explain", str(sample_path()), "--model", str(out / "sft_tf"), "--rows", "1", "--max-new-tokens", "4",
             "--prompt-format", "think_first"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("split", [True, False], ids=["split", "no_split"])
def test_pipeline_resumes_after_its_input_and_folder_move(tiny_model, tmp_path, sample_df, split):
    """Stages are keyed by the input's content and by paths inside the output folder, not by where
    either lies: a moved checkout or run folder resumes; an edited input trains again."""
    first, moved = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    sample_df.head(60).to_csv(first / "pairs.csv", index=False)
    sets = [f"model={tiny_model}", "cot.attempts=0", "stages=[cot, sft]", "sft.max_steps=1", "evaluate=false"]
    sets += ["test_size=0.3", "test_rows=8"] if split else ["test_size=0", "calib_size=0"]

    def pipeline(root: Path):
        args = ["pipeline", "--config", str(conf_dir() / "train" / "smoke.yaml"), "--output", str(root / "run"),
                "--set", f"input={root / 'pairs.csv'}"]
        for s in sets:
            args += ["--set", s]
        r = run(args)
        assert r.exit_code == 0, r.output
        return r.output

    assert "sft: running" in pipeline(first)
    first.rename(moved)
    out = pipeline(moved)
    assert out.count(", skipped\n") == 2, out
    edited = pd.read_csv(moved / "pairs.csv", dtype=str, keep_default_na=False)
    edited.loc[0, "product_title"] += " (edited)"
    edited.to_csv(moved / "pairs.csv", index=False)
    out = pipeline(moved)
    assert "cot: running (settings changed)" in out and "sft: running (an earlier stage ran again)" in out


def test_stage_inputs_missing_fail_with_guidance(tiny_model, tmp_path):
    r = run(["train", "dpo", "--output", str(tmp_path / "d"), "--set", f"model={tiny_model}",
             "--set", f"data={tmp_path / 'nope'}"])
    assert r.exit_code == 2 and "is not a complete `cot` output" in r.output
    r = run(["train", "sft", "--set", "colour=blue"])
    assert r.exit_code == 2 and "unknown key(s) ['colour']" in r.output
    with pytest.raises(ConfigError, match=r"sample: key\(s\) \['engine.model'\]"):
        cfgmod.load(PipelineConfig, None, {"sample.engine.model": "x"})


def test_cot_command_writes_data_and_reports_agreement(tiny_model, tmp_path):
    r = run(["cot", "--output", str(tmp_path / "cot"), "--set", f"teacher.model={tiny_model}", "--set", "limit=3",
             "--set", "attempts=1", "--set", "max_new_tokens=4"])
    assert r.exit_code == 0, r.output
    s = last_json(r.output)
    assert s["pairs"] == 3 and s["teacher_responses"] == 3 and 0 <= s["pair_agreement_rate"] <= 1
    assert len(pd.read_parquet(tmp_path / "cot" / "cot.parquet")) == 3
    assert json.loads((tmp_path / "cot" / "taosr1_stage.json").read_text())["stage"] == "cot"


def test_one_seed_trains_one_model_and_another_seed_another(tiny_model, tmp_path):
    """The LoRA adapters' init is seeded: a rerun of a stage reproduces its model bit for bit."""
    from safetensors.torch import load_file

    r = run(["cot", "--output", str(tmp_path / "cot"), "--set", "attempts=0", "--set", "limit=24"])
    assert r.exit_code == 0, r.output

    def sft(name: str, seed: int) -> dict:
        r = run(["train", "sft", "--output", str(tmp_path / name), "--set", f"model={tiny_model}", "--set",
                 f"data={tmp_path / 'cot'}", "--set", "label_epochs=1", "--set", "num_train_epochs=0", "--set",
                 "lora_r=4", "--set", "label_batch_size=8", "--set", f"seed={seed}"])
        assert r.exit_code == 0, r.output
        return load_file(str(tmp_path / name / "model.safetensors"))

    a, b, c = sft("a", 0), sft("b", 0), sft("c", 1)
    assert all(a[k].equal(b[k]) for k in a)
    assert not all(a[k].equal(c[k]) for k in a)


# --- GRPO: groups whose rewards are all equal are dropped from the loss --------------------


def test_grpo_drops_equal_reward_groups(tiny_model, tmp_path):
    from datasets import Dataset

    from taosr1.training.common import load_for_training
    from taosr1.training.grpo import GRPOStageConfig, group_filter_trainer

    def half_flat(completions, **kwargs):  # group 0: rewards 1, 0; group 1: 1, 1 (all equal)
        return [1.0, 0.0, 1.0, 1.0][: len(completions)]

    model, tok, _ = load_for_training(tiny_model)
    args = cfgmod.build(GRPOStageConfig, {"output_dir": str(tmp_path), "max_steps": 1, "num_generations": 2,
                                          "per_device_train_batch_size": 4, "max_completion_length": 3, "shuffle_dataset": False})
    data = Dataset.from_dict({"prompt": ["red shoes", "blue lamp"]})
    trainer = group_filter_trainer()(model=model, reward_funcs=[half_flat], args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "dropped_equal_reward_groups" in h]
    assert logged and logged[0]["dropped_equal_reward_groups"] == 0.5
    batch = trainer._buffered_inputs[0]
    flat = batch["advantages"].abs() < 1e-6
    assert (batch["completion_mask"].sum(dim=1)[flat] == 0).all() and (batch["completion_mask"].sum(dim=1)[~flat] > 0).all()
    assert int(batch["num_items_in_batch"]) == int(batch["completion_mask"].sum())


def test_evaluate_generation_parses_each_answer_and_reports_progress(tiny_model, sample_df, capsys):
    """Think-first grading decodes every pair (tens of minutes on a CPU): each row's label is the
    parse of its own response, and progress reaches every pair."""
    from taosr1.core.prompts import parse_response
    from taosr1.training.evaluate import evaluate_generation

    rows = sample_df.head(5)
    m, out = evaluate_generation(tiny_model, rows, gold_col="esci_label", fmt="think_first", threads=2,
                                 max_new_tokens=6)
    assert m["n"] == 5 and m["mode"] == "generate_think_first" and m["max_new_tokens"] == 6
    assert out["query"].tolist() == rows["query"].tolist()
    parsed = [parse_response(t, SCHEME, "think_first").label for t in out["response"]]
    assert out["label"].tolist() == [p.name if p else None for p in parsed]
    assert m["unparsed"] == sum(p is None for p in parsed)
    assert "5/5" in capsys.readouterr().err
