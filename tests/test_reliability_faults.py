"""Bad configs and models fail before any work; failures in flight lose nothing.

Spark local mode with task retries (`local[2,2]`, tests/conftest.py), real Delta tables,
the tiny model. Fault injection: NightlyConfig.fault (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taosr1.core import config as cfgmod
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptConfig
from taosr1.core.resources import conf_dir
from taosr1.core.validate import ColumnConfig
from taosr1.labeling.labeler import Labeler, label_frame
from taosr1.nightly.job import NightlyConfig, run

REPO = Path(__file__).resolve().parent.parent
KEYS = ["query_id", "product_id"]
D1, D2 = "2025-08-01", "2025-08-02"


def job_config(tiny_model: str, **overrides) -> NightlyConfig:
    return cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                       {"label.engine.model": tiny_model, "partitions": 2, "label.beta": 0.5, **overrides})


def table(path) -> pd.DataFrame:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pandas().sort_values(KEYS).reset_index(drop=True)


def write_input(df: pd.DataFrame, path: Path) -> str:
    df.to_parquet(path, index=False)
    return str(path)


def cli_grades(tiny_engine, df: pd.DataFrame) -> pd.DataFrame:
    labeler = Labeler(tiny_engine, load_scheme("taosr1"), PromptConfig(), beta=0.5)
    return label_frame(df, labeler, ColumnConfig()).graded.sort_values(KEYS).reset_index(drop=True)


def assert_same_grades(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert not got[KEYS].duplicated().any()
    assert list(got[KEYS].itertuples(index=False)) == list(want[KEYS].itertuples(index=False))
    cols = load_scheme("taosr1").prob_columns
    assert np.allclose(got[cols].to_numpy(), want[cols].to_numpy(), atol=1e-5)


# ---------------------------------------------------------------- bad configuration and models

@pytest.fixture(scope="module")
def bad_models(tiny_model, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad_models")
    truncated = root / "truncated"
    shutil.copytree(tiny_model, truncated)
    w = truncated / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    wrong = root / "wrong_kind"
    shutil.copytree(tiny_model, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["architectures"] = ["BertForMaskedLM"]
    (wrong / "config.json").write_text(json.dumps(cfg))
    collide = root / "collide.yaml"
    collide.write_text("name: collide\nlabels:\n"
                       "  - {name: Good, grade: 2, token: 'A', tier: Good}\n"
                       "  - {name: Bad, grade: 1, token: 'A', tier: Bad}\n")
    return {"missing": str(root / "no_such_model"), "truncated": str(truncated), "wrong_kind": str(wrong),
            "file": str(w), "collide": str(collide)}


BAD_CONFIGS = [
    # (name, label-command args, nightly-command args, what the message must say)
    ("unknown_key", ["--set", "bogus_key=1"], ["--set", "label.bogus_key=1"], "bogus_key"),
    ("unknown_section_key", ["--set", "engine.treads=2"], ["--set", "label.engine.treads=2"], "treads"),
    ("beta_above_1", ["--beta", "1.5"], ["--beta", "1.5"], "beta must be in (0, 1]"),
    ("beta_zero", ["--beta", "0"], ["--beta", "0"], "beta must be in (0, 1]"),
    ("colliding_label_tokens", ["--labels", "{collide}"], ["--labels", "{collide}"], "must be distinct"),
    ("model_missing", ["--model", "{missing}"], ["--model", "{missing}"], "does not exist"),
    ("model_truncated", ["--model", "{truncated}"], ["--model", "{truncated}"], "truncated"),
    ("model_wrong_kind", ["--model", "{wrong_kind}"], ["--model", "{wrong_kind}"], "causal language model"),
    ("model_is_a_file", ["--model", "{file}"], ["--model", "{file}"], "is a file"),
]


@pytest.mark.parametrize("name,label_args,nightly_args,says", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_or_model_fails_before_work(spark, tiny_model, sample_df, bad_models, tmp_path, name,
                                               label_args, nightly_args, says):
    from click.testing import CliRunner

    from taosr1.cli.main import main

    src = tmp_path / "pairs.csv"
    sample_df.head(10).to_csv(src, index=False)
    fill = [a.format(**bad_models) for a in label_args]
    model = [] if "--model" in fill else ["--model", tiny_model]
    res = CliRunner().invoke(main, ["label", str(src), str(tmp_path / "out.csv"), *model, *fill])
    assert res.exit_code == 2 and says in res.output, res.output
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.quarantine.csv").exists()

    fill = [a.format(**bad_models) for a in nightly_args]
    model = [] if "--model" in fill else ["--model", tiny_model]
    out = tmp_path / "grades"
    res = CliRunner().invoke(main, ["nightly", "--input", str(src), "--output", str(out), "--run-date", D1,
                                    *model, *fill])
    assert res.exit_code == 2 and says in res.output, res.output
    assert not out.exists() and not Path(f"{out}_quarantine").exists() and not Path(f"{out}_runs").exists()


def test_fault_config_keys_are_checked(tiny_model):
    with pytest.raises(cfgmod.ConfigError, match="fail_bach"):
        job_config(tiny_model, **{"fault.fail_bach": 2})


# ---------------------------------------------------------------- failures in flight

def test_task_failing_mid_partition_is_retried_and_rows_land_once(spark, tiny_model, tiny_engine, sample_df, tmp_path):
    df = sample_df.head(40)
    src = write_input(df, tmp_path / "in.parquet")
    out = tmp_path / "grades"
    # 4-row Arrow batches: each partition has several; the 2nd batch of every first attempt raises
    cfg = job_config(tiny_model, **{"fault.fail_batch": 2, "label.chunk_rows": 4, "keep_staging": True})
    record = run(spark, cfg, input=src, output=str(out), run_date=D1, run_id="retry-run")
    assert record["rows_in"] == 40 == record["graded"] + record["quarantined"]
    markers = [json.loads(p.read_text()) for p in (out / "_staging" / "retry-run" / "_done").glob("*.json")]
    assert len(markers) == 2 and all(m["attempt"] == 1 for m in markers)  # each partition failed once, then staged
    graded = table(out)
    assert len(graded) == record["graded"]
    assert_same_grades(graded, cli_grades(tiny_engine, df))


def test_run_killed_before_commit_leaves_table_as_it_was_and_resume_completes(spark, tiny_model, tiny_engine,
                                                                             sample_df, tmp_path):
    from deltalake import DeltaTable

    out = tmp_path / "grades"
    old, new = sample_df.head(20), sample_df.iloc[20:50]
    run(spark, job_config(tiny_model), input=write_input(old, tmp_path / "old.parquet"), output=str(out), run_date=D1)
    version, before = DeltaTable(str(out)).version(), table(out)
    src = write_input(new, tmp_path / "new.parquet")
    cmd = [sys.executable, "-c", "from taosr1.cli.main import main; main()", "nightly", "--input", src, "--output", str(out),
           "--run-date", D1, "--model", tiny_model, "--beta", "0.5", "--partitions", "2",
           "--set", "fault.die_before_commit=true"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYSPARK_PYTHON": sys.executable}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 137, res.stderr[-2000:]
    # readers see the table as it was: same version, same rows; the run's files are only staged
    assert DeltaTable(str(out)).version() == version
    pd.testing.assert_frame_equal(table(out), before)
    assert len(DeltaTable(f"{out}_runs").to_pandas()) == 1
    (staged,) = [p.name for p in (out / "_staging").iterdir()]

    record = run(spark, job_config(tiny_model), input=src, output=str(out), run_date=D1, run_id=staged, resume=True)
    assert record["resumed_rows"] == record["graded"] == len(new)  # everything was staged: nothing graded again
    assert DeltaTable(str(out)).version() == version + 1
    assert_same_grades(table(out), cli_grades(tiny_engine, new))
    assert not (out / "_staging").exists()


def test_resume_reuses_finished_partitions(spark, tiny_model, tiny_engine, sample_df, tmp_path):
    from taosr1.core.config import ConfigError
    from taosr1.spark.dispatch import staged_partitions

    df = sample_df.head(60)
    src = write_input(df, tmp_path / "in.parquet")
    out = tmp_path / "grades"
    cfg = job_config(tiny_model, partitions=3)
    with pytest.raises(Exception, match="injected fault: partition 1 fails"):
        run(spark, job_config(tiny_model, partitions=3, **{"fault.fail_partition": 1}), input=src, output=str(out),
            run_date=D2, run_id="dies")
    assert not (out / "_delta_log").exists()  # nothing committed
    done = staged_partitions(out / "_staging" / "dies")
    assert sorted(done) == [0, 2] and sum(done.values()) > 0

    with pytest.raises(ConfigError, match="cannot resume run dies"):  # another config: refused, nothing graded
        run(spark, job_config(tiny_model, partitions=3, **{"label.beta": 0.4}), input=src, output=str(out),
            run_date=D2, run_id="dies", resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        run(spark, cfg, input=src, output=str(out), run_date=D2, run_id="never-ran", resume=True)

    record = run(spark, cfg, input=src, output=str(out), run_date=D2, run_id="dies", resume=True)
    saved = record["resumed_rows"]
    assert saved == sum(done.values()) and 0 < saved < record["graded"]
    print(f"\nresume saved {saved} of {record['graded']} rows ({saved / record['graded']:.0%}) from regrading")
    assert record["rows_in"] == 60 == record["graded"] + record["quarantined"]
    assert_same_grades(table(out), cli_grades(tiny_engine, df))
