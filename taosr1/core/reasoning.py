"""Is a generated continuation reasoning worth printing? `explain` asks before it shows one.

A small model that never learned the five steps loops ("WhisperCeiling DC Ventilation Fan, 4WhisperCeiling
...") or stops half-way; printed as "the model's reasoning" that misleads. `check_reasoning` returns the
five steps when the text has them, or the reason it is cut: a loop (a span repeated back to back), a
label it does not parse to, a label other than the graded one, or missing steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from taosr1.core.prompts import STEPS, Parsed

LOOP_MIN_CHARS = 6  # a span this long or longer ...
LOOP_REPEATS = 3  # ... repeated this many times back to back is a loop, not reasoning
_STEP = re.compile(r"^\s*(\d)\.\s*([A-Za-z]+)\s*:\s*(.+?)\s*$")


@dataclass
class Reasoning:
    steps: list[str]  # the five steps' texts when usable, else []
    problem: str | None = None  # why the continuation is cut; None when it is printed


def find_loop(text: str, min_chars: int = LOOP_MIN_CHARS, repeats: int = LOOP_REPEATS) -> str | None:
    """The shortest span of >= `min_chars` characters that `text` repeats `repeats` times in a row, or None."""
    m = re.search(rf"(.{{{min_chars},}}?)\1{{{repeats - 1},}}", text, re.DOTALL)
    return m.group(1) if m else None


def reasoning_steps(text: str) -> list[str]:
    """The numbered steps "1. Query: ..." .. "5. Judgement: ..." in order; stops at the first gap."""
    steps = []
    for line in text.splitlines():
        m = _STEP.match(line)
        if m and int(m.group(1)) == len(steps) + 1 and m.group(2).lower() == STEPS[len(steps)].lower():
            steps.append(m.group(3))
            if len(steps) == len(STEPS):
                break
    return steps


def check_reasoning(text: str, parsed: Parsed, graded: str) -> Reasoning:
    """The steps of a continuation, or why it must not be shown as the reasoning for grade `graded`."""
    loop = find_loop(text)
    if loop is not None:
        return Reasoning([], f"the continuation loops ({loop[:60]!r} repeated)")
    if parsed.label is None:
        return Reasoning([], f"the continuation does not parse: {parsed.error}")
    if parsed.label.name != graded:
        return Reasoning([], f"the continuation says {parsed.label.name}, the graded label is {graded}")
    steps = reasoning_steps(parsed.reasoning)
    if len(steps) < len(STEPS):
        return Reasoning([], f"the continuation has {len(steps)} of the {len(STEPS)} steps")
    return Reasoning(steps)
