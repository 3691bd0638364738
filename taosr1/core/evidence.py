"""Evidence a pair carries about itself: the rule teacher's raw material, and the prompt's `Match:` line.

The five reasoning steps should say *why* a grade holds, from the pair's own text: which
query terms the title has and lacks, whether the product type the query names appears,
whether numbers with units (sizes, counts, capacities) agree or conflict, whether a term
the query excludes ("without light") is in the title, and the brand. Plain string rules,
no model: they are the same on any English catalogue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
# a number and the unit right after it: "110cfm", "2 pack", "6.5 inch", "32gb"
_MEASURE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-\s*)?([a-z]{1,12})?")
UNITS = {
    "in": "inch", "inch": "inch", "inches": "inch", "ft": "foot", "feet": "foot", "foot": "foot",
    "cm": "cm", "mm": "mm", "m": "m", "oz": "oz", "ounce": "oz", "ounces": "oz", "lb": "lb", "lbs": "lb",
    "pound": "lb", "pounds": "lb", "gb": "gb", "tb": "tb", "mb": "mb", "w": "watt", "watt": "watt",
    "watts": "watt", "v": "volt", "volt": "volt", "volts": "volt", "mah": "mah", "ml": "ml", "l": "l",
    "liter": "l", "liters": "l", "qt": "quart", "quart": "quart", "gallon": "gallon", "gal": "gallon",
    "cfm": "cfm", "pack": "pack", "pk": "pack", "count": "count", "ct": "count", "pcs": "count",
    "pieces": "count", "piece": "count", "set": "set", "x": "x", "k": "k", "hz": "hz", "mp": "mp",
    "year": "year", "years": "year", "yr": "year", "month": "month", "months": "month", "inchs": "inch",
}
NEGATIONS = {"without", "no", "not", "non", "except", "excluding", "free"}
STOP = {"a", "an", "the", "for", "and", "or", "of", "to", "in", "on", "with", "by", "at", "from", "is", "my",
        "me", "i", "that", "this", "it", "as", "best", "new", "set", "men", "women", "mens", "womens", "s"}


def words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower())


def _stem(w: str) -> str:
    """Plural-insensitive form: 'fans' and 'fan', 'batteries' and 'battery' compare equal."""
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def measures(text: str) -> set[tuple[str, str]]:
    """(number, unit) pairs: '110cfm' -> ('110', 'cfm'); numbers without a known unit are left out."""
    out = set()
    for num, unit in _MEASURE.findall((text or "").lower()):
        if unit in UNITS:
            out.add((num.rstrip("0").rstrip(".") if "." in num else num, UNITS[unit]))
    return out


@dataclass
class Evidence:
    terms: list[str] = field(default_factory=list)  # the query's content words, in order
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    head: str = ""  # the product type the query names (its last content word)
    head_found: bool = False
    measures_agree: list[str] = field(default_factory=list)
    measures_conflict: list[str] = field(default_factory=list)  # "110 cfm asked, 80 cfm in title"
    excluded_present: list[str] = field(default_factory=list)  # "without light": light is in the title
    brand: str = ""
    brand_in_query: bool = False
    in_texts: list[str] = field(default_factory=list)  # missing from the title, but in the item's other texts

    @property
    def coverage(self) -> float:
        return len(self.found) / len(self.terms) if self.terms else 0.0


def pair_evidence(query: str, title: str, brand: str | None = None, texts: str | None = None) -> Evidence:
    """What the pair's text says; `texts` (colour, bullet points, description) can only name a term the
    title lacks (`in_texts`): a title is what the shopper sees first, the texts back it up."""
    qw = words(query)
    tw = {_stem(w) for w in words(title)} | {_stem(w) for w in words(brand or "")}
    excluded = {qw[i + 1] for i, w in enumerate(qw[:-1]) if w in NEGATIONS}
    terms = list(dict.fromkeys(w for w in qw if w not in STOP and w not in NEGATIONS and w not in excluded))
    ev = Evidence(terms=terms)
    ev.found = [w for w in terms if _stem(w) in tw]
    ev.missing = [w for w in terms if _stem(w) not in tw]
    alpha = [w for w in terms if not w[0].isdigit()]
    ev.head = alpha[-1] if alpha else (terms[-1] if terms else "")
    ev.head_found = bool(ev.head) and _stem(ev.head) in tw
    ev.excluded_present = sorted(w for w in excluded if _stem(w) in tw)
    qm, tm = measures(query), measures(title)
    for num, unit in sorted(qm):
        if (num, unit) in tm:
            ev.measures_agree.append(f"{num} {unit}")
        else:
            other = sorted(n for n, u in tm if u == unit)
            if other:
                ev.measures_conflict.append(f"{num} {unit} asked, {'/'.join(other)} {unit} in the title")
    if texts and ev.missing:
        xw = {_stem(w) for w in words(texts)}
        ev.in_texts = [w for w in ev.missing if _stem(w) in xw]
    if brand:
        ev.brand = brand.strip()
        ev.brand_in_query = bool(set(words(brand)) & set(qw))
    return ev
