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


@dataclasses.dataclass
class _Pairs:
    """The two prediction sets, aligned row by row, and what the draw reads of them."""
    a: pd.DataFrame
    b: pd.DataFrame
    scheme: Any
    pa: np.ndarray  # label index per row, system A
    pb: np.ndarray
    seg: np.ndarray  # segment per row ("all" without a segment column)
    disagree: np.ndarray
    query_key: str

    @property
    def n(self) -> int:
        return len(self.a)


def make_tasks(a: pd.DataFrame, b: pd.DataFrame, cfg: SbsConfig, *, gold: pd.DataFrame | None = None,
               gold_col: str | None = None, labels: str | None = None, name_a: str = "A", name_b: str = "B",
               source_a: str = "A", source_b: str = "B", gold_source: str = "gold") -> tuple[dict, dict, dict]:
    """The sheet (for the rating page), the blinding key (for the report) and a summary.

    A is the baseline and B the candidate: the report's GSB is B against A. One generator
    (cfg.seed) draws, in this order: the raters' round-robin order, the gold questions, the
    regular sample, the items' order and sides, the queues.
    """
    pairs = _aligned(a, b, cfg, labels, source_a, source_b)
    rng = np.random.default_rng(cfg.seed)
    raters = list(cfg.raters)
    order = list(rng.permutation(len(raters)))  # who takes the round-robin's extra items
    n = min(cfg.size, pairs.n)
    gold_rows, gold_info, gold_unmatched = _draw_gold(pairs, cfg, n, rng, gold, gold_col, gold_source)
    regular, strata = _draw_regular(pairs, cfg, n, gold_rows, rng, source_a)
    items, key_items, id_of_row, fields, show_reasoning = _items(pairs, cfg, regular, gold_rows, gold_info, rng)
    queues = _queues(cfg, raters, order, [id_of_row[int(r)] for r in rng.permutation(regular)],
                     [id_of_row[int(r)] for r in gold_rows], rng)

    scheme = pairs.scheme
    sheet = {
        "format": SHEET_FORMAT, "title": cfg.title, "label_scheme": scheme.name,
        "labels": [{"name": lab.name, "grade": lab.grade, "tier": lab.tier, "description": lab.description}
                   for lab in scheme.labels],
        "fields": fields, "show_reasoning": show_reasoning, "k": cfg.k, "queues": queues, "items": items,
    }
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "report"}
    key = {
        "format": KEY_FORMAT, "a": {"name": name_a, "source": source_a}, "b": {"name": name_b, "source": source_b},
        "label_scheme": scheme.name, "segment": cfg.segment, "query_key": pairs.query_key, "settings": settings,
        "gold_source": gold_source if gold is not None else None, "strata": strata, "items": key_items,
    }
    tid = task_id(sheet, key)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sheet = {"format": SHEET_FORMAT, "task_id": tid, "created": created, **{k: v for k, v in sheet.items() if k != "format"}}
    key = {"format": KEY_FORMAT, "task_id": tid, "created": created, **{k: v for k, v in key.items() if k != "format"}}
    summary = {
        "task_id": tid, "pairs": pairs.n, "regular_items": int(len(regular)), "gold_items": int(len(gold_rows)),
        "disagreeing_pairs": int(pairs.disagree.sum()), "sampled_disagreeing": int(pairs.disagree[regular].sum()),
        "raters": {name: {"items": len(q), "gold": sum(key_items[i]["kind"] == "gold" for i in q)}
                   for name, q in queues.items()},
        "k": cfg.k, "gold_rows_without_prediction": gold_unmatched, "reasoning_shown": show_reasoning,
    }
    return sheet, key, summary


def _aligned(a: pd.DataFrame, b: pd.DataFrame, cfg: SbsConfig, labels: str | None, source_a: str,
             source_b: str) -> _Pairs:
    """B aligned to A's rows, both parsed into one scheme; every setting checked against the columns."""
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
    seg = (a[cfg.segment].map(lambda v: _text(v) or MISSING_SEGMENT).to_numpy(dtype=object) if cfg.segment
           else np.full(len(a), "all", dtype=object))
    return _Pairs(a, b, scheme, pa, pb, seg, pa != pb,
                  cfg.query_key if cfg.query_key in a.columns else cfg.query_column)


