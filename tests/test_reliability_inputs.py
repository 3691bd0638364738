"""Bad input: a catalogue of odd rows, each graded or quarantined with a reason, never a
crash and never lost, with the same outcome through `taosr1 label` (label_frame and the
click command) and the nightly Spark job; plus a Hypothesis invariant on generated tables.

Rules (taosr1/core/validate.py, docs/reliability.md): null/NaN required text -> missing_<field>;
empty or whitespace only (after dropping control characters) -> empty_<field>; numbers,
lists, booleans where text belongs -> wrong_type_<field>; null key -> missing_key; repeats
of a key -> duplicate_key (the first occurrence claims the key, even when it is itself
quarantined for another reason: input order decides, on both paths); a field over its token budget is cut and
the row graded with truncated=true; a prompt still over max_prompt_tokens ->
prompt_too_long. Emoji, CJK, right-to-left and zero-width characters are kept; lone
surrogates become U+FFFD. Extra columns are carried through to both outputs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taosr1.core import config as cfgmod
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptConfig
from taosr1.core.resources import conf_dir
from taosr1.core.validate import ColumnConfig
from taosr1.labeling.labeler import Labeler, label_frame

KEYS = ["query_id", "product_id"]
D1 = "2025-07-01"
LONG = " ".join(["waterproof hiking boot with vibram sole and gore tex lining"] * 40)
MB = ("trail running shoe " * 60000)[: 1 << 20]  # a 1 MB title

GRADED, TRUNCATED = "graded", "graded_truncated"


@dataclass
class Kind:
    """One kind of odd input: the rows it adds and each row's expected outcome.

    `nightly` is True when a Parquet input can hold the rows (a string column cannot hold a
    number, list or lone surrogate: for the nightly job those are contract or encoding
    matters, tested separately)."""

    name: str
    rows: list[dict]
    expect: list[str]
    nightly: bool = True
    extra: dict = field(default_factory=dict)


def _row(**kv) -> dict:
    return {"query": "running shoes", "product_title": "Trail running shoe", "product_description": None,
            "note": "extra column", **kv}


CATALOGUE = [
    Kind("null_query", [_row(query=None)], ["missing_query"]),
    Kind("null_title", [_row(product_title=None)], ["missing_title"]),
    Kind("nan_query", [_row(query=math.nan)], ["missing_query"]),
    Kind("empty_query", [_row(query="")], ["empty_query"]),
    Kind("empty_title", [_row(product_title="")], ["empty_title"]),
    Kind("whitespace_query", [_row(query=" \t\n\u3000 ")], ["empty_query"]),
    Kind("whitespace_title", [_row(product_title="   ")], ["empty_title"]),
    Kind("control_only_title", [_row(product_title="\x00\x01\x07\x1b\x7f")], ["empty_title"]),
    Kind("control_chars_in_title", [_row(product_title="Trail\x00 shoe\x07 red\x1b")], [GRADED]),
    Kind("number_title", [_row(product_title=42)], ["wrong_type_title"], nightly=False),
    Kind("float_query", [_row(query=3.5)], ["wrong_type_query"], nightly=False),
    Kind("list_title", [_row(product_title=["trail", "shoe"])], ["wrong_type_title"], nightly=False),
    Kind("bool_query", [_row(query=True)], ["wrong_type_query"], nightly=False),
    Kind("number_optional_field", [_row(product_description=7)], ["wrong_type_description"], nightly=False),
    Kind("lone_surrogate", [_row(product_title="Trail \ud800 shoe")], [GRADED], nightly=False),
    Kind("right_to_left", [_row(query="حذاء رياضي", product_title="حذاء للجري ‏שחור‏")], [GRADED]),
    Kind("zero_width", [_row(query="run\u200bning\u200d shoes\ufeff", product_title="Trail\u200c shoe")], [GRADED]),
    Kind("emoji", [_row(query="👟 shoes", product_title="Trail shoe 🏃‍♀️🇯🇵")], [GRADED]),
    Kind("cjk", [_row(query="跑步鞋", product_title="男士跑步鞋 ランニングシューズ 러닝화")], [GRADED]),
    Kind("one_mb_title", [_row(product_title=MB)], [TRUNCATED]),
    Kind("prompt_over_limit", [_row(query=LONG, product_title=LONG, product_description=LONG)], ["prompt_too_long"]),
    Kind("null_key", [_row(query_id=None)], ["missing_key"]),
    Kind("duplicate_key", [_row(query_id="qdup", product_id="pdup"),
                           _row(query_id="qdup", product_id="pdup", product_title="a repeat"),
                           _row(query_id="qdup", product_id="pdup", product_title=None)],
         [GRADED, "duplicate_key", "missing_title"]),
    Kind("bad_row_then_same_key", [_row(query_id="qbad", product_id="pbad", query=""),
                                   _row(query_id="qbad", product_id="pbad")], ["empty_query", "duplicate_key"]),
    Kind("null_optional_field", [_row(product_description=None)], [GRADED]),
    Kind("plain_row", [_row()], [GRADED]),
]


def catalogue_frame(kinds: list[Kind]) -> pd.DataFrame:
    """All rows of `kinds`; a row's `product_id` names its kind and position."""
    rows = []
    for kind in kinds:
        for j, r in enumerate(kind.rows):
            base = {"query_id": f"q-{kind.name}", "product_id": f"{kind.name}#{j}"}
            rows.append({**base, **r, "kind": f"{kind.name}#{j}"})
    return pd.DataFrame(rows, columns=["query_id", "query", "product_id", "product_title", "product_description",
                                       "note", "kind"]).astype(object)


