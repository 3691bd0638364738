"""Table contracts (schemas/), the nightly job's configs (conf/nightly.yaml, conf/spark/), GPU discovery."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from taosr1.core import config as cfgmod
from taosr1.core.config import ConfigError
from taosr1.core.resources import conf_dir, schemas_dir
from taosr1.core.validate import ColumnConfig
from taosr1.labeling.labeler import LabelConfig
from taosr1.nightly.job import NightlyConfig, parse_run_date
from taosr1.storage.contracts import OUTPUTS, ContractError, arrow_schema, check_input, output_contract, reserved_names

SAMPLE = [("query_id", "string"), ("query", "string"), ("product_id", "string"), ("product_title", "string"),
          ("esci_label", "string"), ("source", "string")]


def test_sample_columns_meet_the_input_contract():
    check_input(SAMPLE, ColumnConfig(), reserved=reserved_names(["Excellent"]))
    check_input([("query_id", "long"), ("product_id", "integer"), ("query", "string"), ("product_title", "string"),
                 ("product_brand", "string")], ColumnConfig())


def test_contract_error_names_each_column_expected_and_found():
    found = [("query_id", "string"), ("product_id", "double"), ("product_title", "long"), ("product_brand", "array"),
             ("label", "string")]
    with pytest.raises(ContractError) as err:
        check_input(found, ColumnConfig(), source="in.parquet", reserved=reserved_names(["Excellent"]))
    msg = str(err.value)
    assert msg.startswith("in.parquet does not meet the input contract query_product")
    assert "column 'product_id' (keys): expected string or long or integer, found double" in msg
    assert "column 'query' (query): expected string, found no such column" in msg
    assert "column 'product_title' (title): expected string, found long" in msg
    assert "column 'product_brand' (brand): expected string, found array" in msg
    assert "column 'label': the job writes a column of that name" in msg
    assert "column 'query_id'" not in msg  # a good column is not named
    assert "nothing was written" in msg


def test_column_mapping_applies_to_the_contract():
    cols = ColumnConfig(keys=["qid", "pid"], query="q", title="t")
    check_input([("qid", "string"), ("pid", "long"), ("q", "string"), ("t", "string")], cols)
    with pytest.raises(ContractError, match="column 'pid' \\(keys\\): expected string or long or integer, found no such column"):
        check_input([("qid", "string"), ("q", "string"), ("t", "string")], cols)


def test_output_contracts_expand_per_label_columns_and_have_known_types():
    grades = output_contract("grades").added_columns(["Excellent", "Irrelevant"])
    names = [c.name for c in grades]
    assert names[:4] == ["grade", "label", "tier", "score"]
    assert names[4:6] == ["p_Excellent", "p_Irrelevant"] and names[-3:] == ["run_id", "graded_run_id", "run_date"]
    for name in OUTPUTS:
        contract = output_contract(name)
        arrow_schema(contract.added_columns(["A"]))  # every type maps to Arrow
        assert contract.partition_by == [c.name for c in contract.columns if c.partition]
    assert {p.name for p in schemas_dir().glob("*.json")} == {"query_product.json", *(f"{n}.json" for n in OUTPUTS)}


def test_runs_contract_records_the_table_versions_and_the_alert_verdict():
    cols = {c.name: c for c in output_contract("runs").columns}
    for name, typ, nullable in [("grades_version", "long", False), ("quarantine_version", "long", False),
                                ("status", "string", False), ("quarantine_share", "double", False),
                                ("grade_psi", "double", True), ("previous_run_id", "string", True),
                                ("alerts", "string", False)]:
        assert (cols[name].type, cols[name].nullable) == (typ, nullable), name
    assert "alerted" in cols["status"].description
    schema = arrow_schema(output_contract("runs").added_columns())
    assert not schema.field("alerts").nullable and schema.field("grade_psi").nullable


def test_runs_table_written_before_the_alert_columns_takes_rows_with_them(tmp_path):
    """An existing runs table gets the new columns on the next append (older rows: null)."""
    import datetime as dt

    import pyarrow as pa
    from deltalake import DeltaTable

    from taosr1.storage import delta

    table = tmp_path / "grades_runs"
    delta.append_rows(table, pa.table({"run_id": ["old"], "run_date": [dt.date(2025, 1, 1)]}))
    delta.append_rows(table, pa.table({"run_id": ["new"], "run_date": [dt.date(2025, 1, 2)], "alerts": ["x"],
                                       "grade_psi": pa.array([None], pa.float64())}))
    df = DeltaTable(str(table)).to_pandas().set_index("run_id")
    assert df.loc["new", "alerts"] == "x" and df.loc["old", "alerts"] is None and len(df) == 2


def test_nightly_config_loads_and_rejects_unknown_keys(tmp_path):
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml")
    # the nightly label section and conf/label.yaml agree on every labeling default
    assert cfg.label == cfgmod.load(LabelConfig, conf_dir() / "label.yaml")
    assert cfg.spark_profile == "local" and cfg.writer == "auto"
    over = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml", {"label.engine.dtype": "bfloat16", "partitions": 8})
    assert over.label.engine.dtype == "bfloat16" and over.partitions == 8
    with pytest.raises(ConfigError, match="unknown key\\(s\\) \\['partition'\\]"):
        cfgmod.load(NightlyConfig, None, {"partition": 3})
    with pytest.raises(ConfigError, match="unknown key\\(s\\) \\['modle'\\]"):
        cfgmod.load(NightlyConfig, None, {"label.engine.modle": "x"})
    with pytest.raises(ConfigError, match="writer must be one of"):
        cfgmod.load(NightlyConfig, None, {"writer": "hive"})
    with pytest.raises(ConfigError, match="not a date in the form YYYY-MM-DD"):
        parse_run_date("2025-13-01")


@pytest.mark.parametrize("name", ["local", "gpu"])
def test_spark_profiles_load(name):
    from taosr1.spark.session import load_profile

    profile = load_profile(name)
    assert profile.conf["spark.python.worker.reuse"] is True and profile.conf["spark.speculation"] is False
    if name == "gpu":
        assert profile.conf["spark.executor.resource.gpu.amount"] == 1
        assert profile.conf["spark.task.resource.gpu.amount"] == 1
        assert profile.conf["spark.executor.resource.gpu.discoveryScript"].endswith("gpu_discovery.sh")


def test_spark_profile_rejects_unknown_and_non_spark_keys(tmp_path):
    from taosr1.spark.session import load_profile

    bad = tmp_path / "bad.yaml"
    bad.write_text("master: local[1]\nexecutors: 2\n")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) \\['executors'\\]"):
        load_profile(bad)
    bad.write_text("conf:\n  executor.memory: 2g\n")
    with pytest.raises(ConfigError, match="must start with 'spark.'"):
        load_profile(bad)


def test_gpu_discovery_script(tmp_path):
    script = conf_dir() / "spark" / "gpu_discovery.sh"
    fake = tmp_path / "bin"
    fake.mkdir()
    # nvidia-smi is not on this machine: a stand-in prints what the real one prints for two GPUs
    (fake / "nvidia-smi").write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:/usr/bin:/bin"}
    out = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"name": "gpu", "addresses": ["0", "1"]}
    res = subprocess.run([str(script)], env={**os.environ, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert res.returncode != 0 and "nvidia-smi not found" in res.stderr
