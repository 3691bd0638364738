"""`explain` shows reasoning only when it is reasoning: loops, unparsable or off-label continuations are cut."""

from taosr1.core.labels import load_scheme
from taosr1.core.prompts import STEPS, format_response, parse_response
from taosr1.core.reasoning import check_reasoning, find_loop

SCHEME = load_scheme("taosr1")
STEPS_TEXT = ["The shopper searches for a fan.", "The item is a fan.", "The title names fan.", "Shares fan.",
              "Excellent: it is a fan."]


def check(text, graded="Excellent"):
    return check_reasoning(text, parse_response(text, SCHEME, "post_cot"), graded)


def test_the_issue_loop_is_cut():
    text = "Excellent\n1. Query: " + "WhisperCeiling DC Ventilation Fan, 4" * 5
    r = check(text)
    assert r.steps == [] and "loops" in r.problem and "WhisperCeiling" in r.problem
    assert find_loop("fan fan fan, 4 pack") is None  # a span under 6 characters repeated is not a loop


def test_a_clean_response_gives_its_five_steps():
    label = next(lab for lab in SCHEME.labels if lab.name == "Excellent")
    r = check(format_response(label, STEPS_TEXT))
    assert r.problem is None and r.steps == STEPS_TEXT and len(r.steps) == len(STEPS)
    assert find_loop(format_response(label, STEPS_TEXT)) is None


def test_unparsable_off_label_and_partial_are_cut():
    assert "does not parse" in check("Great stuff\n1. Query: x").problem
    label = next(lab for lab in SCHEME.labels if lab.name == "Excellent")
    assert "says Excellent, the graded label is Bad" in check(format_response(label, STEPS_TEXT), "Bad").problem
    partial = format_response(label, STEPS_TEXT).rsplit("\n", 2)[0]
    assert "has 3 of the 5 steps" in check(partial).problem
