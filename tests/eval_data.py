"""Prediction tables for the evaluation tests: graded the way `taosr1 label` grades (CumPT on
P(label)), with probabilities drawn around the gold label of the bundled ESCI sample."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taosr1.core.cumpt import grade_rows
from taosr1.core.labels import load_scheme
from taosr1.core.resources import sample_path


def predictions(n: int | None = None, *, signal: float = 1.5, seed: int = 0, scheme: str = "esci") -> pd.DataFrame:
    df = pd.read_csv(sample_path(), dtype=str, keep_default_na=False)
    if n is not None:
        df = df.head(n)
    s = load_scheme(scheme)
    gold = np.array([s.labels.index(s.parse(v)) for v in df["esci_label"]])
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(df), len(s.labels)))
    logits[np.arange(len(df)), gold] += signal
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    out = df.copy()
    for j, c in enumerate(s.prob_columns):
        out[c] = p[:, j]
    for k, v in grade_rows(p, s, 0.5).items():
        out[k] = v
    out["model"], out["label_scheme"], out["beta"] = "synthetic", s.name, 0.5
    return out
