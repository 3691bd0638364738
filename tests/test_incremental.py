"""Incremental nightly runs (reuse: previous): Spark local mode, real Delta tables, the tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taosr1.core import config as cfgmod
from taosr1.core.config import ConfigError
from taosr1.core.labels import load_scheme
from taosr1.core.resources import conf_dir
from taosr1.nightly.job import NightlyConfig, run

KEYS = ["query_id", "product_id"]
D1, D2, D3, D4, D5, D6 = (f"2025-09-0{i}" for i in range(1, 7))
PROBS = load_scheme("taosr1").prob_columns
CHANGED = 5  # the row of night 2 whose title changed


def job_config(model: str, **overrides) -> NightlyConfig:
    return cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                       {"label.engine.model": model, "partitions": 2, "label.beta": 0.5, "reuse": "previous",
                        **overrides})


def table(path, run_date: str | None = None) -> pd.DataFrame:
    from deltalake import DeltaTable

    df = DeltaTable(str(path)).to_pandas()
    if run_date is not None:
        df = df[df["run_date"].astype(str) == run_date]
    return df.sort_values(KEYS).reset_index(drop=True)


def write(df: pd.DataFrame, path: Path) -> str:
    df.to_parquet(path, index=False)
    return str(path)


def assert_same_grades(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal rows but for run ids: keys, inputs and grade columns; probabilities to float noise."""
    assert not got[KEYS].duplicated().any()
    assert list(got[KEYS].itertuples(index=False)) == list(want[KEYS].itertuples(index=False))
    assert np.allclose(got[PROBS].to_numpy(), want[PROBS].to_numpy(), atol=1e-5)
    same = [c for c in want.columns if c not in (*PROBS, "score", "run_id", "graded_run_id", "run_date")]
    pd.testing.assert_frame_equal(got[same], want[same])
    assert np.allclose(got["score"], want["score"], atol=1e-4)


@pytest.fixture(scope="module")
def inputs(sample_df, tmp_path_factory):
    """Night 1: 60 pairs. Night 2: 50 of them (one with a new title) in another order, and 10 new."""
    root = tmp_path_factory.mktemp("incremental_inputs")
    cols = ["query_id", "query", "product_id", "product_title"]
    a = sample_df[cols].head(60).reset_index(drop=True)
    b = pd.concat([a.head(50), sample_df[cols].iloc[60:70]], ignore_index=True)
    b.loc[CHANGED, "product_title"] = b.loc[CHANGED, "product_title"] + " (new edition)"
    b = b.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return a, b, write(a, root / "a.parquet"), write(b, root / "b.parquet"), root


@pytest.fixture(scope="module")
def nights(spark, tiny_model, inputs, tmp_path_factory):
    """Night 1 and night 2 with reuse into one table; night 2's input fully graded into another."""
    a, b, src_a, src_b, _ = inputs
    root = tmp_path_factory.mktemp("incremental")
    out, full_out = root / "grades", root / "full"
    logs: list[str] = []
    first = run(spark, job_config(tiny_model), input=src_a, output=str(out), run_date=D1, log=logs.append)
    second = run(spark, job_config(tiny_model), input=src_b, output=str(out), run_date=D2, log=logs.append)
    full = run(spark, job_config(tiny_model, reuse="off"), input=src_b, output=str(full_out), run_date=D2)
    return out, full_out, first, second, full, logs


def test_incremental_run_equals_a_full_run(nights, inputs):
    from deltalake import DeltaTable

    out, full_out, first, second, full, logs = nights
    a, b, *_ = inputs
    assert first["reused"] == 0 and first["reuse"].startswith("full run: no fingerprint table")
    assert sum("warning: reuse previous: no fingerprint table" in line for line in logs) == 1
    assert first["fingerprints_added"] == first["graded"]
    got, want = table(out, D2), table(full_out, D2)
    assert_same_grades(got, want)
    # 49 unchanged pairs graded on night 1 were carried; the changed one and the new ones were graded
    unchanged = b.merge(a, on=[*KEYS, "query", "product_title"])
    carried = got[got["graded_run_id"] == first["run_id"]]
    assert len(carried) == second["reused"] == len(unchanged) - len(unchanged.merge(
        table(f"{out}_quarantine", D1)[KEYS], on=KEYS))
    assert second["reused"] >= 45 and second["graded"] == full["graded"] and second["quarantined"] == full["quarantined"]
    assert set(got["graded_run_id"]) == {first["run_id"], second["run_id"]} and (got["run_id"] == second["run_id"]).all()
    assert (want["graded_run_id"] == full["run_id"]).all() and full["reused"] == 0 and full["reuse"] == "off"
    assert second["reuse"].startswith(f"reused from {out}/_fingerprints version 0")
    assert second["fingerprints_added"] == second["graded"] - second["reused"]
    runs = DeltaTable(f"{out}_runs").to_pandas().sort_values("run_date")
    assert list(runs["reused"]) == [0, second["reused"]] and list(runs["graded"]) == [first["graded"], second["graded"]]
    fps = DeltaTable(f"{out}/_fingerprints").to_pandas()
    assert not fps["fingerprint"].duplicated().any() and fps["context"].nunique() == 1
    assert len(fps) == first["graded"] + second["fingerprints_added"]
    assert DeltaTable(f"{out}/_fingerprints").metadata().name == "taosr1_fingerprints"


