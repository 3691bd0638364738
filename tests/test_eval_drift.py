"""`taosr1 drift` on a real partitioned Delta table of grades: flags a shift, not an identical night."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from deltalake import write_deltalake

from taosr1.cli.main import main
from taosr1.core import config
from taosr1.core.cumpt import grade_rows
from taosr1.core.labels import load_scheme
from taosr1.core.resources import conf_dir
from taosr1.evaluation.config import DriftConfig, EvalConfig, load_eval_config
from taosr1.evaluation.drift import psi

S = load_scheme("taosr1")


def night(run_date, probs, n_pairs=400):
    g = grade_rows(probs, S, 0.5)
    df = pd.DataFrame({"query_id": [f"q{i // 5}" for i in range(n_pairs)], "product_id": [f"p{i}" for i in range(n_pairs)],
                       **g, **{c: probs[:, j] for j, c in enumerate(S.prob_columns)}})
    df["label_scheme"], df["run_date"] = S.name, run_date
    return df


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rng = np.random.default_rng(0)
    base = rng.dirichlet([2, 1, 1, 2], size=400)
    path = str(tmp_path_factory.mktemp("grades") / "grades")
    write_deltalake(path, night("2025-06-01", base), partition_by=["run_date"])
    write_deltalake(path, night("2025-06-02", base), partition_by=["run_date"], mode="append")  # same grades
    shifted = base.copy()
    shifted[:120] = rng.dirichlet([1, 1, 1, 8], size=120)  # 30% of pairs pushed towards Irrelevant
    write_deltalake(path, night("2025-06-03", shifted), partition_by=["run_date"], mode="append")
    return path


def drift(*args):
    return CliRunner().invoke(main, ["drift", *args], catch_exceptions=False)


def test_eval_yaml_loads_with_the_dataclass_defaults():
    assert config.load(EvalConfig, conf_dir() / "eval.yaml") == EvalConfig() == load_eval_config()
    with pytest.raises(config.ConfigError, match=r"drift: unknown key\(s\) \['psi'\]"):
        load_eval_config(None, {"drift.psi": 0.1})
    with pytest.raises(config.ConfigError, match="changed_share_threshold is a share"):
        DriftConfig(changed_share_threshold=5)


def test_psi_by_hand():
    total, terms = psi([50, 50], [25, 75])
    assert total == pytest.approx((0.25 - 0.5) * np.log(0.5) + (0.75 - 0.5) * np.log(1.5))
    assert psi([1, 2, 3], [1, 2, 3])[0] == 0
    assert np.isfinite(psi([10, 0], [5, 5])[0])  # an empty category is floored, not infinite


def test_identical_night_is_not_drift(table):
    r = drift("--table", table, "--run-date", "2025-06-02")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("no drift in") and "against 2025-06-01" in r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["grade_psi"] == 0 and out["tier_psi"] == 0 and out["changed_share"] == 0 and out["drifted"] is False
    assert out["pairs_in_both"] == 400


def test_shifted_night_is_flagged_plainly(table, tmp_path):
    r = drift("--table", table, "--run-date", "2025-06-03", "--out", str(tmp_path / "rep"))
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[0]
    assert first.startswith("DRIFT in") and "against 2025-06-02" in first
    assert "changed grade" in first and "grade PSI" in first
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["drifted"] and out["grade_psi"] > 0.2 and out["changed_share"] > 0.1
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    irr = next(x for x in m["labels"] if x["label"] == "Irrelevant")
    assert irr["share_current"] > irr["share_previous"]
    assert sum(map(sum, m["transitions"]["matrix"])) == 400
    assert (tmp_path / "rep" / "figures" / "grades.png").is_file()
    r = drift("--table", table, "--run-date", "2025-06-03", "--fail-on-drift")
    assert r.exit_code == 3
    # thresholds come from the config: loose enough, the same night passes
    r = drift("--table", table, "--run-date", "2025-06-03", "--set", "drift.psi_threshold=5", "--set",
              "drift.score_psi_threshold=5", "--set", "drift.changed_share_threshold=0.9")
    assert r.output.startswith("no drift")
    r = drift("--table", table, "--run-date", "2025-06-03", "--previous", "2025-06-01")
    assert "against 2025-06-01" in r.output


def test_first_run_and_unknown_dates(table):
    r = drift("--table", table, "--run-date", "2025-06-01")
    assert r.exit_code == 0 and "nothing to compare (first run)" in r.output
    r = drift("--table", table, "--run-date", "2025-07-01")
    assert r.exit_code == 2 and "no run_date '2025-07-01'" in r.output and "2025-06-03" in r.output
    r = drift("--table", table, "--run-date", "2025-06-02", "--key-col", "pair_id")
    assert r.exit_code == 2 and "['pair_id'] not found" in r.output
