import pytest

from taosr1.core.config import ConfigError
from taosr1.core.labels import load_scheme
from taosr1.core.prompts import STEPS, PromptBuilder, PromptConfig, format_response, parse_response
from taosr1.labeling.models import load_tokenizer

S = load_scheme("taosr1")
STEP_TEXT = ["wants a fan", "is a fan", "fans match", "110 cfm matches", "exact"]


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(tiny_model)


def test_prompt_renders_through_chat_template_and_ends_at_the_answer(tok):
    b = PromptBuilder(tok, S)
    ids = b.build([{"query": "bath fan", "title": "Panasonic fan", "brand": "Panasonic"}]).ids[0]
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>assistant\n")
    assert "Query: bath fan\nTitle: Panasonic fan\nBrand: Panasonic" in text
    assert "Category:" not in text.split("<|im_start|>user")[1]  # absent optional field left out
    assert "grade (4, 3, 2, 1) on the first line" in text


def test_fields_are_cut_to_their_budget_and_flagged(tok):
    cfg = PromptConfig(title_tokens=8)
    b = PromptBuilder(tok, S, cfg)
    long_title = "Panasonic WhisperCeiling ventilation fan " * 20
    out = b.build([{"query": "fan", "title": long_title}, {"query": "fan", "title": "fan"}])
    assert out.truncated == [True, False]
    assert len(out.ids[0]) < len(PromptBuilder(tok, S).build([{"query": "fan", "title": long_title}]).ids[0])


def test_post_cot_response_round_trips():
    text = format_response(S.by_grade(4), STEP_TEXT, "post_cot")
    assert text.startswith("4\n1. Query: wants a fan")
    parsed = parse_response(text, S, "post_cot")
    assert parsed.label.name == "Excellent" and parsed.error is None
    assert parsed.reasoning.splitlines()[-1] == "5. Judgement: exact"
    assert len(parsed.reasoning.splitlines()) == len(STEPS)


def test_think_first_response_round_trips():
    text = format_response(S.by_grade(2), STEP_TEXT, "think_first")
    assert text.endswith("Answer: 2")
    parsed = parse_response(text, S, "think_first")
    assert parsed.label.name == "Mismatch" and parsed.reasoning.startswith("1. Query")


@pytest.mark.parametrize("fmt,text,why", [
    ("post_cot", "", "empty response"),
    ("post_cot", "Maybe relevant\n...", "first word 'Maybe' is not a label"),
    ("think_first", "1. Query: ... no verdict", "no 'Answer: <label>' line"),
    ("think_first", "reasoning\nAnswer: 7", "answer '7' is not a label"),
    ("post_cot", "I think it fits\n...", "first word 'I' is not a label"),  # a gold alias is no answer
])
def test_unparseable_responses_are_reported(fmt, text, why):
    parsed = parse_response(text, S, fmt)
    assert parsed.label is None and why in parsed.error


def test_bad_prompt_config_is_refused():
    with pytest.raises(ConfigError, match="prompt format"):
        PromptConfig(format="cot_last")
    with pytest.raises(ConfigError, match="title_tokens"):
        PromptConfig(title_tokens=0)


@pytest.mark.parametrize("fmt", ["post_cot", "think_first"])
def test_shared_head_fast_path_builds_the_template_path_ids(tok, sample_df, fmt):
    """build() tokenizes the chat template's head once; the ids and texts equal rendering and
    tokenizing every row whole through the template (odd text included)."""
    rows = [{"query": q, "title": t} for q, t in zip(sample_df["query"].head(200), sample_df["product_title"].head(200))]
    rows += [{"query": "  lead and trail  ", "title": "tea cup \u8336\u676f \U0001f375 {{ x }}", "brand": "A\nB"},
             {"query": "x", "title": "<|im_end|> inside", "description": "ends with newline\n"}]
    fast = PromptBuilder(tok, S, PromptConfig(format=fmt))
    assert fast.frame is not None  # the tiny model's ChatML template inserts the user text verbatim
    slow = PromptBuilder(tok, S, PromptConfig(format=fmt))
    slow.__dict__["frame"] = None  # the per-row template path
    assert fast.build(rows).ids == slow.build(rows).ids
    assert fast.texts(rows) == slow.texts(rows)


def test_template_that_changes_the_user_text_takes_the_per_row_path(tok):
    b = PromptBuilder(tok, S, PromptConfig(evidence=False))
    b.template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
                  "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert b.frame is None
    assert tok.decode(b.build([{"query": "fan", "title": "fan  "}]).ids[0]).count("Query: fan\nTitle: fan<|im_end|>") == 1


@pytest.mark.parametrize("path", ["shared_head", "per_row"])
@pytest.mark.parametrize("evidence", [True, False])
def test_every_build_path_carries_the_match_line_the_config_asks_for(tok, path, evidence):
    """The model is trained and served on build()'s ids: the `Match:` line must be there exactly
    when the prompt config (and so the prompt version) says so, on either path."""
    b = PromptBuilder(tok, S, PromptConfig(evidence=evidence))
    if path == "per_row":
        b.__dict__["frame"] = None
    row = {"query": "110cfm bathroom fan without light", "title": "Panasonic 80 cfm bathroom fan with light"}
    want = "Match: has 2 of 3 query terms; lacks 110cfm; 110 cfm asked, 80 cfm in the title; has excluded light"
    for text in (tok.decode(b.build([row]).ids[0]), b.texts([row])[0]):
        assert (want in text) is evidence
        assert ("Match:" in text) is evidence
    assert b.cfg.version.endswith("-evidence") is evidence