def test_pair_whose_title_changed_is_regraded(nights, inputs):
    out, _, first, second, _, _ = nights
    a, b, *_ = inputs
    changed = b[b["product_title"].str.endswith(" (new edition)")]
    key = tuple(changed[KEYS].iloc[0])
    night1, night2 = table(out, D1).set_index(KEYS), table(out, D2).set_index(KEYS)
    assert night2.loc[key, "graded_run_id"] == second["run_id"]
    assert night2.loc[key, "product_title"].endswith(" (new edition)")
    assert night2.loc[key, "prompt_tokens"] > night1.loc[key, "prompt_tokens"]
    # an unchanged pair of the same query keeps night 1's grade, to the bit
    same = night2[(night2["graded_run_id"] == first["run_id"])].index[0]
    assert (night2.loc[same, PROBS].to_numpy() == night1.loc[same, PROBS].to_numpy()).all()


def test_changed_model_regrades_everything_and_a_copied_model_reuses(spark, tiny_model, nights, inputs,
                                                                     tmp_path_factory):
    from taosr1.labeling.tiny import build_tiny_model

    out, _, _, second, _, _ = nights
    _, _, _, src_b, _ = inputs
    root = tmp_path_factory.mktemp("models")
    other = str(build_tiny_model(root / "other", seed=1))  # same tokenizer, other weights
    logs: list[str] = []
    retrained = run(spark, job_config(other), input=src_b, output=str(out), run_date=D3, log=logs.append)
    assert retrained["reused"] == 0 and retrained["graded"] == second["graded"]
    assert "no fingerprints of this grading context" in retrained["reuse"]
    assert (table(out, D3)["graded_run_id"] == retrained["run_id"]).all()
    # the same files under another folder name: the same fingerprints
    copy = root / "renamed-copy"
    shutil.copytree(tiny_model, copy)
    copied = run(spark, job_config(str(copy)), input=src_b, output=str(out), run_date=D4)
    assert copied["reused"] == copied["graded"] == second["graded"]
    assert (table(out, D4)["model"] == "renamed-copy").all()
    # another beta is another grading context
    beta = run(spark, job_config(tiny_model, **{"label.beta": 0.4}), input=src_b, output=str(out), run_date=D4)
    assert beta["reused"] == 0 and (table(out, D4)["beta"] == 0.4).all()


def test_rerun_of_a_date_stays_exactly_once(spark, tiny_model, nights, inputs):
    from deltalake import DeltaTable

    out, full_out, first, second, _, _ = nights
    _, _, _, src_b, _ = inputs
    before = table(out, D2)
    n_fps = len(DeltaTable(f"{out}/_fingerprints").to_pandas())
    again = run(spark, job_config(tiny_model), input=src_b, output=str(out), run_date=D2)
    after = table(out, D2)
    assert len(after) == len(before) == again["graded"] and not after[KEYS].duplicated().any()
    assert again["reused"] == again["graded"] and again["fingerprints_added"] == 0  # all graded by earlier runs
    assert set(after["graded_run_id"]) <= {first["run_id"], second["run_id"]}
    assert_same_grades(after, table(full_out, D2))
    assert len(DeltaTable(f"{out}/_fingerprints").to_pandas()) == n_fps
    assert not (out / "_staging").exists() and not (out / "_fingerprints" / "_staging").exists()


def test_resumed_run_reuses_what_its_first_attempt_read(spark, tiny_model, nights, inputs, sample_df):
    """A run dies with most partitions staged; another date commits new fingerprints meanwhile;
    the resumed run reads the fingerprint version its first attempt read: every row once."""
    out, _, _, second, _, _ = nights
    _, b, _, _, root = inputs
    c = pd.concat([b, sample_df[["query_id", "query", "product_id", "product_title"]].iloc[70:90]],
                  ignore_index=True)
    src_c = write(c, root / "c.parquet")
    cfg = job_config(tiny_model, partitions=3)
    with pytest.raises(Exception, match="injected fault: partition 1 fails"):
        run(spark, job_config(tiny_model, partitions=3, **{"fault.fail_partition": 1}), input=src_c,
            output=str(out), run_date=D5, run_id="dies")
    other = run(spark, cfg, input=src_c, output=str(out), run_date=D6)  # grades the 20 new pairs, commits them
    assert other["fingerprints_added"] > 0
    resumed = run(spark, cfg, input=src_c, output=str(out), run_date=D5, run_id="dies", resume=True)
    got = table(out, D5)
    assert resumed["rows_in"] == len(c) == resumed["graded"] + resumed["quarantined"] == len(got) + resumed["quarantined"]
    assert not got[KEYS].duplicated().any() and resumed["resumed_rows"] > 0
    assert resumed["reused"] == second["graded"]  # what night 2 left, not the 20 pairs committed since
    new = got.merge(c.iloc[len(b):][KEYS], on=KEYS)
    assert len(new) > 0 and (new["graded_run_id"] == "dies").all()
    assert_same_grades(got, table(out, D6))


