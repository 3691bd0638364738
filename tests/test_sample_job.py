"""The pass@N sampling Spark job (jobs/sample_responses.py): Spark local mode, a CoT folder made by
`taosr1 cot`, a tiny real model, real files; its output against `taosr1 sample`'s and `train dpo`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from taosr1.cli.main import main
from taosr1.cli.sample_job import sample_job
from taosr1.core import config as cfgmod
from taosr1.core.config import ConfigError, read_yaml
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptBuilder, parse_response
from taosr1.core.resources import conf_dir
from taosr1.training.sample_job import DUPLICATE_REASON, check_inputs, run_job
from taosr1.training.sampling import SampleConfig

REPO = Path(__file__).resolve().parent.parent
SCHEME = load_scheme("taosr1")
N = 4
PAIRS = 16


def last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def sample_config(cot: Path, model: str, out: Path, **overrides) -> SampleConfig:
    values = {"data": str(cot), "output_dir": str(out), "engine.model": model, "n": N, "max_new_tokens": 6,
              "seed": 11, **overrides}
    return cfgmod.load(SampleConfig, conf_dir() / "train" / "sample.yaml", values)


@pytest.fixture(scope="module")
def cot_dir(tiny_model, tmp_path_factory) -> Path:
    """CoT data from the real `taosr1 cot` on a slice of the bundled sample (template responses)."""
    out = tmp_path_factory.mktemp("cot") / "cot"
    r = CliRunner().invoke(main, ["cot", "--output", str(out), "--set", f"teacher.model={tiny_model}",
                                  "--set", f"limit={PAIRS}", "--set", "attempts=0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def policy(tiny_model, tmp_path_factory) -> str:
    """The tiny model with its label tokens' output rows turned towards the hidden state at the
    answer position (nearly the same for every prompt of a random tiny model): a sampled answer
    starts with a label token more often than not, so pass rates spread between 0 and 1."""
    import torch
    from transformers import AutoModelForCausalLM

    from taosr1.labeling.models import load_tokenizer

    dst = tmp_path_factory.mktemp("policy") / "model"
    shutil.copytree(tiny_model, dst)
    model = AutoModelForCausalLM.from_pretrained(dst)
    tok = load_tokenizer(dst)
    ids = PromptBuilder(tok, SCHEME).build([{"query": "red shoes", "title": "Red running shoes"}]).ids[0]
    with torch.no_grad():
        h = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        for token, logit in zip(SCHEME.token_ids(tok), [6.5, 5.5, 5.0, 6.5]):  # Excellent .. Irrelevant
            model.lm_head.weight[token] = h * (logit / h.dot(h))
    model.save_pretrained(dst)
    return str(dst)


@pytest.fixture(scope="module")
def job_run(spark, cot_dir, policy, tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "sample"
    summary = run_job(spark, sample_config(cot_dir, policy, out), partitions=2, values_hash="h1")
    return summary, out


def read(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    samples = pd.read_parquet(out / "samples.parquet").sort_values(["pair_id", "sample"]).reset_index(drop=True)
    return samples, pd.read_parquet(out / "difficulty.parquet")


def test_every_prompt_gets_n_parsed_samples_and_its_pass_rate(job_run, cot_dir):
    summary, out = job_run
    samples, diff = read(out)
    cot = pd.read_parquet(cot_dir / "cot.parquet")
    # N rows per prompt, every CoT prompt there, nothing quarantined
    assert samples.groupby("pair_id")["sample"].apply(sorted).tolist() == [list(range(N))] * PAIRS
    assert sorted(samples["pair_id"].unique()) == sorted(cot["pair_id"]) and len(samples) == PAIRS * N
    assert pd.read_parquet(out / "quarantine.parquet").empty
    # each sample's label is its response's, `correct` is label == gold
    gold = dict(zip(cot["pair_id"], cot["gold"]))
    for r in samples.itertuples():
        parsed = parse_response(r.response, SCHEME, "post_cot")
        label = None if pd.isna(r.label) else r.label
        assert label == (parsed.label.name if parsed.label else None) and r.gold == gold[r.pair_id]
        assert r.correct == (label == r.gold)
    # the difficulty table is the samples' pass rates
    rates = samples.groupby("pair_id")["correct"].mean()
    assert diff["pair_id"].tolist() == sorted(rates.index)
    assert diff["pass_rate"].tolist() == pytest.approx(rates.loc[diff["pair_id"]].tolist())
    assert (diff["n"] == N).all() and (diff["correct"] == diff["pass_rate"] * N).all()
    assert 0 < summary["mixed"] and summary["all_right"] + summary["none_right"] + summary["mixed"] == PAIRS
    # the stage marker: counts add up; one engine per worker that sampled
    marker = json.loads((out / "taosr1_stage.json").read_text())
    assert marker["stage"] == "sample" and marker["complete"] and marker["config_hash"] == "h1"
    assert marker["prompts_in"] == marker["prompts"] + marker["quarantined"] == PAIRS
    assert marker["samples"] == marker["prompts"] * N and marker["unparseable"] == int(samples["label"].isna().sum())
    assert marker["pass@1"] == pytest.approx(samples[samples["sample"] == 0]["correct"].mean(), abs=1e-4)
    assert 1 <= marker["workers"] <= 2 and marker["engine_loads"] == marker["workers"] and marker["partitions"] == 2
    assert not (out / "_staging").exists()


def test_same_samples_as_taosr1_sample_whatever_the_partitioning(spark, job_run, cot_dir, policy, tmp_path):
    _, out = job_run
    samples, diff = read(out)
    local = tmp_path / "local"
    args = ["sample", "--output", str(local), "--set", f"data={cot_dir}", "--set", f"engine.model={policy}",
            "--set", f"n={N}", "--set", "max_new_tokens=6", "--set", "seed=11"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    loc_samples, loc_diff = read(local)
    pd.testing.assert_frame_equal(samples, loc_samples)  # same rows, same dtypes
    pd.testing.assert_frame_equal(diff, loc_diff)
    # other partitions and chunks: the same samples; another seed: other samples
    again = run_job(spark, sample_config(cot_dir, policy, tmp_path / "again", batch_rows=3), partitions=3)
    pd.testing.assert_frame_equal(read(tmp_path / "again")[0], samples)
    assert again["partitions"] == 3
    run_job(spark, sample_config(cot_dir, policy, tmp_path / "seed", seed=12), partitions=2)
    assert not read(tmp_path / "seed")[0]["response"].equals(samples["response"])


def test_job_output_trains_dpo(job_run, cot_dir, policy, tmp_path):
    _, out = job_run
    r = CliRunner().invoke(main, ["train", "dpo", "--output", str(tmp_path / "dpo"), "--set", f"model={policy}",
                                  "--set", f"data={cot_dir}", "--set", f"samples={out}", "--set", "max_steps=1",
                                  "--set", "per_device_train_batch_size=2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    counts = last_json(r.output)["pair_counts"]
    assert counts["prompts"] == PAIRS and counts["pairs"] == counts["right_vs_wrong"] + counts["reference_vs_sample"] > 0
    assert json.loads((tmp_path / "dpo" / "taosr1_stage.json").read_text())["steps"] == 1


def test_rows_that_cannot_be_sampled_are_quarantined_with_a_reason(spark, cot_dir, policy, tmp_path):
    """A repeated pair_id, no pair_id, an unknown gold label, a prompt over max_prompt_tokens: each
    quarantined; every other prompt gets N samples; prompts in = sampled + quarantined."""
    from taosr1.labeling.models import load_tokenizer
    from taosr1.training.common import field_rows

    bad = tmp_path / "cot"
    shutil.copytree(cot_dir, bad)
    cot = pd.read_parquet(cot_dir / "cot.parquet")
    cot = pd.concat([cot, cot.iloc[[2]]], ignore_index=True)  # pair 2 again
    cot["pair_id"] = pd.array(cot["pair_id"], dtype="Int64")
    cot.loc[5, "pair_id"] = None
    cot.loc[7, "gold"] = "bogus"
    cot.to_parquet(bad / "cot.parquet", index=False)
    # a label config whose prompt limit only the longest prompt exceeds
    lengths = PromptBuilder(load_tokenizer(policy), SCHEME).build(field_rows(cot)).ids
    longest = max(range(len(cot)), key=lambda i: len(lengths[i]))
    label_cfg = read_yaml(conf_dir() / "label.yaml")
    label_cfg["prompt"]["max_prompt_tokens"] = len(lengths[longest]) - 1
    (tmp_path / "label.yaml").write_text(yaml.safe_dump(label_cfg))
    out = tmp_path / "sample"
    summary = run_job(spark, sample_config(bad, policy, out, label_config=str(tmp_path / "label.yaml")), partitions=2)
    q = pd.read_parquet(out / "quarantine.parquet")
    reasons = {r.split(":")[0] for r in q["reason"]}
    assert reasons == {"duplicate_pair_id", "missing_pair_id", "bad_gold", "prompt_too_long"}
    assert (q.loc[q["reason"] == DUPLICATE_REASON, "pair_id"] == 2).all()
    assert int(cot.loc[7, "pair_id"]) in set(q["pair_id"]) and int(cot.loc[longest, "pair_id"]) in set(q["pair_id"])
    samples, diff = read(out)
    assert (samples.groupby("pair_id").size() == N).all() and 2 in set(samples["pair_id"])
    assert summary["prompts_in"] == len(cot) == summary["prompts"] + summary["quarantined"]
    assert summary["quarantined"] == len(q) == 4 and len(diff) == summary["prompts"] == len(cot) - 4


@pytest.mark.parametrize("args,says", [
    (["--set", "data={missing}"], "is not a complete `cot` output"),
    (["--set", "engine.model={missing}"], "engine.model: model folder"),
    (["--set", "colour=blue"], "unknown key(s) ['colour']"),
    (["--set", "n=0"], "n must be >= 1"),
    (["--partitions", "-1"], "--partitions must be >= 0"),
], ids=["no_cot_folder", "no_model_folder", "unknown_key", "bad_value", "bad_partitions"])
def test_bad_input_fails_before_spark_work(spark, cot_dir, policy, tmp_path, args, says):
    out = tmp_path / "out"
    fill = [a.format(missing=tmp_path / "nope") for a in args]
    jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup())
    r = CliRunner().invoke(sample_job, ["--output", str(out), "--set", f"data={cot_dir}",
                                        "--set", f"engine.model={policy}", *fill])
    assert r.exit_code == 2 and says in r.output, r.output
    assert not out.exists() and len(spark.sparkContext.statusTracker().getJobIdsForGroup()) == jobs_before


def test_cot_file_without_a_needed_column_is_named(cot_dir, policy, tmp_path):
    bad = tmp_path / "cot"
    shutil.copytree(cot_dir, bad)
    pd.read_parquet(cot_dir / "cot.parquet").drop(columns=["title"]).to_parquet(bad / "cot.parquet")
    with pytest.raises(ConfigError, match=r"cot.parquet column 'title': expected text, found no such column"):
        check_inputs(sample_config(bad, policy, tmp_path / "out"))


def test_spark_submit_runs_the_job_file(cot_dir, policy, tmp_path):
    """spark-submit runs jobs/sample_responses.py; the job's own --master wins over spark-submit's."""
    spark_submit = Path(sys.executable).parent / "spark-submit"
    if not spark_submit.exists():
        spark_submit = "spark-submit"
    out = tmp_path / "sample"
    cmd = [str(spark_submit), "--master", "local[1]", str(REPO / "jobs" / "sample_responses.py"),
           "--config", str(conf_dir() / "train" / "sample.yaml"), "--output", str(out),
           "--set", f"data={cot_dir}", "--set", f"engine.model={policy}", "--set", "n=2", "--set", "max_new_tokens=3",
           "--set", "max_examples=6", "--master", "local[2]", "--partitions", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    summary = last_json(res.stdout)
    assert summary["spark_master"] == "local[2]" and summary["prompts"] == 6 and summary["samples"] == 12
    cot = pd.read_parquet(cot_dir / "cot.parquet")
    assert sorted(pd.read_parquet(out / "difficulty.parquet")["pair_id"]) == sorted(cot["pair_id"].head(6))
