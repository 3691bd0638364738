"""Train/test split by query: no query in both parts, so evaluation never sees a trained query."""

from __future__ import annotations

import numpy as np
import pandas as pd


def held_out(df: pd.DataFrame, query_col: str, test_size: float = 0.3, folds: int = 0, fold: int = 0,
             seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) as the training pipeline and the quality bench hold queries out: query fold `fold`
    of `folds` (folds > 0), else a `test_size` share of the queries (0: no test side). Both sides are
    shuffled by `seed`, so a row cap takes many queries, not the first few."""
    if folds:
        train, test = fold_by_query(df, query_col, folds, fold, seed)
    else:
        train, test = split_by_query(df, query_col, test_size, seed) if test_size else (df, df.head(0))
    return (train.sample(frac=1.0, random_state=seed).reset_index(drop=True),
            test.sample(frac=1.0, random_state=seed).reset_index(drop=True))


def held_out_slice(df: pd.DataFrame, query_col: str, gold_col: str, size: float, seed: int = 0
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, slice): about `size` of the rows, whole queries, with the gold labels' mix of the whole
    (sklearn StratifiedGroupKFold: one fold of round(1/size)). A slice of random queries can miss a
    grade or hold a few long judged lists; the calibration slice and the cross-encoder's validation
    queries are drawn this way, so a beta or an early stop is fitted on a representative mix."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < size < 1:
        raise ValueError(f"split: size must be in (0, 1), got {size}")
    groups = query_keys(df, query_col)
    k = max(2, round(1 / size))
    if groups.nunique() < k:
        return split_by_query(df, query_col, size, seed)
    y = df[gold_col].astype(str).to_numpy() if gold_col in df.columns else np.zeros(len(df))
    rest, part = next(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(df, y, groups))
    return _sides(df, rest, part)


def split_by_query(df: pd.DataFrame, query_col: str = "query", test_size: float = 0.3, seed: int = 0
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) with every query's rows on one side (sklearn GroupShuffleSplit).

    `test_size` is the fraction of queries (not rows) held out.
    """
    from sklearn.model_selection import GroupShuffleSplit

    groups = query_keys(df, query_col)
    if not 0 < test_size < 1:
        raise ValueError(f"split: test_size must be in (0, 1), got {test_size}")
    if groups.nunique() < 2:
        raise ValueError(f"split: needs at least two distinct queries in {query_col!r}, found {groups.nunique()}")
    gss = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    return _sides(df, *next(gss.split(df, groups=groups)))


def fold_by_query(df: pd.DataFrame, query_col: str, folds: int, fold: int, seed: int = 0
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) with fold `fold` of `folds` query folds (`query_fold_ids`) as the test side.
    Over folds 0..folds-1 every pair is tested exactly once, so a rare grade is scored on all its
    pairs, not on the few that one random split holds out."""
    if not (folds >= 2 and 0 <= fold < folds):
        raise ValueError(f"split: test_folds must be >= 2 and test_fold in [0, test_folds), got {folds}, {fold}")
    ids = query_fold_ids(df, query_col, folds, seed)
    return _sides(df, np.flatnonzero(ids != fold), np.flatnonzero(ids == fold))


def query_fold_ids(df: pd.DataFrame, query_col: str, folds: int, seed: int = 0) -> np.ndarray:
    """Each row's query fold, 0..folds-1: every row of a query in one fold (sklearn GroupKFold, queries
    shuffled by `seed`, folds balanced by rows). The test folds and cross-fitted calibration share it."""
    from sklearn.model_selection import GroupKFold

    groups = query_keys(df, query_col)
    if groups.nunique() < folds:
        raise ValueError(f"split: {folds} query folds need at least {folds} distinct queries in {query_col!r}, "
                         f"found {groups.nunique()}")
    ids = np.empty(len(df), dtype=int)
    for k, (_, test_idx) in enumerate(GroupKFold(folds, shuffle=True, random_state=seed).split(df, groups=groups)):
        ids[test_idx] = k
    return ids


def query_keys(df: pd.DataFrame, query_col: str) -> pd.Series:
    """Each row's query as splits group it (stripped, lower-cased): "Shoes " and "shoes" are one query."""
    if query_col not in df.columns:
        raise ValueError(f"split: query column {query_col!r} is missing; found {list(df.columns)}")
    return df[query_col].astype(str).str.strip().str.lower()


def _sides(df: pd.DataFrame, train_idx, test_idx) -> tuple[pd.DataFrame, pd.DataFrame]:
    return df.iloc[sorted(train_idx)].reset_index(drop=True), df.iloc[sorted(test_idx)].reset_index(drop=True)
