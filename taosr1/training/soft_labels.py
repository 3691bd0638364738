"""Soft labels from the MiniLM cosine, for SFT to learn beside the gold label (`sft.soft_label_weight`).

Trained on ~800 labels, the 135M model levels off below the untrained all-MiniLM-L6-v2
cosine(query, title) (docs/evaluation.md, "How much the labelled pairs limit it"): what it lacks is what a
sentence-embedding model knows before training, not more labels. These targets carry that
knowledge into training; serving never needs MiniLM. The cosine is mapped onto the grades by a
multinomial logistic regression on [cos, cos^2], fitted on the gold labels of the rows the cot
stage holds (training pairs only); built negatives are scored but left out of the fit, so the
mapping learns from human labels alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taosr1.core.config import ConfigError
from taosr1.core.labels import LabelScheme

SOURCES = ("cosine",)


def cosine_soft_labels(frame: pd.DataFrame, scheme: LabelScheme) -> tuple[np.ndarray, dict[str, Any]]:
    """(rows, labels) P(grade | cosine) for each cot row (scheme order), and what was fitted."""
    from sklearn.linear_model import LogisticRegression

    from taosr1.labeling.sentence import MissingExtra, SentenceCosine

    try:
        cos = SentenceCosine().cosine(frame["query"].astype(str).tolist(), frame["title"].astype(str).tolist())
    except MissingExtra as e:
        raise ConfigError(f"cot.soft_labels: cosine: {e}") from e
    x = np.stack([cos, cos * cos], 1)
    gold = np.array([scheme.names.index(g) for g in frame["gold"]])
    fit = (frame["source"] != "built_negative").to_numpy()
    if len(set(gold[fit])) < 2:
        raise ConfigError(f"cot.soft_labels: the cosine's mapping needs gold labels of at least two grades; the "
                          f"{int(fit.sum())} labelled pair(s) hold {sorted(set(frame['gold'][fit]))}")
    model = LogisticRegression(max_iter=2000, C=10.0).fit(x[fit], gold[fit])
    probs = np.zeros((len(frame), len(scheme.names)))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs, {"source": "all-MiniLM-L6-v2 cosine(query, title)", "fitted_on": int(fit.sum()),
                   "agreement_with_gold": round(float((probs[fit].argmax(1) == gold[fit]).mean()), 4)}
