import pytest

from taosr1.core.config import ConfigError
from taosr1.core.labels import load_scheme, scheme_from_dict
from taosr1.labeling.models import load_tokenizer


def test_default_and_esci_schemes_load_best_first():
    t = load_scheme("taosr1")
    assert t.grades == [4, 3, 2, 1]
    assert [lab.tier for lab in t.labels] == ["Good", "Good", "Mid", "Bad"]
    assert t.tiers == ["Good", "Mid", "Bad"]
    e = load_scheme("esci")
    assert e.names == ["E", "S", "C", "I"] and e.grades == [4, 3, 2, 1]
    assert e.prob_columns == ["p_E", "p_S", "p_C", "p_I"]


def test_gold_labels_parse_in_any_spelling():
    t = load_scheme("taosr1")
    assert t.parse("E").name == "Excellent"
    assert t.parse(" excellent ").grade == 4
    assert t.parse(2).name == "Mismatch"
    assert t.parse(1.0).name == "Irrelevant"
    assert t.parse("nonsense") is None and t.parse(None) is None and t.parse(float("nan")) is None


def test_token_check_names_label_split_into_several_tokens(tiny_model):
    tok = load_tokenizer(tiny_model)
    bad = scheme_from_dict({"name": "bad", "labels": [
        {"name": "Good", "grade": 2, "token": "Absolutely-perfect-match", "tier": "Good"},
        {"name": "Bad", "grade": 1, "token": "1", "tier": "Bad"},
    ]})
    with pytest.raises(ConfigError, match=r"label 'Good' answers with 'Absolutely-perfect-match'.*splits into \d+ tokens"):
        bad.token_ids(tok)


def test_token_ids_are_single_and_distinct_for_shipped_schemes(tiny_model):
    tok = load_tokenizer(tiny_model)
    for name in ("taosr1", "esci"):
        ids = load_scheme(name).token_ids(tok)
        assert len(set(ids)) == 4


def test_scheme_rejects_colliding_tokens_and_bad_order():
    with pytest.raises(ConfigError, match="tokens must be distinct"):
        scheme_from_dict({"name": "x", "labels": [
            {"name": "A", "grade": 2, "token": "1", "tier": "Good"},
            {"name": "B", "grade": 1, "token": "1", "tier": "Bad"}]})
    with pytest.raises(ConfigError, match="best grade first"):
        scheme_from_dict({"name": "x", "labels": [
            {"name": "A", "grade": 1, "token": "1", "tier": "Bad"},
            {"name": "B", "grade": 2, "token": "2", "tier": "Good"}]})
    with pytest.raises(ConfigError, match="unknown keys"):
        scheme_from_dict({"name": "x", "labels": [{"name": "A", "grade": 1, "token": "1", "tier": "Bad", "colour": 1}]})


def test_unknown_scheme_name_lists_known_ones():
    with pytest.raises(FileNotFoundError, match=r"'esci', 'taosr1'"):
        load_scheme("nope")