def expected(kinds: list[Kind]) -> dict[str, str]:
    return {f"{k.name}#{j}": e for k in kinds for j, e in enumerate(k.expect)}


def outcomes(graded: pd.DataFrame, quarantine: pd.DataFrame) -> dict[str, str]:
    """kind#row -> graded / graded_truncated / reason code, failing on a row seen twice."""
    got: dict[str, str] = {}
    for kind, cut in zip(graded["kind"], graded["truncated"]):
        assert kind not in got
        got[kind] = TRUNCATED if cut else GRADED
    for kind, reason in zip(quarantine["kind"], quarantine["reason"]):
        assert kind not in got
        assert ": " in reason and len(reason.split(": ", 1)[1]) > 5  # a code and what is wrong
        got[kind] = reason.split(":")[0]
    return got


@pytest.fixture(scope="module")
def limit(tiny_model) -> int:
    """max_prompt_tokens that fits every catalogue row but the over-limit one."""
    from taosr1.core.prompts import PromptBuilder
    from taosr1.core.validate import validate_rows
    from taosr1.labeling.models import load_tokenizer

    df = catalogue_frame(CATALOGUE)
    fields, reasons = validate_rows(df, ColumnConfig())
    ok = [i for i, r in enumerate(reasons) if r is None]
    builder = PromptBuilder(load_tokenizer(tiny_model), load_scheme("taosr1"), PromptConfig())
    lengths = dict(zip(df["kind"].iloc[ok], (len(x) for x in builder.build(fields.iloc[ok].to_dict("records")).ids)))
    over = lengths.pop("prompt_over_limit#0")
    assert over > max(lengths.values())
    return max(lengths.values())


@pytest.fixture(scope="module")
def cli_result(tiny_engine, limit):
    labeler = Labeler(tiny_engine, load_scheme("taosr1"), PromptConfig(max_prompt_tokens=limit), beta=0.5)
    df = catalogue_frame(CATALOGUE)
    return df, label_frame(df, labeler, ColumnConfig())


def test_catalogue_has_at_least_20_kinds():
    assert len({k.name for k in CATALOGUE}) == len(CATALOGUE) >= 20


@pytest.mark.parametrize("kind", CATALOGUE, ids=lambda k: k.name)
def test_catalogue_kind_through_label_frame(cli_result, kind):
    df, result = cli_result
    got = outcomes(result.graded, result.quarantine)
    for key, want in expected([kind]).items():
        assert got[key] == want, (key, got[key])


