"""`taosr1 eval` and `taosr1 calibrate --out` end to end on real files."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from eval_data import predictions
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score

from taosr1.cli.main import main


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def pred_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("pred") / "pred.parquet"
    predictions().to_parquet(p, index=False)
    return p


def test_eval_writes_metrics_and_reports(pred_file, tmp_path):
    out = tmp_path / "rep"
    r = run(["eval", str(pred_file), "--gold-col", "esci_label", "--segment", "source", "--out", str(out),
             "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    df = pd.read_parquet(pred_file)
    assert m["n"] == len(df) == 1263
    assert m["accuracy"] == pytest.approx(accuracy_score(df["esci_label"], df["label"]))
    assert m["macro_f1"] == pytest.approx(f1_score(df["esci_label"], df["label"], average="macro"))
    assert set(m["per_class"]) == {"E", "S", "C", "I"}
    assert m["per_class"]["C"]["support"] == 25
    assert m["ci"]["macro_f1"]["low"] < m["macro_f1"] < m["ci"]["macro_f1"]["high"]
    assert m["bootstrap"]["unit"] == f"whole query_id clusters ({df['query_id'].nunique()} of them)"
    assert 0 <= m["ece"] <= 1 and m["calibration"]["cumpt"]["best_beta"] > 0
    assert {s["segment"] for s in m["segments"]["source"]} == set(df["source"])
    assert sum(s["n"] for s in m["segments"]["source"]) == 1263
    assert json.loads(r.output.strip().splitlines()[-1])["macro_f1"] == m["macro_f1"]
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figs == ["by_source.png", "confusion.png", "cumpt_curve.png", "reliability.png", "tier_confusion.png"]
    for f in figs:
        with Image.open(out / "figures" / f) as im:
            im.verify()
    html = (out / "report.html").read_text()
    assert len(re.findall(r"data:image/png;base64,", html)) == 5
    assert "macro_f1" in (out / "report.md").read_text()


def test_gold_joined_from_another_table_in_any_spelling(pred_file, tmp_path):
    df = pd.read_parquet(pred_file)
    spell = {"E": "exact", "S": "Substitute", "C": "2", "I": "I"}
    gold = pd.DataFrame({"query_id": df["query_id"].astype(int), "product_id": df["product_id"],
                         "judgement": df["esci_label"].map(spell)})
    extra = pd.DataFrame({"query_id": [999999], "product_id": ["X"], "judgement": ["E"]})
    pd.concat([gold, extra]).to_parquet(tmp_path / "gold.parquet", index=False)  # integer keys, text in predictions
    preds = tmp_path / "pred.csv"
    df.drop(columns=["esci_label"]).to_csv(preds, index=False)
    r = run(["eval", str(preds), "--gold", str(tmp_path / "gold.parquet"), "--gold-col", "judgement",
             "--out", str(tmp_path / "rep"), "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["n"] == 1263 and m["gold_without_prediction"] == 1
    assert m["accuracy"] == pytest.approx(accuracy_score(df["esci_label"], df["label"]))


def test_predictions_that_do_not_join_are_refused_with_a_count(pred_file, tmp_path):
    df = pd.read_parquet(pred_file)
    df[["query_id", "product_id", "esci_label"]].iloc[:-7].to_csv(tmp_path / "gold.csv", index=False)
    r = run(["eval", str(pred_file), "--gold", str(tmp_path / "gold.csv"), "--gold-col", "esci_label",
             "--out", str(tmp_path / "rep")])
    assert r.exit_code == 2
    assert "7 of 1263 prediction row(s)" in r.output and "have no gold label" in r.output
    assert not (tmp_path / "rep").exists()
    r = run(["eval", str(pred_file), "--gold", str(tmp_path / "gold.csv"), "--gold-col", "esci_label",
             "--key-col", "query", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 2 and "repeat a key ['query']" in r.output


def test_gold_values_that_are_not_labels_are_refused_or_dropped_on_request(pred_file, tmp_path):
    df = pd.read_parquet(pred_file)
    df.loc[[3, 10, 11], "esci_label"] = ["maybe", "", "maybe"]
    bad = tmp_path / "bad.parquet"
    df.to_parquet(bad, index=False)
    r = run(["eval", str(bad), "--gold-col", "esci_label", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 2
    assert "3 of 1263 gold value(s) (esci_label) are not labels of scheme esci" in r.output
    assert "'maybe'" in r.output and "''" in r.output and "--drop-unparsed" in r.output
    r = run(["eval", str(bad), "--gold-col", "esci_label", "--out", str(tmp_path / "rep"), "--drop-unparsed",
             "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["n"] == 1260 and m["excluded_unparsed_gold"] == 3
    assert "3 row(s) left out" in (tmp_path / "rep" / "report.md").read_text()


def test_missing_columns_fail_clearly(pred_file, tmp_path):
    r = run(["eval", str(pred_file), "--gold-col", "gold_label", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "gold column 'gold_label' not found" in r.output
    r = run(["eval", str(pred_file), "--gold-col", "esci_label", "--segment", "qtype", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "segment column(s) ['qtype'] not found" in r.output
    r = run(["eval", str(pred_file), "--gold-col", "esci_label", "--set", "bootstrapp=3", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown key(s) ['bootstrapp']" in r.output


def test_eval_of_real_label_output_and_calibrate_report(tiny_model, tmp_path, sample_df):
    """The tiny model grades 60 rows with `taosr1 label`; eval and calibrate --out read that output."""
    src = tmp_path / "in.csv"
    sample_df.head(60).to_csv(src, index=False)
    graded = tmp_path / "graded.parquet"
    r = run(["label", str(src), str(graded), "--model", tiny_model, "--labels", "esci"])
    assert r.exit_code == 0, r.output
    r = run(["eval", str(graded), "--gold-col", "esci_label", "--segment", "source", "--out", str(tmp_path / "ev"),
             "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n"] == 60 and m["label_scheme"] == "esci" and m["model"] == "model"
    model = tmp_path / "model_copy"
    shutil.copytree(tiny_model, model)
    r = run(["calibrate", str(graded), "--gold-col", "esci_label", "--model", str(model), "--out", str(tmp_path / "cal")])
    assert r.exit_code == 0, r.output
    chosen = json.loads(r.output.strip().splitlines()[-1])["beta"]
    written = json.loads((model / "taosr1_calibration.json").read_text())["esci"]["beta"]
    report = json.loads((tmp_path / "cal" / "metrics.json").read_text())
    assert chosen == written == report["beta"]
    assert report["written_to"] == str(model / "taosr1_calibration.json")
    for f in ("cumpt_curve.png", "reliability.png"):
        with Image.open(tmp_path / "cal" / "figures" / f) as im:
            im.verify()
    assert np.isclose(report["macro_f1"], max(row["macro_f1"] for row in report["curve"]))


def test_eval_one_night_of_a_nightly_delta_table(pred_file, tmp_path):
    from deltalake import write_deltalake

    df = pd.read_parquet(pred_file).head(300)
    table = str(tmp_path / "grades")
    write_deltalake(table, df.assign(run_date="2025-06-01"), partition_by=["run_date"])
    write_deltalake(table, df.head(200).assign(run_date="2025-06-02"), partition_by=["run_date"], mode="append")
    r = run(["eval", table, "--gold-col", "esci_label", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "holds 2 runs" in r.output and "--run-date" in r.output
    r = run(["eval", table, "--gold-col", "esci_label", "--run-date", "2025-06-02", "--out", str(tmp_path / "o"),
             "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["n"] == 200
    r = run(["eval", table, "--gold-col", "esci_label", "--run-date", "2025-07-01", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no run_date '2025-07-01'" in r.output
