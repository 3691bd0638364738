"""docs/reliability.md stays true: every test its tables name exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_test_named_in_the_reliability_report_exists():
    doc = (REPO / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", doc))
    assert len(named) >= 15
    defined = set()
    for f in (REPO / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", f.read_text(), flags=re.M))
    assert named <= defined, sorted(named - defined)
    assert (REPO / "README.md").read_text().count("docs/reliability.md") >= 1
