"""`taosr1 label` end to end on the bundled sample with the tiny model, every format."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from taosr1.cli.main import main
from taosr1.core.resources import sample_path
from taosr1.storage.tables import read_table, write_table


def run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def summary(result):
    line = [l for l in result.output.splitlines() if '{"rows_in"' in l][-1]
    return json.loads(line[line.index("{"):])


def test_full_sample_csv_to_parquet(tiny_model, tmp_path, sample_df):
    out = tmp_path / "grades.parquet"
    r = run(["label", str(sample_path()), str(out), "--model", tiny_model, "--labels", "esci"])
    assert r.exit_code == 0, r.output
    s = summary(r)
    graded = pd.read_parquet(out)
    assert s["rows_in"] == len(sample_df) == s["graded"] + s["quarantined"]
    assert s["quarantined"] == 0 and len(graded) == len(sample_df)
    assert not graded.duplicated(["query_id", "product_id"]).any()
    for c in ["grade", "label", "tier", "score", "p_E", "p_S", "p_C", "p_I", "model", "prompt_version", "esci_label"]:
        assert c in graded.columns
    np.testing.assert_allclose(graded[["p_E", "p_S", "p_C", "p_I"]].sum(axis=1), 1.0, atol=1e-6)
    assert set(graded["label"]) <= {"E", "S", "C", "I"}
    assert graded["score"].between(1, 4).all()
    assert 0.9 <= s["padding_efficiency"] <= 1


@pytest.mark.parametrize("ext,fmt", [(".csv", "csv"), (".parquet", "parquet"), (".jsonl", "jsonl"), ("_delta", "delta")])
def test_every_format_in_and_out(tiny_model, tmp_path, sample_df, ext, fmt):
    src = tmp_path / f"in{ext}"
    write_table(sample_df.head(40), src, fmt)
    out = tmp_path / f"out{ext}"
    r = run(["label", str(src), str(out), "--model", tiny_model, "--format", fmt, "--output-format", fmt])
    assert r.exit_code == 0, r.output
    graded = read_table(out, fmt)
    assert len(graded) == 40
    assert graded["grade"].astype(int).isin([1, 2, 3, 4]).all()
    if fmt == "delta":
        assert DeltaTable(str(out)).version() == 0


def test_bad_rows_are_quarantined_with_reasons_and_nothing_is_lost(tiny_model, tmp_path):
    df = pd.DataFrame({
        "query_id": ["1", "2", "3", "4", "5", "5", "7"],
        "product_id": ["a", "b", "c", "d", "e", "e", "g"],
        "query": ["red shoes", None, "   ", "fan", "lamp", "lamp", "sofa \x00 bed"],
        "product_title": ["Nike shoes", "A title", "A title", 42, "Desk lamp", "Desk lamp", "Sofa bed \ud800 grey"],
    })
    # Parquet cannot hold a mixed column, JSONL can: write JSON lines by hand.
    src = tmp_path / "in.jsonl"
    with open(src, "w") as f:
        for rec in df.to_dict("records"):
            f.write(json.dumps(rec) + "\n")
    out = tmp_path / "out.jsonl"
    r = run(["label", str(src), str(out), "--model", tiny_model])
    assert r.exit_code == 0, r.output
    graded = read_table(out)
    q = read_table(tmp_path / "out.quarantine.jsonl")
    assert len(graded) + len(q) == len(df)
    reasons = dict(zip(q["query_id"].astype(str), q["reason"].str.split(":").str[0]))
    assert reasons == {"2": "missing_query", "3": "empty_query", "4": "wrong_type_title", "5": "duplicate_key"}
    assert sorted(graded["query_id"].astype(str)) == ["1", "5", "7"]


def test_missing_column_fails_before_any_work(tiny_model, tmp_path, sample_df):
    src = tmp_path / "in.csv"
    sample_df.drop(columns=["product_title"]).head(5).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    r = run(["label", str(src), str(out), "--model", tiny_model])
    assert r.exit_code == 2
    assert "missing column(s) ['product_title']" in r.output and "--title-col" in r.output
    assert not out.exists()


def test_column_mapping_options(tiny_model, tmp_path, sample_df):
    src = tmp_path / "in.csv"
    sample_df.head(5).rename(columns={"product_title": "name", "query": "q"}).to_csv(src, index=False)
    r = run(["label", str(src), str(tmp_path / "o.csv"), "--model", tiny_model, "--query-col", "q",
             "--title-col", "name", "--limit", "3"])
    assert r.exit_code == 0, r.output
    assert summary(r)["graded"] == 3


def test_bad_config_and_model_fail_with_guidance(tiny_model, tmp_path):
    src = str(sample_path())
    r = run(["label", src, str(tmp_path / "o.csv"), "--model", tiny_model, "--beta", "1.5"])
    assert r.exit_code == 2 and "beta must be in (0, 1]" in r.output
    r = run(["label", src, str(tmp_path / "o.csv"), "--model", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = run(["label", src, str(tmp_path / "o.csv"), "--model", tiny_model, "--set", "engine.colour=blue"])
    assert r.exit_code == 2 and "unknown key(s) ['colour']" in r.output


def test_calibrate_writes_beta_that_label_then_uses(tiny_model, tmp_path, sample_df):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    src = tmp_path / "in.csv"
    sample_df.head(60).to_csv(src, index=False)
    out = tmp_path / "pred.parquet"
    assert run(["label", str(src), str(out), "--model", str(model), "--labels", "esci"]).exit_code == 0
    r = run(["calibrate", str(out), "--gold-col", "esci_label", "--model", str(model)])
    assert r.exit_code == 0, r.output
    chosen = json.loads(r.output.splitlines()[-1])["beta"]
    assert "<- chosen" in r.output
    rare = sorted(k for k, n in sample_df.head(60)["esci_label"].value_counts().items() if n < 10)
    assert rare and f"{rare} have fewer than 10 gold pairs here" in r.output  # left out of the macro-F1
    r = run(["label", str(src), str(tmp_path / "again.parquet"), "--model", str(model), "--labels", "esci"])
    assert summary(r)["beta"] == chosen


def test_explain_prints_reasoning_and_parse(tiny_model):
    r = run(["explain", str(sample_path()), "--model", tiny_model, "--rows", "2", "--max-new-tokens", "8"])
    assert r.exit_code == 0, r.output
    assert r.output.count("--- row") == 2
    # the tiny random model's 8 tokens are no reasoning: cut, said so, and the rule teacher's steps shown, marked
    assert r.output.count("[the model's continuation is cut:") == 2 and r.output.count("rule-based") == 2
    assert r.output.count("5. Judgement:") == 2 and "reasoning (the model's own" not in r.output


def test_help_says_where_to_start():
    r = run(["--help"])
    assert "Start here" in r.output and "taosr1 label" in r.output