def test_cli_reuse_previous_with_a_shared_fingerprint_table(tiny_model, nights, inputs, tmp_path):
    """`taosr1 nightly --reuse previous --fingerprints TABLE`: another grades table reuses the
    fingerprints of the first one's runs."""
    import json

    from click.testing import CliRunner

    from taosr1.cli.main import main

    out, _, _, second, _, _ = nights
    _, _, _, src_b, _ = inputs
    args = ["nightly", "--input", src_b, "--output", str(tmp_path / "other"), "--run-date", D2, "--model", tiny_model,
            "--beta", "0.5", "--partitions", "2", "--reuse", "previous", "--fingerprints", str(out / "_fingerprints")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout.strip().splitlines()[-1])
    assert record["reused"] == record["graded"] == second["graded"] and record["fingerprints_added"] == 0


CORRUPTIONS = ["log", "data", "foreign", "folder"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_bad_fingerprint_table_means_a_full_run_with_one_warning(spark, tiny_model, nights, inputs, tmp_path, how):
    from deltalake import DeltaTable, write_deltalake

    src_out, _, _, _, _, _ = nights
    _, _, _, src_b, _ = inputs
    out = tmp_path / "grades"
    shutil.copytree(src_out, out)
    fp = out / "_fingerprints"
    if how == "log":
        (fp / "_delta_log" / "00000000000000000000.json").write_text("{not json\n")
    elif how == "data":
        for f in fp.rglob("*.parquet"):
            f.write_bytes(f.read_bytes()[:200])
    elif how == "foreign":
        shutil.rmtree(fp)
        write_deltalake(str(fp), pd.DataFrame({"fingerprint": ["x"], "grade": [1]}))
    else:
        shutil.rmtree(fp)
        fp.mkdir()
        (fp / "notes.txt").write_text("someone else's folder")
    files = sorted((p.relative_to(fp), p.stat().st_size) for p in fp.rglob("*") if p.is_file())
    logs: list[str] = []
    rec = run(spark, job_config(tiny_model), input=src_b, output=str(out), run_date=D2, log=logs.append)
    warnings = [line for line in logs if line.startswith("warning:")]
    assert len(warnings) == 1 and "grading every row" in warnings[0] and "\n" not in warnings[0]
    assert rec["reused"] == 0 and rec["reuse"].startswith("full run:") and rec["fingerprints_added"] == 0
    says = {"log": "unreadable", "data": "unreadable", "foreign": "not a taosr1 fingerprint table",
            "folder": "no Delta table"}[how]
    assert says in warnings[0] and "not written" in warnings[0]
    got = table(out, D2)
    assert (got["graded_run_id"] == rec["run_id"]).all() and len(got) == rec["graded"]
    assert_same_grades(got, table(src_out.parent / "full", D2))
    # the table that was there is left as it was: never written over
    assert sorted((p.relative_to(fp), p.stat().st_size) for p in fp.rglob("*") if p.is_file()) == files
    if how == "foreign":
        assert DeltaTable(str(fp)).to_pandas()["fingerprint"].tolist() == ["x"]


# ---------------------------------------------------------------- fingerprints and config

def test_model_fingerprint_is_by_content_not_folder(tiny_model, tmp_path, monkeypatch):
    from taosr1.labeling.fingerprint import CACHE_FILE, model_fingerprint

    monkeypatch.setenv("TAOSR1_CACHE", str(tmp_path / "cache"))
    base = model_fingerprint(tiny_model)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert model_fingerprint(copy) == base
    assert (tmp_path / "cache" / CACHE_FILE).is_file()  # per-file digests cached per folder
    (copy / "taosr1_calibration.json").write_text('{"taosr1": {"beta": 0.3}}')  # beta is hashed on its own
    assert model_fingerprint(copy) == base
    w = copy / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1  # one bit of one weight, same size
    w.write_bytes(bytes(data))
    assert model_fingerprint(copy) != base


def test_spark_fingerprint_matches_the_python_definition(spark):
    from taosr1.labeling.fingerprint import fingerprint_column, row_fingerprint

    rows = [("fan", "Bath fan", None), ("fan", "Bath fan", ""), ("茶杯 ☕", 'say "hi"\n\\', "x"), ("a", "b,c", None)]
    df = spark.createDataFrame(rows, "q string, t string, d string")
    got = [r["fp"] for r in df.select(fingerprint_column(
        "ctx", {"query": "q", "title": "t", "description": "d"}).alias("fp")).collect()]
    assert got == [row_fingerprint("ctx", {"query": q, "title": t, "description": d}) for q, t, d in rows]
    assert len(set(got)) == 4  # a null field and an empty one differ


def test_reuse_config_key():
    assert cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml").reuse == "off"
    assert cfgmod.load(NightlyConfig, None, {"reuse": False}).reuse == "off"  # `--set reuse=off` in YAML 1.1
    with pytest.raises(ConfigError, match="reuse must be one of"):
        cfgmod.load(NightlyConfig, None, {"reuse": "always"})
