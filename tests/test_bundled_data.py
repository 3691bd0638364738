"""The data rules of the bundled ESCI sets: the union counts a shared pair once, its query folds keep
a query (as splits normalise it) on one side across both files, a text over its budget is cut and
marked, and a pair without texts still gets a well-formed prompt."""

import pytest

from taosr1.core.labels import load_scheme
from taosr1.core.prompts import PromptBuilder, PromptConfig
from taosr1.core.split import held_out, held_out_slice, query_keys
from taosr1.core.validate import validate_rows
from taosr1.labeling.labeler import LabelConfig
from taosr1.labeling.models import load_tokenizer
from taosr1.storage.bundled import KEYS, read_bundled, read_pairs

S = load_scheme("taosr1")


@pytest.fixture(scope="module")
def sets():
    return read_bundled("judged"), read_bundled("sample"), read_pairs("bundled:union")


def _keys(df):
    return set(map(tuple, df[KEYS].astype(str).to_numpy()))


def test_a_pair_in_both_files_is_counted_once_with_the_judged_row(sets):
    judged, sample, union = sets
    shared = _keys(judged) & _keys(sample)
    assert shared and len(union) == len(judged) + len(sample) - len(shared)
    assert not union.duplicated(KEYS).any()
    both = union[union["dataset"] == "both"]
    assert _keys(both) == shared and both["source"].notna().all()  # the sample's `source` rides along
    j = judged.set_index(KEYS)
    for _, r in both.head(5).iterrows():
        assert r["product_title"] == j.loc[(r["query_id"], r["product_id"]), "product_title"]


@pytest.mark.parametrize("fold", range(5))
def test_a_query_is_on_one_side_of_every_fold_across_both_files(sets, fold):
    judged, sample, union = sets
    across = set(query_keys(judged, "query")) & set(query_keys(sample, "query"))
    assert across  # queries asked in both files (as the split normalises them), some as other query ids
    train, test = held_out(union, "query", folds=5, fold=fold, seed=0)
    rest, calib = held_out_slice(train, "query", "esci_label", 0.15, seed=0)
    sides = [set(query_keys(x, "query")) for x in (rest, calib, test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    for q in across:  # every row of such a query, from either file, on the same side
        assert sum(q in s for s in sides) == 1
    assert len(rest) + len(calib) + len(test) == len(union)


@pytest.fixture(scope="module")
def builder(tiny_model):
    return PromptBuilder(load_tokenizer(tiny_model), S, PromptConfig(description_tokens=12))


def test_a_text_over_its_budget_is_cut_and_marked(builder):
    long = "A quiet fan for a bathroom of up to 110 square feet, with a humidity sensor and a timer. " * 5
    fields, cut = builder.cut_fields([{"query": "fan", "title": "Fan", "description": long},
                                      {"query": "fan", "title": "Fan", "description": "quiet"}])
    assert cut == [True, False]
    assert fields[0]["description"].endswith(" ...") and len(fields[0]["description"]) < len(long) / 4
    assert fields[1]["description"] == "quiet"
    assert builder.build([{"query": "fan", "title": "Fan", "description": long}]).truncated == [True]


def test_pairs_without_texts_get_a_well_formed_prompt(builder, sets):
    _, sample, union = sets
    rows = union[union["dataset"] == "sample"].head(20)  # the sample has titles only: brand, texts missing
    assert rows["product_description"].isna().all()
    fields, reasons = validate_rows(rows, LabelConfig().columns)
    assert all(r is None for r in reasons)
    text = builder.tok.decode(builder.build(fields.to_dict("records")).ids[0])
    user = text.split("<|im_start|>user")[1].split("<|im_start|>assistant")[0]
    assert "Query: " in user and "Title: " in user and "Match: " in user
    for absent in ("Brand:", "Colour:", "Color:", "Bullet", "Description:", "nan", "None"):
        assert absent not in user, (absent, user)
    full = union[union["dataset"] == "judged"].head(1)
    fields, _ = validate_rows(full, LabelConfig().columns)
    user = builder.tok.decode(builder.build(fields.to_dict("records")).ids[0])
    assert "Brand: " in user and "Description: " in user


def test_the_texts_ablation_config_leaves_the_texts_out_and_nothing_else(builder, sets):
    """bench/experiments/label_title_only.yaml (the issue-35 ablation) is conf/label.yaml but for the
    four item texts, and a judged pair graded with it gets the title-only prompt."""
    from pathlib import Path

    from taosr1.core.config import load

    root = Path(__file__).resolve().parent.parent
    full, titles = load(LabelConfig, root / "conf/label.yaml"), load(LabelConfig, root / "bench/experiments/label_title_only.yaml")
    texts = {"brand", "color", "bullets", "description"}
    differ = {f for f in full.columns.field_columns() if getattr(full.columns, f) != getattr(titles.columns, f)}
    assert differ == texts
    assert {**vars(full), "columns": None} == {**vars(titles), "columns": None}
    judged = sets[2][sets[2]["dataset"] == "judged"].head(1)
    fields, _ = validate_rows(judged, titles.columns)
    user = builder.tok.decode(builder.build(fields.to_dict("records")).ids[0])
    assert "Title: " in user and "Brand:" not in user and "Description:" not in user