def _draw_gold(pairs: _Pairs, cfg: SbsConfig, n: int, rng, gold: pd.DataFrame | None, gold_col: str | None,
               gold_source: str) -> tuple[np.ndarray, dict[int, tuple[int, int]], int]:
    """Gold questions, drawn first so the regular sample comes from the pairs they leave: their rows,
    row -> (gold label, expected verdict), and how many gold rows matched no prediction."""
    if cfg.gold_rate <= 0:
        return np.array([], dtype=np.int64), {}, 0
    if gold is None or not gold_col:
        raise ValueError(f"gold_rate is {cfg.gold_rate} but no gold table was given; pass --gold TABLE "
                         f"--gold-col COLUMN, or turn gold questions off with --gold-rate 0")
    rows, gl, exp, unmatched = _gold_pool(pairs.a, gold, gold_col, cfg.keys, pairs.scheme, pairs.pa, pairs.pb,
                                          gold_source)
    sizes = queue_sizes(n, cfg.k, len(cfg.raters))
    need = int(gold_counts(sizes, cfg.gold_rate).max())
    if need > len(rows):
        raise ValueError(
            f"{need} gold question(s) needed (gold_rate {cfg.gold_rate} of queues of {int(sizes.max())} items) but "
            f"{gold_source} gives only {len(rows)} usable: pairs in both prediction sets where exactly one side, or "
            f"both, match the gold label ({unmatched} gold row(s) match no prediction). Add gold pairs, lower "
            f"--gold-rate or --size")
    same_pool, one_pool = np.flatnonzero(exp == 1), np.flatnonzero(exp != 1)
    n_same = min(int(round(need * cfg.gold_same_share)), len(same_pool))
    n_one = min(need - n_same, len(one_pool))
    n_same = need - n_one
    pick = np.concatenate([rng.choice(one_pool, n_one, replace=False),
                           rng.choice(same_pool, n_same, replace=False)]).astype(np.int64)
    gold_rows = rows[pick]
    return gold_rows, {int(r): (int(gl[p]), int(exp[p])) for r, p in zip(gold_rows, pick)}, unmatched


def _draw_regular(pairs: _Pairs, cfg: SbsConfig, n: int, gold_rows: np.ndarray, rng,
                  source_a: str) -> tuple[np.ndarray, list[dict]]:
    """The regular sample, stratified by segment and by disagreement, and its strata (for weighting)."""
    pool = np.setdiff1d(np.arange(pairs.n), gold_rows)
    n = min(n, len(pool))
    if n == 0:
        raise ValueError(f"{source_a}: no pairs left to sample after {len(gold_rows)} gold question(s)")
    seg, disagree = pairs.seg, pairs.disagree
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
    return np.array(sampled, dtype=np.int64), strata


def _items(pairs: _Pairs, cfg: SbsConfig, regular: np.ndarray, gold_rows: np.ndarray,
           gold_info: dict[int, tuple[int, int]], rng) -> tuple[list[dict], dict, dict, list[str], bool]:
    """Regular and gold items shuffled together, numbered, each blinded by a coin: the sheet's items,
    the key's record per item, row -> item id, the fields shown, whether reasoning is shown."""
    a, b, scheme = pairs.a, pairs.b, pairs.scheme
    all_rows = np.concatenate([regular, gold_rows])
    perm = rng.permutation(len(all_rows))
    width = max(4, len(str(len(all_rows))))
    left_is_a = rng.random(len(all_rows)) < 0.5
    show_reasoning = cfg.reasoning_column in a.columns and cfg.reasoning_column in b.columns
    fields = [c for c in cfg.item_columns if c in a.columns]

    def side(r: int, lab_i: int, frame: pd.DataFrame) -> dict[str, Any]:
        lab = scheme.labels[lab_i]
        out: dict[str, Any] = {"label": lab.name, "grade": lab.grade, "tier": lab.tier}
        if show_reasoning:
            out["reasoning"] = _text(frame.at[r, cfg.reasoning_column]) or ""
        return out

    items, key_items, id_of_row = [], {}, {}
    for j, pos in enumerate(perm):
        r = int(all_rows[pos])
        item_id = f"it{j + 1:0{width}d}"
        id_of_row[r] = item_id
        sides = {"A": side(r, pairs.pa[r], a), "B": side(r, pairs.pb[r], b)}
        left, right = ("A", "B") if left_is_a[j] else ("B", "A")
        items.append({
            "item_id": item_id,
            "keys": {k: str(a.at[r, k]) for k in cfg.keys},
            "query": _text(a.at[r, cfg.query_column]) or "",
            "fields": {c: t for c in fields if (t := _text(a.at[r, c])) is not None},
            "left": sides[left], "right": sides[right],
        })
        rec: dict[str, Any] = {
            "left": left, "kind": "gold" if r in gold_info else "regular", "segment": str(pairs.seg[r]),
            "disagree": bool(pairs.disagree[r]), "query_key": str(a.at[r, pairs.query_key]),
            "label_a": scheme.labels[pairs.pa[r]].name, "label_b": scheme.labels[pairs.pb[r]].name,
        }
        if r in gold_info:
            gl_i, exp = gold_info[r]
            rec.update(gold_label=scheme.labels[gl_i].name, expected=("A", "same", "B")[exp])
        key_items[item_id] = rec
    return items, key_items, id_of_row, fields, show_reasoning


def _queues(cfg: SbsConfig, raters: list[str], order: list[int], reg_ids: list[str], gold_ids: list[str],
            rng) -> dict[str, list[str]]:
    """Regular items round-robin over the raters, k each; a gold subset per rater; each queue shuffled."""
    queues: dict[str, list[str]] = {name: [] for name in raters}
    for i, item_id in enumerate(reg_ids):
        for t in range(cfg.k):
            queues[raters[order[(i * cfg.k + t) % len(raters)]]].append(item_id)
    if gold_ids:
        for name, g in zip(raters, gold_counts([len(queues[x]) for x in raters], cfg.gold_rate)):
            queues[name] += [gold_ids[i] for i in rng.choice(len(gold_ids), int(g), replace=False)]
    for name in raters:
        queues[name] = [queues[name][i] for i in rng.permutation(len(queues[name]))]
    return queues
