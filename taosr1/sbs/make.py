"""Draw, blind and assign a side-by-side task set from two prediction sets on the same pairs.

The sample is stratified by segment (query type) and by whether the two systems' labels
differ. Gold questions are real pairs from a labelled table whose answer is known: one side's
label equals the gold label and the other's does not (that side is better), or both equal it
(Same). They look like every other item, are placed at random positions, and make up
`gold_rate` of each rater's queue.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from taosr1.sbs.config import SbsConfig
from taosr1.sbs.tasks import KEY_FORMAT, SHEET_FORMAT, task_id

MISSING_SEGMENT = "(missing)"


def apportion(counts, n: int, *, at_least_one: bool = False) -> np.ndarray:
    """Split `n` draws over groups of sizes `counts` in proportion (largest remainder), never more
    than a group holds. With `at_least_one`, every non-empty group gets one when `n` allows."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    n = min(int(n), total)
    alloc = np.zeros(len(counts), dtype=np.int64)
    if n <= 0:
        return alloc
    quota = n * counts / total
    alloc = np.floor(quota).astype(np.int64)
    floor = np.zeros_like(alloc)
    if at_least_one and n >= int((counts > 0).sum()):
        floor = (counts > 0).astype(np.int64)
        alloc = np.maximum(alloc, floor)
    while alloc.sum() < n:
        room = np.where(alloc < counts, quota - alloc, -np.inf)
        alloc[int(np.argmax(room))] += 1
    while alloc.sum() > n:
        over = np.where(alloc > floor, alloc - quota, -np.inf)
        alloc[int(np.argmax(over))] -= 1
    return alloc


def split_disagree(n: int, n_dis: int, n_agr: int, share: float | None) -> tuple[int, int]:
    """Draws from the disagreeing and the agreeing pairs of one segment."""
    if share is None:
        d, a = apportion([n_dis, n_agr], n)
        return int(d), int(a)
    dis = min(int(round(n * share)), n_dis)
    agr = min(n - dis, n_agr)
    dis = min(n_dis, n - agr)
    return dis, agr


def queue_sizes(n: int, k: int, n_raters: int) -> np.ndarray:
    """Regular items per rater when n items go round-robin to k of n_raters raters each."""
    base, extra = divmod(n * k, n_raters)
    return np.array([base + (j < extra) for j in range(n_raters)], dtype=np.int64)


def gold_counts(regular: np.ndarray, rate: float) -> np.ndarray:
    """Gold questions per rater so they make up `rate` of the queue: g / (m + g) ~ rate."""
    return np.array([int(round(rate * m / (1 - rate))) for m in regular], dtype=np.int64)


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    s = str(v).strip()
    return s or None


def _parse(values: pd.Series, scheme) -> np.ndarray:
    """`parse_labels`, once per distinct value (a million rows hold a handful of spellings)."""
    from taosr1.evaluation.data import parse_labels

    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    parsed = np.append(parse_labels(pd.Series(uniques, dtype=object), scheme), -1)
    return parsed[codes]  # code -1 (a missing value) picks the appended -1


def _labels_of(df: pd.DataFrame, scheme, source: str) -> np.ndarray:
    from taosr1.evaluation.data import _examples

    col = "label" if "label" in df.columns else "grade" if "grade" in df.columns else None
    if col is None:
        raise ValueError(f"{source}: no `label` (or `grade`) column of predictions (columns: {list(df.columns)}); "
                         f"pass the output of `taosr1 label`")
    p = _parse(df[col], scheme)
    if (p < 0).any():
        raise ValueError(f"{source}: {int((p < 0).sum())} value(s) in column {col} are not labels of scheme "
                         f"{scheme.name} {scheme.names}, e.g. {_examples(df.loc[p < 0, col])}; pass --labels")
    return p