def test_catalogue_loses_nothing_and_keeps_text(cli_result):
    df, result = cli_result
    assert result.rows_in == len(df) == len(result.graded) + len(result.quarantine)
    assert outcomes(result.graded, result.quarantine) == expected(CATALOGUE)
    g = result.graded.set_index("kind")
    # odd but valid text reaches the output unchanged; extra columns are carried through
    for k in ("right_to_left#0", "zero_width#0", "emoji#0", "cjk#0"):
        assert g.loc[k, "product_title"] == df.set_index("kind").loc[k, "product_title"]
    assert (result.graded["note"] == "extra column").all() and (result.quarantine["note"] == "extra column").all()
    assert np.allclose(result.graded[load_scheme("taosr1").prob_columns].sum(axis=1), 1.0)


def test_catalogue_through_the_label_command(tiny_model, limit, tmp_path):
    """`taosr1 label` on a JSON-lines file (which can hold numbers, lists and lone surrogates)."""
    from click.testing import CliRunner

    from taosr1.cli.main import main
    from taosr1.storage.tables import read_table

    kinds = [k for k in CATALOGUE if k.name != "nan_query"]  # JSON has no NaN (it reads as null: null_query)
    src = tmp_path / "catalogue.jsonl"
    with src.open("w", encoding="utf-8") as f:  # ensure_ascii keeps a lone surrogate as the escape \ud800
        for rec in catalogue_frame(kinds).to_dict("records"):
            f.write(json.dumps(rec) + "\n")
    out = tmp_path / "graded.parquet"
    res = CliRunner().invoke(main, ["label", str(src), str(out), "--model", tiny_model, "--beta", "0.5",
                                    "--set", f"prompt.max_prompt_tokens={limit}"])
    assert res.exit_code == 0, res.output
    graded, quarantine = read_table(out), read_table(tmp_path / "graded.quarantine.parquet")
    assert outcomes(graded, quarantine) == expected(kinds)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["rows_in"] == len(catalogue_frame(kinds)) == summary["graded"] + summary["quarantined"]


def test_catalogue_through_the_nightly_job(spark, tiny_model, limit, cli_result, tmp_path):
    """Every kind a Parquet input can hold, in one nightly run: same outcome as the CLI, same grades."""
    from deltalake import DeltaTable

    from taosr1.nightly.job import NightlyConfig, run

    kinds = [k for k in CATALOGUE if k.nightly]
    df = catalogue_frame(kinds)
    path = tmp_path / "catalogue.parquet"
    df.astype({c: "string" for c in df.columns}).to_parquet(path, index=False)
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                      {"label.engine.model": tiny_model, "partitions": 2, "label.beta": 0.5,
                       "label.prompt.max_prompt_tokens": limit})
    out = tmp_path / "grades"
    record = run(spark, cfg, input=str(path), output=str(out), run_date=D1)
    graded = DeltaTable(str(out)).to_pandas()
    quarantine = DeltaTable(f"{out}_quarantine").to_pandas()
    assert record["rows_in"] == len(df) == len(graded) + len(quarantine)
    assert outcomes(graded, quarantine) == expected(kinds)
    _, cli = cli_result
    cols = ["kind", *load_scheme("taosr1").prob_columns]
    both = graded[cols].merge(cli.graded[cols], on="kind", suffixes=("", "_cli"))
    assert len(both) == len(graded)
    for c in cols[1:]:
        assert np.allclose(both[c], both[f"{c}_cli"], atol=1e-5)
    assert (graded["note"] == "extra column").all() and (quarantine["note"] == "extra column").all()


def test_nightly_mistyped_columns_fail_before_work(spark, tiny_model, tmp_path):
    """Numbers or lists where text belongs, in a typed input, fail the run on its contract."""
    from taosr1.nightly.job import NightlyConfig, run
    from taosr1.storage.contracts import ContractError

    bad = pd.DataFrame({"query_id": ["q1"], "product_id": ["p1"], "query": [["a", "b"]], "product_title": [3.5]})
    path = tmp_path / "typed.parquet"
    bad.to_parquet(path, index=False)
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml", {"label.engine.model": tiny_model})
    out = tmp_path / "grades"
    with pytest.raises(ContractError) as err:
        run(spark, cfg, input=str(path), output=str(out), run_date=D1)
    assert "column 'query' (query): expected string, found array" in str(err.value)
    assert "column 'product_title' (title): expected string, found double" in str(err.value)
    assert not out.exists() and not Path(f"{out}_quarantine").exists()


