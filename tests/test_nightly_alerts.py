"""Alerts of the nightly job: over a threshold the run is committed, recorded as alerted, and the
job exits 3 with one line. `taosr1 runs` lists what the runs table holds. Spark local mode (the
shared session, so `taosr1 nightly` runs in-process), real Delta tables, the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import taosr1
from taosr1.cli.main import main
from taosr1.core import config as cfgmod
from taosr1.core.config import ConfigError
from taosr1.core.labels import load_scheme
from taosr1.nightly.alerts import ALERT_EXIT, AlertConfig, label_psi
from taosr1.nightly.job import NightlyConfig

D1, D2 = "2025-10-01", "2025-10-02"


def test_alert_thresholds_are_checked():
    with pytest.raises(ConfigError, match="max_quarantine_share is a share"):
        AlertConfig(max_quarantine_share=1.5)
    with pytest.raises(ConfigError, match="max_psi must be >= 0"):
        AlertConfig(max_psi=-0.1)
    assert cfgmod.load(NightlyConfig, None, {"alert.max_psi": 0.25}).alert.max_psi == 0.25
    with pytest.raises(ConfigError, match="max_share"):
        cfgmod.load(NightlyConfig, None, {"alert.max_share": 0.1})


def test_label_psi_is_the_population_stability_index():
    names = ["a", "b", "c"]
    prev = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    cur = pd.Series(["a"] * 20 + ["b"] * 30 + ["c"] * 50)
    e, a = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    assert label_psi(prev, cur, names) == pytest.approx(float(((a - e) * np.log(a / e)).sum()))
    assert label_psi(prev, prev.sample(frac=1, random_state=0), names) == 0
    assert label_psi(prev, cur.iloc[:0], names) is None


def nightly(src, out, date, *extra):
    return CliRunner().invoke(main, ["nightly", "--input", str(src), "--output", str(out), "--run-date", date,
                                     *extra])


def test_quarantine_share_and_psi_alert_after_the_commit(spark, tiny_model, sample_df, tmp_path):
    out = tmp_path / "grades"
    first, second = tmp_path / "d1.parquet", tmp_path / "d2.parquet"
    sample_df.head(30).to_parquet(first, index=False)
    bad = sample_df.iloc[30:60].copy()
    bad.iloc[:12, bad.columns.get_loc("product_title")] = ""  # 12 of 30 rows quarantined: 40%
    bad.to_parquet(second, index=False)
    common = ["--model", tiny_model, "--partitions", "2"]
    shifted = [*common, "--beta", "0.95"]  # night 2 tiers deeper: another label mix than night 1's

    res = nightly(first, out, D1, *common, "--beta", "0.5", "--max-quarantine-share", "0.2", "--max-psi", "0")
    assert res.exit_code == 0, res.output  # no previous night: no PSI, nothing to alert on
    rec1 = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec1["status"] == "succeeded" and rec1["alerts"] == "" and rec1["grade_psi"] is None
    assert rec1["quarantine_share"] == 0

    res = nightly(second, out, D2, *shifted, "--max-quarantine-share", "0.2", "--max-psi", "0")
    assert res.exit_code == ALERT_EXIT, res.output
    rec2 = json.loads(res.stdout.strip().splitlines()[-1])
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"ALERT run {rec2['run_id']} ({D2}): quarantined 40.0% of 30 rows > max_quarantine_share 0.2")
    assert "the run is committed" in line
    # the data is kept: the alerted run is the date's committed view
    view = taosr1.read_run(str(out), D2)
    assert view["run"]["run_id"] == rec2["run_id"] and view["run"]["status"] == "alerted"
    assert len(view["grades"]) == 18 and len(view["quarantine"]) == 12
    # PSI against the previous night, computed here from the two committed runs' labels
    names = load_scheme("taosr1").names
    e = taosr1.read_grades(str(out), D1)["label"].value_counts(normalize=True).reindex(names, fill_value=0)
    a = view["grades"]["label"].value_counts(normalize=True).reindex(names, fill_value=0)
    e, a = np.maximum(e.to_numpy(), 1e-4), np.maximum(a.to_numpy(), 1e-4)
    want = float(((a - e) * np.log(a / e)).sum())
    assert rec2["grade_psi"] == pytest.approx(want, abs=1e-5) and rec2["previous_run_id"] == rec1["run_id"]
    assert want > 0.1  # the check fires at max_psi 0
    assert f"label PSI {want:.3f} against {D1} (run {rec1['run_id']}) > max_psi 0" in line

    # a threshold above the measured PSI does not alert on drift
    res = nightly(second, out, D2, *shifted, "--max-psi", str(round(want + 0.01, 3)))
    assert res.exit_code == 0, res.output
    rec3 = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec3["status"] == "succeeded" and rec3["grade_psi"] == pytest.approx(want, abs=1e-5)

    res = CliRunner().invoke(main, ["runs", "--output", str(out), "--json"])
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["run_id"] for r in rows] == [rec3["run_id"], rec2["run_id"], rec1["run_id"]]
    assert [r["status"] for r in rows] == ["succeeded", "alerted", "succeeded"]
    assert [r["current"] for r in rows] == [True, False, True]
    assert rows[1]["quarantine_share"] == pytest.approx(0.4) and rows[1]["quarantined"] == 12
    assert rows[1]["alerts"].startswith("quarantined 40.0%")
    table = CliRunner().invoke(main, ["runs", "--output", str(out), "--date", D2])
    assert table.exit_code == 0 and "alerted" in table.stdout and "40.0%" in table.stdout
    lines = table.stdout.strip().splitlines()  # a header and D2's two runs, newest first
    assert len(lines) == 3 and lines[1].split()[:3] == [D2, rec3["run_id"], "succeeded"]
    missing = CliRunner().invoke(main, ["runs", "--output", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no run has committed there yet" in missing.stderr