def _gold_pool(a: pd.DataFrame, gold: pd.DataFrame, gold_col: str, keys: list[str], scheme, pa, pb,
               gold_source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows of `a` usable as gold questions: (row index, gold label index, expected verdict) and how
    many gold rows found no prediction. Expected verdict: 0 A better, 1 same, 2 B better."""
    from taosr1.evaluation.data import _examples, _key_frame

    if gold_col not in gold.columns:
        raise ValueError(f"{gold_source}: gold column {gold_col!r} not found (columns: {list(gold.columns)})")
    g = _parse(gold[gold_col], scheme)
    if (g < 0).any():
        raise ValueError(f"{gold_source}: {int((g < 0).sum())} gold value(s) in {gold_col} are not labels of scheme "
                         f"{scheme.name} {scheme.names}, e.g. {_examples(gold.loc[g < 0, gold_col])}; fix them or "
                         f"pass the right scheme with --labels")
    gk = _key_frame(gold, keys, gold_source).assign(_g=g)
    ak = _key_frame(a, keys, "predictions").reset_index()
    m = ak.merge(gk, on=keys, how="inner")
    rows, gl = m["index"].to_numpy(np.int64), m["_g"].to_numpy(np.int64)
    ra, rb = pa[rows] == gl, pb[rows] == gl
    expected = np.where(ra & rb, 1, np.where(ra & ~rb, 0, np.where(rb & ~ra, 2, -1)))
    keep = expected >= 0  # pairs both sides get wrong have no clear answer: not used as gold
    return rows[keep], gl[keep], expected[keep], len(gold) - len(m)


def make_tasks(a: pd.DataFrame, b: pd.DataFrame, cfg: SbsConfig, *, gold: pd.DataFrame | None = None,
               gold_col: str | None = None, labels: str | None = None, name_a: str = "A", name_b: str = "B",
               source_a: str = "A", source_b: str = "B", gold_source: str = "gold") -> tuple[dict, dict, dict]:
    """The sheet (for the rating page), the blinding key (for the report) and a summary.

    A is the baseline and B the candidate: the report's GSB is B against A.
    """
    from taosr1.evaluation.compare import align
    from taosr1.evaluation.data import common_scheme

    scheme = common_scheme(a, b, labels, source_a, source_b)
    if len(cfg.raters) < cfg.k:
        raise ValueError(f"{len(cfg.raters)} rater(s) named ({cfg.raters}) but k={cfg.k} raters per item; name at "
                         f"least {cfg.k} with --raters a,b,c or lower --k")
    a = a.reset_index(drop=True)
    b = align(a, b, cfg.keys, source_a, source_b)
    for col in (cfg.query_column, cfg.item_columns[0]):
        if col not in a.columns:
            raise ValueError(f"{source_a}: column {col!r} (shown to raters) not found (columns: {list(a.columns)}); "
                             f"set query_column / item_columns")
    if cfg.segment and cfg.segment not in a.columns:
        raise ValueError(f"{source_a}: segment column {cfg.segment!r} not found (columns: {list(a.columns)})")
    pa, pb = _labels_of(a, scheme, source_a), _labels_of(b, scheme, source_b)
    n_pairs = len(a)
    seg = (a[cfg.segment].map(lambda v: _text(v) or MISSING_SEGMENT).to_numpy(dtype=object) if cfg.segment
           else np.full(n_pairs, "all", dtype=object))
    disagree = pa != pb
    qkey_col = cfg.query_key if cfg.query_key in a.columns else cfg.query_column
    rng = np.random.default_rng(cfg.seed)
    raters = list(cfg.raters)
    order = list(rng.permutation(len(raters)))  # who takes the round-robin's extra items

    # Gold questions first, so the regular sample is drawn from the pairs they leave.
    n = min(cfg.size, n_pairs)
    gold_rows = np.array([], dtype=np.int64)
    gold_info: dict[int, tuple[int, int]] = {}
    gold_unmatched = 0
    need = 0
    if cfg.gold_rate > 0:
        if gold is None or not gold_col:
            raise ValueError(f"gold_rate is {cfg.gold_rate} but no gold table was given; pass --gold TABLE "
                             f"--gold-col COLUMN, or turn gold questions off with --gold-rate 0")
        rows, gl, exp, gold_unmatched = _gold_pool(a, gold, gold_col, cfg.keys, scheme, pa, pb, gold_source)
        need = int(gold_counts(queue_sizes(n, cfg.k, len(raters)), cfg.gold_rate).max())
        if need > len(rows):
            raise ValueError(
                f"{need} gold question(s) needed (gold_rate {cfg.gold_rate} of queues of "
                f"{int(queue_sizes(n, cfg.k, len(raters)).max())} items) but {gold_source} gives only {len(rows)} "
                f"usable: pairs in both prediction sets where exactly one side, or both, match the gold label "
                f"({gold_unmatched} gold row(s) match no prediction). Add gold pairs, lower --gold-rate or --size")
        same_pool, one_pool = np.flatnonzero(exp == 1), np.flatnonzero(exp != 1)
        n_same = min(int(round(need * cfg.gold_same_share)), len(same_pool))
        n_one = min(need - n_same, len(one_pool))
        n_same = need - n_one
        pick = np.concatenate([rng.choice(one_pool, n_one, replace=False),
                               rng.choice(same_pool, n_same, replace=False)]).astype(np.int64)
        gold_rows = rows[pick]
        gold_info = {int(r): (int(gl[p]), int(exp[p])) for r, p in zip(gold_rows, pick)}

    pool = np.setdiff1d(np.arange(n_pairs), gold_rows)
    n = min(n, len(pool))
    if n == 0:
        raise ValueError(f"{source_a}: no pairs left to sample after {len(gold_rows)} gold question(s)")
    segments = sorted(set(seg[pool]))
    seg_n = apportion([int((seg[pool] == s).sum()) for s in segments], n, at_least_one=True)
    sampled: list[int] = []
    strata = []
    for s, n_s in zip(segments, seg_n):
        in_s = pool[seg[pool] == s]
        dis_rows, agr_rows = in_s[disagree[in_s]], in_s[~disagree[in_s]]
        d, g = split_disagree(int(n_s), len(dis_rows), len(agr_rows), cfg.disagree_share)
        for flag, rows_h, n_h in ((True, dis_rows, d), (False, agr_rows, g)):
            if len(rows_h):
                strata.append({"segment": s, "disagree": flag, "population": int(len(rows_h)), "sampled": int(n_h)})
            sampled += sorted(rng.choice(rows_h, n_h, replace=False).tolist()) if n_h else []
    regular = np.array(sampled, dtype=np.int64)

    # Items: regular and gold shuffled together, numbered, each blinded by a coin.
    all_rows = np.concatenate([regular, gold_rows])
    perm = rng.permutation(len(all_rows))
    width = max(4, len(str(len(all_rows))))
    left_is_a = rng.random(len(all_rows)) < 0.5
    show_reasoning = cfg.reasoning_column in a.columns and cfg.reasoning_column in b.columns
    fields = [c for c in cfg.item_columns if c in a.columns]
    items, key_items, id_of_row = [], {}, {}
    for j, pos in enumerate(perm):
        r = int(all_rows[pos])
        item_id = f"it{j + 1:0{width}d}"
        id_of_row[r] = item_id
        sides = {"A": (pa[r], a), "B": (pb[r], b)}

        def side(name: str) -> dict[str, Any]:
            lab_i, frame = sides[name]
            lab = scheme.labels[lab_i]
            out: dict[str, Any] = {"label": lab.name, "grade": lab.grade, "tier": lab.tier}
            if show_reasoning:
                out["reasoning"] = _text(frame.at[r, cfg.reasoning_column]) or ""
            return out

        left, right = ("A", "B") if left_is_a[j] else ("B", "A")
        items.append({
            "item_id": item_id,
            "keys": {k: str(a.at[r, k]) for k in cfg.keys},
            "query": _text(a.at[r, cfg.query_column]) or "",
            "fields": {c: t for c in fields if (t := _text(a.at[r, c])) is not None},
            "left": side(left), "right": side(right),
        })
        rec: dict[str, Any] = {
            "left": left, "kind": "gold" if r in gold_info else "regular", "segment": str(seg[r]),
            "disagree": bool(disagree[r]), "query_key": str(a.at[r, qkey_col]),
            "label_a": scheme.labels[pa[r]].name, "label_b": scheme.labels[pb[r]].name,
        }
        if r in gold_info:
            gl_i, exp = gold_info[r]
            rec.update(gold_label=scheme.labels[gl_i].name, expected=("A", "same", "B")[exp])
        key_items[item_id] = rec

    # Assignment: regular items round-robin over the raters, k each; gold subsets per rater.
    reg_ids = [id_of_row[int(r)] for r in rng.permutation(regular)]
    queues: dict[str, list[str]] = {name: [] for name in raters}
    for i, item_id in enumerate(reg_ids):
        for t in range(cfg.k):
            queues[raters[order[(i * cfg.k + t) % len(raters)]]].append(item_id)
    gold_ids = [id_of_row[int(r)] for r in gold_rows]
    if gold_ids:
        for name, g in zip(raters, gold_counts([len(queues[x]) for x in raters], cfg.gold_rate)):
            queues[name] += [gold_ids[i] for i in rng.choice(len(gold_ids), int(g), replace=False)]
    for name in raters:
        queues[name] = [queues[name][i] for i in rng.permutation(len(queues[name]))]

    sheet = {
        "format": SHEET_FORMAT, "title": cfg.title, "label_scheme": scheme.name,
        "labels": [{"name": lab.name, "grade": lab.grade, "tier": lab.tier, "description": lab.description}
                   for lab in scheme.labels],
        "fields": fields, "show_reasoning": show_reasoning, "k": cfg.k, "queues": queues, "items": items,
    }
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "report"}
    key = {
        "format": KEY_FORMAT, "a": {"name": name_a, "source": source_a}, "b": {"name": name_b, "source": source_b},
        "label_scheme": scheme.name, "segment": cfg.segment, "query_key": qkey_col, "settings": settings,
        "gold_source": gold_source if gold is not None else None, "strata": strata, "items": key_items,
    }
    tid = task_id(sheet, key)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sheet = {"format": SHEET_FORMAT, "task_id": tid, "created": created, **{k: v for k, v in sheet.items() if k != "format"}}
    key = {"format": KEY_FORMAT, "task_id": tid, "created": created, **{k: v for k, v in key.items() if k != "format"}}
    summary = {
        "task_id": tid, "pairs": n_pairs, "regular_items": int(len(regular)), "gold_items": int(len(gold_rows)),
        "disagreeing_pairs": int(disagree.sum()), "sampled_disagreeing": int(disagree[regular].sum()),
        "raters": {name: {"items": len(q), "gold": sum(key_items[i]["kind"] == "gold" for i in q)}
                   for name, q in queues.items()},
        "k": cfg.k, "gold_rows_without_prediction": gold_unmatched, "reasoning_shown": show_reasoning,
    }
    return sheet, key, summary