@pytest.mark.parametrize("shape", ["empty", "one_row_required_columns_only"])
def test_table_shapes_cli_and_nightly(spark, tiny_model, tiny_engine, tmp_path, shape):
    """An empty input, and one row with only the key and required columns (no optional ones)."""
    from deltalake import DeltaTable

    from taosr1.nightly.job import NightlyConfig, run

    df = pd.DataFrame({"query_id": ["q1"], "product_id": ["p1"], "query": ["tea cup"],
                       "product_title": ["Porcelain tea cup"]})
    if shape == "empty":
        df = df.iloc[:0]
    labeler = Labeler(tiny_engine, load_scheme("taosr1"), PromptConfig(), beta=0.5)
    cli = label_frame(df, labeler, ColumnConfig())
    assert (len(cli.graded), len(cli.quarantine)) == (len(df), 0)
    path = tmp_path / "in.parquet"
    df.astype("string").to_parquet(path, index=False)
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                      {"label.engine.model": tiny_model, "partitions": 1, "label.beta": 0.5})
    out = tmp_path / "grades"
    record = run(spark, cfg, input=str(path), output=str(out), run_date=D1)
    assert record["rows_in"] == len(df) == record["graded"] and record["quarantined"] == 0
    graded = DeltaTable(str(out)).to_pandas()
    assert len(graded) == len(df)
    if len(df):
        assert np.allclose(graded[labeler.scheme.prob_columns].to_numpy(),
                           cli.graded[labeler.scheme.prob_columns].to_numpy(), atol=1e-5)


# ---------------------------------------------------------------- property: nothing lost

_text = st.one_of(
    st.none(), st.just(math.nan), st.integers(-5, 5), st.lists(st.text(max_size=3), max_size=2), st.booleans(),
    st.sampled_from(["", "  ", "\x00\x01", "\ud800 x", "👟", "跑步鞋", "حذاء", "a\u200bb", "shoe"]),
    st.text(max_size=30),
)
_key = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]), st.integers(0, 3))
_row_st = st.fixed_dictionaries({"query_id": _key, "product_id": st.sampled_from(["p1", "p2"]), "query": _text,
                                 "product_title": _text, "product_description": _text})
CODES = {"missing_query", "missing_title", "empty_query", "empty_title", "wrong_type_query", "wrong_type_title",
         "wrong_type_description", "missing_key", "duplicate_key", "prompt_too_long"}


def _norm(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row_st, max_size=12))
def test_property_rows_in_equals_graded_plus_quarantined(tiny_engine, rows):
    labeler = Labeler(tiny_engine, load_scheme("taosr1"), PromptConfig(max_prompt_tokens=160), beta=0.5)
    df = pd.DataFrame(rows, columns=["query_id", "product_id", "query", "product_title", "product_description"])
    result = label_frame(df.astype(object), labeler, ColumnConfig())
    g, q = result.graded, result.quarantine
    assert result.rows_in == len(df) == len(g) + len(q)
    # each key exactly once among the graded; every input row's key accounted for once
    gk = [(_norm(a), _norm(b)) for a, b in zip(g["query_id"], g["product_id"])]
    assert len(gk) == len(set(gk)) and all(None not in k for k in gk)
    qk = [(_norm(a), _norm(b)) for a, b in zip(q["query_id"], q["product_id"])]
    ik = [(_norm(a), _norm(b)) for a, b in zip(df["query_id"], df["product_id"])]
    assert sorted(gk + qk, key=str) == sorted(ik, key=str)
    assert set(gk) <= set(ik)
    # every quarantined row has a known reason code and says what is wrong
    assert all(r.split(":")[0] in CODES and ": " in r for r in q["reason"])
    if len(g):
        assert np.allclose(g[labeler.scheme.prob_columns].to_numpy(dtype=float).sum(axis=1), 1.0)
