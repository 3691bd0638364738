"""Every shipped config loads; unknown keys and bad values fail before any work."""

import pytest

from taosr1.core import config
from taosr1.core.config import ConfigError
from taosr1.core.labels import load_scheme
from taosr1.core.resources import conf_dir
from taosr1.labeling.labeler import LabelConfig


def test_label_yaml_loads_with_defaults_matching_the_dataclass():
    cfg = config.load(LabelConfig, conf_dir() / "label.yaml")
    assert cfg == LabelConfig()


def test_every_label_scheme_in_conf_loads():
    files = sorted((conf_dir() / "labels").glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        assert len(load_scheme(f).labels) >= 2


def test_unknown_keys_are_rejected_with_the_valid_ones(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("labels: taosr1\nbetta: 0.4\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['betta'\].*valid keys are"):
        config.load(LabelConfig, p)
    p.write_text("engine:\n  dtyp: float32\n")
    with pytest.raises(ConfigError, match=r"engine: unknown key\(s\) \['dtyp'\]"):
        config.load(LabelConfig, p)


def test_dotted_overrides_reach_into_sections():
    cfg = config.load(LabelConfig, None, config.parse_overrides(["engine.dtype=bfloat16", "beta=0.3", "columns.keys=[a, b]"]))
    assert cfg.engine.dtype == "bfloat16" and cfg.beta == 0.3 and cfg.columns.keys == ["a", "b"]
    with pytest.raises(ConfigError, match="not key=value"):
        config.parse_overrides(["beta"])


def test_bad_values_fail_clearly():
    with pytest.raises(ConfigError, match="engine must be one of"):
        config.load(LabelConfig, None, {"engine.engine": "onnx"})
    with pytest.raises(ConfigError, match="beta"):
        config.load(LabelConfig, None, {"beta": 0})
