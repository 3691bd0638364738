"""Built negatives: a query paired with another query's item, graded the worst label. Training data
only (taosr1 cot, and the fine-tuned baseline when asked); never calibrated on or evaluated."""

from __future__ import annotations

import pandas as pd

from taosr1.core.evidence import pair_evidence
from taosr1.core.prompts import FIELDS

ITEM = FIELDS[1:]  # an item carries every field of its own row, texts included: a negative must not stand out


def negative_items(frame: pd.DataFrame, per_query: int, seed: int):
    """(query, the query's own rows, another query's item) for each built negative, seeded.

    `frame` has `query` and `title` (and `brand`, carried in the item when present). An item
    qualifies when its query shares no content word with this one and it is not this query's.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    terms = {q: set(pair_evidence(q, "").terms) for q in frame["query"].unique()}
    items = frame.drop_duplicates("title")[[c for c in ("query", *ITEM) if c in frame]].to_dict("records")
    for q, own in frame.groupby("query", sort=True):
        own_titles = set(own["title"])
        pool = [it for it in items if it["title"] not in own_titles and not (terms[q] & terms[it["query"]])]
        for j in rng.permutation(len(pool))[:per_query]:
            yield q, own, pool[int(j)]
