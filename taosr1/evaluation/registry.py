"""The baselines by name, as bench/quality.py and the tests ask for them."""

from __future__ import annotations

from taosr1.core.labels import LabelScheme, load_scheme
from taosr1.evaluation.baselines import BM25, Baseline, Cosine, CosineTexts, Majority, Overlap, Stacked
from taosr1.evaluation.cross_encoder import CrossEncoder

BASELINES = ("majority", "overlap", "bm25", "cosine", "cosine_texts", "stack", "minilm_ft")


def make_baseline(name: str, scheme: LabelScheme | None = None, query_col: str = "query",
                  title_col: str = "product_title") -> Baseline:
    classes = {"majority": Majority, "overlap": Overlap, "bm25": BM25, "cosine": Cosine, "cosine_texts": CosineTexts,
               "stack": Stacked, "minilm_ft": CrossEncoder}
    if name not in classes:
        raise ValueError(f"unknown baseline {name!r}; the baselines are {list(BASELINES)}")
    return classes[name](scheme=scheme or load_scheme("taosr1"), query_col=query_col, title_col=title_col)
