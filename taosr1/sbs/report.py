"""Un-blind the answers of a side-by-side task set and score it: GSB, Item and Query Goodrate,
per segment; rater accuracy on gold questions, agreement between raters, items in dispute.

What the rater answers: for one query and one item, which of the two grades shown (Left or
Right) describes more correctly how well the item matches the query, or Same (equally correct,
or equally wrong). Un-blinded with the key, each answer is a verdict: A better, Same, B better.

Definitions (B is the candidate, A the baseline; only regular items count, never gold ones):
- item verdict: the answer most of the kept raters gave it; a tie is Same (and in dispute);
  an adjudicated answer replaces it.
- GSB = (G - B) / (G + S + B) over rated items: G items where B's grade is more correct, B where
  A's is, S the same. +1: B always better; 0: no difference; -1: A always better.
- an item is good for a system when its grade was judged at least as correct as the other
  system's (verdict that system better, or Same). Item Goodrate of a system = share of rated
  items good for it, so Item Goodrate(B) - Item Goodrate(A) = GSB.
- Query Goodrate of a system = share of rated queries where at least `query_good_share` (by
  default all) of the query's rated items are good for it.

With a stratified sample that does not mirror the population (disagree_share set), GSB and
Item Goodrate weight each stratum (segment x labels differ or not) by its share of the pairs;
Query Goodrate is a figure of the sampled queries. Intervals: percentile bootstrap of items
within strata (queries for Query Goodrate), drawn with taosr1.evaluation.metrics.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from taosr1.evaluation.metrics import percentile_interval, resample_confusions
from taosr1.sbs.config import SbsReportConfig
from taosr1.sbs.tasks import ANSWERS, VERDICTS, Tasks

CODE = {v: i for i, v in enumerate(VERDICTS)}  # A better 0, same 1, B better 2: ordinal


def unblind(answers: pd.DataFrame, tasks: Tasks, key: dict[str, Any]) -> pd.DataFrame:
    """Answers (rater, item_id, answer in left/same/right) with the verdict in A/same/B, the item's
    kind, segment and, for gold items, the expected verdict and whether the answer matched it."""
    df = answers.copy()
    unknown = sorted(set(df["item_id"]) - set(key["items"]))
    if unknown:
        raise ValueError(f"{len(unknown)} answered item(s) are not in the task set, e.g. {unknown[:3]}")
    strangers = sorted(set(df["rater"]) - set(tasks.raters))
    if strangers:
        raise ValueError(f"answers from rater(s) {strangers} who are not in the task set")
    bad = ~df["answer"].isin(ANSWERS)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} answer(s) are not one of {ANSWERS}, e.g. {df.loc[bad, 'answer'].head(3).tolist()}")
    rec = pd.DataFrame.from_dict(key["items"], orient="index")
    rec = rec.reindex(columns=["left", "kind", "segment", "disagree", "query_key", "expected"])
    m = rec.loc[df["item_id"]].reset_index(drop=True)
    other = m["left"].map({"A": "B", "B": "A"})
    ans = df["answer"].to_numpy()
    df = df.reset_index(drop=True)
    df["verdict"] = np.where(ans == "same", "same", np.where(ans == "left", m["left"], other))
    for c in ("kind", "segment", "disagree", "query_key", "expected"):
        df[c] = m[c].to_numpy()
    df["correct"] = np.where(df["kind"] == "gold", df["verdict"] == df["expected"], np.nan)
    return df


def rater_quality(df: pd.DataFrame, tasks: Tasks, cfg: SbsReportConfig) -> pd.DataFrame:
    """One row per rater: progress, gold accuracy, whether kept, and where their answers lean."""
    rows = []
    for name in tasks.raters:
        mine = df[df["rater"] == name]
        gold = mine[mine["kind"] == "gold"]
        acc = float(gold["correct"].astype(bool).mean()) if len(gold) else None
        if len(gold) >= cfg.min_gold_answers and acc < cfg.min_gold_accuracy:
            status = f"excluded: gold accuracy {acc:.2f} < {cfg.min_gold_accuracy:.2f}"
        elif len(gold) < cfg.min_gold_answers:
            status = f"kept, unchecked: {len(gold)} gold answer(s) (< {cfg.min_gold_answers})"
        else:
            status = "kept"
        n = len(mine)
        rows.append({
            "rater": name, "queue": len(tasks.queue(name)), "answered": n,
            "gold_answered": len(gold), "gold_correct": int(gold["correct"].astype(bool).sum()) if len(gold) else 0,
            "gold_accuracy": acc, "kept": not status.startswith("excluded"), "status": status,
            "left_share": float((mine["answer"] == "left").mean()) if n else None,
            "same_share": float((mine["answer"] == "same").mean()) if n else None,
            "right_share": float((mine["answer"] == "right").mean()) if n else None,
            "median_seconds": float(mine["seconds"].median()) if n and mine["seconds"].notna().any() else None,
        })
    return pd.DataFrame(rows)


def read_adjudication(table: pd.DataFrame, key: dict[str, Any], source: str) -> dict[str, str]:
    """item_id -> adjudicated verdict (A/same/B) from a table with columns item_id and adjudicated
    (left / same / right, as the sheet shows the item; empty cells are skipped)."""
    for col in ("item_id", "adjudicated"):
        if col not in table.columns:
            raise ValueError(f"{source}: column {col!r} not found (columns: {list(table.columns)}); fill the "
                             f"`adjudicated` column of tables/disputes.csv with left, same or right")
    out: dict[str, str] = {}
    for i, (item_id, v) in enumerate(zip(table["item_id"].astype(str), table["adjudicated"]), start=2):
        if v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip():
            continue
        a = {"l": "left", "s": "same", "r": "right"}.get(str(v).strip().lower(), str(v).strip().lower())
        if a not in ANSWERS:
            raise ValueError(f"{source} line {i}: adjudicated value {v!r} for {item_id} is not left, same or right")
        rec = key["items"].get(item_id)
        if rec is None or rec["kind"] != "regular":
            raise ValueError(f"{source} line {i}: {item_id} is not a regular item of this task set")
        out[item_id] = "same" if a == "same" else rec["left"] if a == "left" else {"A": "B", "B": "A"}[rec["left"]]
    return out


def item_verdicts(kept: pd.DataFrame, key: dict[str, Any], adjudicated: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per regular item of the key: counts of each verdict among kept raters, the majority
    verdict (a tie: Same, in dispute), the adjudicated verdict, the final one (None: unrated)."""
    adjudicated = adjudicated or {}
    reg = {i: r for i, r in key["items"].items() if r["kind"] == "regular"}
    counts = (kept[kept["kind"] == "regular"].groupby(["item_id", "verdict"]).size().unstack(fill_value=0)
              .reindex(index=list(reg), columns=list(VERDICTS), fill_value=0))
    c = counts.to_numpy()
    n = c.sum(1)
    top = c.max(1)
    tie = (c == top[:, None]).sum(1) > 1
    majority = np.where(n == 0, None, np.where(tie, "same", np.array(VERDICTS, dtype=object)[c.argmax(1)]))
    out = pd.DataFrame({"item_id": list(reg), "ratings": n, "n_A": c[:, 0], "n_same": c[:, 1], "n_B": c[:, 2],
                        "majority": majority, "tie": tie & (n > 0)})
    out["disputed"] = out["tie"] | ((out["n_A"] > 0) & (out["n_B"] > 0))
    out["adjudicated"] = out["item_id"].map(adjudicated)
    out["verdict"] = out["adjudicated"].where(out["adjudicated"].notna(), out["majority"])
    out["segment"] = [reg[i]["segment"] for i in out["item_id"]]
    out["disagree"] = [reg[i]["disagree"] for i in out["item_id"]]
    out["query_key"] = [reg[i]["query_key"] for i in out["item_id"]]
    out["left"] = [reg[i]["left"] for i in out["item_id"]]
    out["label_a"] = [reg[i]["label_a"] for i in out["item_id"]]
    out["label_b"] = [reg[i]["label_b"] for i in out["item_id"]]
    return out


def _stratum(seg, dis) -> str:
    return f"{seg}|{'differ' if dis else 'agree'}"


def estimate(items: pd.DataFrame, population: dict[str, int], cfg: SbsReportConfig, seed_offset: int = 0) -> dict[str, Any]:
    """GSB, Item and Query Goodrate of the rated `items` (item_verdicts rows), strata weighted by
    `population` (stratum -> pairs, for the strata `items` stand for), with percentile bootstrap intervals."""
    rated = items[items["verdict"].notna()]
    res: dict[str, Any] = {"items": int(len(items)), "rated": int(len(rated))}
    if rated.empty:
        return res | {"gsb": None, "item_goodrate_a": None, "item_goodrate_b": None,
                      "query_goodrate_a": None, "query_goodrate_b": None}
    codes = rated["verdict"].map(CODE).to_numpy()
    raw = np.bincount(codes, minlength=3)
    res.update(G=int(raw[2]), S=int(raw[1]), B=int(raw[0]))
    strata = [_stratum(s, d) for s, d in zip(rated["segment"], rated["disagree"])]
    names = sorted(set(strata))
    weights = np.array([population.get(h, 0) for h in names], dtype=float)
    if weights.sum() == 0:
        weights = np.ones(len(names))
    weights /= weights.sum()
    uncovered = sorted(h for h in population if population[h] and h not in names)
    strata = np.array(strata)
    shares = np.zeros(3)
    draws = np.zeros((cfg.bootstrap, 3)) if cfg.bootstrap else None
    for j, (h, w) in enumerate(zip(names, weights)):
        c = codes[strata == h]
        shares += w * np.bincount(c, minlength=3) / len(c)
        if cfg.bootstrap:
            draws += w * resample_confusions(c, 3, cfg.bootstrap, cfg.seed + seed_offset + j) / len(c)

    def put(name: str, point: float, boot: np.ndarray | None) -> None:
        res[name] = float(point)
        lo, hi = percentile_interval(boot, cfg.ci_level) if boot is not None else (None, None)
        res[f"{name}_ci"] = {"low": lo, "high": hi}

    res["share_a_better"], res["share_same"], res["share_b_better"] = (float(x) for x in shares)
    put("gsb", shares[2] - shares[0], None if draws is None else draws[:, 2] - draws[:, 0])
    put("item_goodrate_a", shares[0] + shares[1], None if draws is None else draws[:, 0] + draws[:, 1])
    put("item_goodrate_b", shares[2] + shares[1], None if draws is None else draws[:, 2] + draws[:, 1])
    eps = 1e-9
    q = rated.assign(good_a=rated["verdict"] != "B", good_b=rated["verdict"] != "A").groupby("query_key")[
        ["good_a", "good_b"]].mean()
    qa = (q["good_a"] >= cfg.query_good_share - eps).to_numpy()
    qb = (q["good_b"] >= cfg.query_good_share - eps).to_numpy()
    qd = resample_confusions(qa * 2 + qb, 4, cfg.bootstrap, cfg.seed + seed_offset + 997) / len(q) if cfg.bootstrap else None
    res["queries"] = int(len(q))
    put("query_goodrate_a", qa.mean(), None if qd is None else qd[:, 2] + qd[:, 3])
    put("query_goodrate_b", qb.mean(), None if qd is None else qd[:, 1] + qd[:, 3])
    sample_share = np.array([(strata == h).sum() for h in names]) / len(strata)
    res["max_weight_ratio"] = float((weights / sample_share).max())  # 1.0: the sample mirrors the population
    res["uncovered_strata"] = uncovered
    return res


def agreement(kept: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """Agreement among kept raters on every item two or more of them answered (gold ones too),
    on the un-blinded verdicts (A better < Same < B better): pairwise Cohen's kappa (scikit-learn),
    Fleiss' kappa (statsmodels) on the items with the usual number of ratings, Krippendorff's
    alpha (krippendorff), nominal and ordinal, on all of them."""
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import fleiss_kappa

    wide = kept.assign(code=kept["verdict"].map(CODE)).pivot(index="item_id", columns="rater", values="code")
    per_item = wide.notna().sum(1)
    shared = wide[per_item >= 2]
    out: dict[str, Any] = {"items_with_two_or_more": int(len(shared)), "raters": int(wide.shape[1])}
    pairs = []
    for r1, r2 in combinations(sorted(wide.columns), 2):
        both = wide[[r1, r2]].dropna()
        if len(both) < 2:
            continue
        x, y = both[r1].astype(int).to_numpy(), both[r2].astype(int).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            k = cohen_kappa_score(x, y, labels=[0, 1, 2])
        pairs.append({"rater_1": r1, "rater_2": r2, "items": len(both), "agreement": float((x == y).mean()),
                      "cohen_kappa": None if np.isnan(k) else float(k)})
    pairs_df = pd.DataFrame(pairs, columns=["rater_1", "rater_2", "items", "agreement", "cohen_kappa"])
    ks = pairs_df["cohen_kappa"].dropna()
    out["mean_cohen_kappa"] = float(ks.mean()) if len(ks) else None
    if len(shared):
        counts = np.stack([(shared == c).sum(1).to_numpy() for c in range(3)], axis=1)  # [items, answers]
        n = counts.sum(1)
        out["pairwise_agreement"] = float((counts * (counts - 1)).sum() / (n * (n - 1)).sum())
        m = int(per_item[per_item >= 2].mode().max())
        full = wide[per_item == m]
        table = np.stack([(full == c).sum(1).to_numpy() for c in range(3)], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            fk = float(fleiss_kappa(table, method="fleiss"))
        out["fleiss_kappa"] = None if np.isnan(fk) else fk
        out["fleiss_items"], out["fleiss_raters_per_item"] = int(len(full)), m
        data = wide.T.to_numpy(dtype=float)  # raters x items, nan where not rated
        for level in ("nominal", "ordinal"):
            try:
                a = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level, value_domain=[0, 1, 2]))
            except (ValueError, ZeroDivisionError):
                a = float("nan")
            out[f"krippendorff_alpha_{level}"] = None if np.isnan(a) else a
    else:
        out.update(pairwise_agreement=None, fleiss_kappa=None, fleiss_items=0, fleiss_raters_per_item=None,
                   krippendorff_alpha_nominal=None, krippendorff_alpha_ordinal=None)
    return out, pairs_df


CAPTIONS = {
    "gsb": "Share of rated items where B's grade was judged more correct (green), the same (grey) or A's more "
           "correct (red), overall and per segment; GSB = green - red, with its bootstrap interval.",
    "goodrate": "Item Goodrate (share of items where a system's grade was judged at least as correct as the "
                "other's) and Query Goodrate (share of queries whose rated items all are), with intervals.",
    "rater_gold_accuracy": "Each rater's accuracy on gold questions; raters below the dashed line (with enough "
                           "gold answers) are excluded and their answers count nowhere.",
    "segments": "GSB, Item and Query Goodrate per segment.",
    "raters": "Per rater: answers, gold accuracy, kept or excluded, how often each side was chosen (a rater far "
              "from an even left/right split may be leaning on position), median seconds per item.",
    "agreement_pairs": "Cohen's kappa of each pair of kept raters on the items both answered.",
    "disputes": "Items whose kept raters disagree (a tie, or one chose A's side and another B's), as the sheet "
                "shows them (left/right, blinded). Fill `adjudicated` (left, same or right) and pass the file "
                "back with --adjudication.",
    "items": "Every regular item, un-blinded: both systems' labels, the ratings and the verdict.",
    "strata": "The sample's strata: pairs in the population, items sampled and rated; GSB weights each "
              "stratum by its population share.",
}


_ESTIMATES = ("gsb", "item_goodrate_a", "item_goodrate_b", "query_goodrate_a", "query_goodrate_b",
              "share_a_better", "share_same", "share_b_better")


def _disputes(iv: pd.DataFrame, df: pd.DataFrame, tasks: Tasks) -> pd.DataFrame:
    """Disputed items in the sheet's blinded terms, for an adjudicator who should not know the systems."""
    rows = []
    disputed = iv[iv["disputed"]]
    given = df[df["kept"] & df["item_id"].isin(disputed["item_id"])]
    names = (given.groupby(["item_id", "answer"])["rater"].agg(lambda s: ", ".join(sorted(s))).unstack()
             .reindex(columns=list(ANSWERS)).fillna(""))
    for _, r in disputed.iterrows():
        it = tasks.items[r["item_id"]]
        by = names.loc[r["item_id"]]
        flip = {"A": "left", "B": "right", "same": "same"} if r["left"] == "A" else {"A": "right", "B": "left", "same": "same"}
        rows.append({"item_id": r["item_id"], **it["keys"], "query": it["query"],
                     "title": next(iter(it["fields"].values()), ""),
                     "left_label": it["left"]["label"], "right_label": it["right"]["label"],
                     "left_by": by["left"], "same_by": by["same"], "right_by": by["right"],
                     "majority": "tie" if r["tie"] else flip[r["majority"]],
                     "adjudicated": "" if pd.isna(r["adjudicated"]) else flip[r["adjudicated"]]})
    return pd.DataFrame(rows, columns=["item_id", *tasks.sheet["items"][0]["keys"], "query", "title", "left_label",
                                       "right_label", "left_by", "same_by", "right_by", "majority", "adjudicated"]
                        if tasks.sheet["items"] else None)


def _fmt_ci(v: float | None, ci: dict | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    f = "{:+.3f}" if signed else "{:.3f}"
    if not ci or ci.get("low") is None:
        return f.format(v)
    return f"{f.format(v)} [{f.format(ci['low'])}, {f.format(ci['high'])}]"


def sbs_report(tasks: Tasks, key: dict[str, Any], answers: pd.DataFrame, cfg: SbsReportConfig, *,
               adjudicated: dict[str, str] | None = None):
    """Metrics, figures, tables, headline and notes of a task set's answers (for `write_report`)."""
    from taosr1.sbs import plots

    name_a, name_b = key["a"]["name"], key["b"]["name"]
    df = unblind(answers, tasks, key)
    raters = rater_quality(df, tasks, cfg)
    kept_names = set(raters.loc[raters["kept"], "rater"])
    df["kept"] = df["rater"].isin(kept_names)
    kept = df[df["kept"]]
    iv = item_verdicts(kept, key, adjudicated)
    if not iv["verdict"].notna().any():
        raise ValueError(f"no regular item of {tasks.path} has an answer from a kept rater yet "
                         f"({len(answers)} answer(s) in all); rate first, then report")
    population = {_stratum(s["segment"], s["disagree"]): s["population"] for s in key["strata"]}
    overall = estimate(iv, population, cfg)
    segments_full = _segment_rows(iv, population, cfg)
    agree, pairs = agreement(kept) if len(kept_names) >= 2 else ({"raters": len(kept_names)}, pd.DataFrame())
    strata = pd.DataFrame(key["strata"])
    rated_by = iv[iv["verdict"].notna()].groupby(["segment", "disagree"]).size()
    strata["rated"] = [int(rated_by.get((s, d), 0)) for s, d in zip(strata["segment"], strata["disagree"])]
    excluded = raters[~raters["kept"]]
    gold = df[df["kind"] == "gold"]
    metrics: dict[str, Any] = {
        "a": name_a, "b": name_b, "source_a": key["a"]["source"], "source_b": key["b"]["source"],
        "task_id": tasks.task_id, "label_scheme": key["label_scheme"], "segment_column": key["segment"],
        **{k: overall[k] for k in _RATES},
        "G": overall.get("G"), "S": overall.get("S"), "B": overall.get("B"),
        "items": overall["items"], "rated_items": overall["rated"], "queries": overall.get("queries"),
        "ci": {k: overall[f"{k}_ci"] for k in _RATES},
        "reweighted": key["settings"]["disagree_share"] is not None, "uncovered_strata": overall["uncovered_strata"],
        "shares": {"a_better": overall["share_a_better"], "same": overall["share_same"],
                   "b_better": overall["share_b_better"]},
        "answers": int(len(df)), "answers_counted": int(((df["kind"] == "regular") & df["kept"]).sum()),
        "gold": {"items": int(sum(r["kind"] == "gold" for r in key["items"].values())), "answers": int(len(gold)),
                 "accuracy_all": float(gold["correct"].astype(bool).mean()) if len(gold) else None,
                 "min_accuracy": cfg.min_gold_accuracy, "min_answers": cfg.min_gold_answers},
        "raters": raters, "excluded_raters": excluded["rater"].tolist(),
        "agreement": agree, "agreement_pairs": pairs,
        "disputes": int(iv["disputed"].sum()), "adjudicated": int(iv["adjudicated"].notna().sum()),
        "segments": segments_full, "strata": strata,
        "bootstrap": {"resamples": cfg.bootstrap, "level": cfg.ci_level, "seed": cfg.seed},
        "definitions": _definitions(name_a, name_b, cfg),
    }
    summary = _summary(overall, name_a, name_b, len(kept_names), excluded, gold, agree, iv)
    notes = _notes(metrics, key, overall, excluded, cfg)
    figures = {"gsb": plots.gsb_figure(overall, segments_full, name_a, name_b),
               "goodrate": plots.goodrate_figure(overall, name_a, name_b)}
    if len(gold):
        figures["rater_gold_accuracy"] = plots.rater_figure(raters, cfg.min_gold_accuracy)
    segments = segments_full[["segment", "rated", "queries", "G", "S", "B", "gsb", "gsb_low", "gsb_high",
                              *_RATES[1:]]]
    tables = {"segments": segments, "raters": raters, "agreement_pairs": pairs, "disputes": _disputes(iv, df, tasks),
              "strata": strata, "items": _item_table(iv, tasks, key)}
    return metrics, figures, tables, summary, notes


_RATES = ("gsb", "item_goodrate_a", "item_goodrate_b", "query_goodrate_a", "query_goodrate_b")


def _segment_rows(iv: pd.DataFrame, population: dict[str, int], cfg: SbsReportConfig) -> pd.DataFrame:
    """The estimates per segment, each with its own bootstrap stream."""
    rows = []
    for j, seg in enumerate(sorted(iv["segment"].unique())):
        pop_s = {h: n for h, n in population.items() if h.rsplit("|", 1)[0] == seg}
        e = estimate(iv[iv["segment"] == seg], pop_s, cfg, seed_offset=1000 * (j + 1))
        row = {"segment": seg, "items": e["items"], "rated": e["rated"], "queries": e.get("queries"),
               "G": e.get("G"), "S": e.get("S"), "B": e.get("B")}
        for k in _ESTIMATES:
            row[k] = e.get(k)
            if k in _RATES:
                row[f"{k}_low"], row[f"{k}_high"] = (e.get(f"{k}_ci") or {}).get("low"), (e.get(f"{k}_ci") or {}).get("high")
        rows.append(row)
    return pd.DataFrame(rows)


def _item_table(iv: pd.DataFrame, tasks: Tasks, key: dict[str, Any]) -> pd.DataFrame:
    """One row per regular item: its keys, query, title, both labels, the answers and the verdict."""
    items = iv.assign(query=[tasks.items[i]["query"] for i in iv["item_id"]],
                      title=[next(iter(tasks.items[i]["fields"].values()), "") for i in iv["item_id"]])
    for k in key["settings"]["keys"]:
        items[k] = [tasks.items[i]["keys"][k] for i in items["item_id"]]
    return items[["item_id", *key["settings"]["keys"], "query", "title", "segment", "label_a", "label_b", "disagree",
                  "ratings", "n_A", "n_same", "n_B", "majority", "disputed", "adjudicated", "verdict"]]


def _definitions(name_a: str, name_b: str, cfg: SbsReportConfig) -> dict[str, str]:
    return {
        "question": "Which grade describes more correctly how well this item matches the query? "
                    "Left / Same (equally correct or equally wrong) / Right.",
        "gsb": f"(G - B) / (G + S + B): G items where {name_b}'s grade is more correct, B where {name_a}'s is",
        "item_goodrate": "share of rated items where the system's grade is at least as correct as the other's",
        "query_goodrate": f"share of rated queries where at least {cfg.query_good_share:.0%} of the rated items "
                          f"are good for the system",
    }


def _summary(overall: dict, name_a: str, name_b: str, n_kept: int, excluded: pd.DataFrame, gold: pd.DataFrame,
             agree: dict, iv: pd.DataFrame) -> dict[str, str]:
    """The headline table: one line per figure, intervals in brackets."""
    def both(k: str) -> str:
        return f"{_fmt_ci(overall[k + '_a'], overall[k + '_a_ci'])} / {_fmt_ci(overall[k + '_b'], overall[k + '_b_ci'])}"

    return {
        "A (baseline)": name_a, "B (candidate)": name_b,
        "GSB, B against A": _fmt_ci(overall["gsb"], overall["gsb_ci"], signed=True),
        "G / S / B (rated items)": f"{overall['G']} / {overall['S']} / {overall['B']}",
        f"Item Goodrate {name_a} / {name_b}": both("item_goodrate"),
        f"Query Goodrate {name_a} / {name_b}": both("query_goodrate"),
        "items rated / sampled (queries)": f"{overall['rated']} / {overall['items']} ({overall.get('queries')})",
        "raters kept / excluded": f"{n_kept} / {len(excluded)}"
                                  + (f" ({', '.join(excluded['rater'])})" if len(excluded) else ""),
        "gold accuracy, all answers": "–" if not len(gold) else f"{gold['correct'].astype(bool).mean():.1%} "
                                                                  f"({len(gold)} answers)",
        "agreement: Fleiss' kappa / Krippendorff's alpha (ordinal) / mean Cohen's kappa": " / ".join(
            "–" if agree.get(k) is None else f"{agree[k]:.3f}"
            for k in ("fleiss_kappa", "krippendorff_alpha_ordinal", "mean_cohen_kappa")),
        "items in dispute (adjudicated)": f"{int(iv['disputed'].sum())} ({int(iv['adjudicated'].notna().sum())})",
    }


def _notes(metrics: dict, key: dict[str, Any], overall: dict, excluded: pd.DataFrame,
           cfg: SbsReportConfig) -> list[str]:
    """What a reader of the report needs to read its numbers right."""
    name_a, name_b = metrics["a"], metrics["b"]
    notes = [
        f"A = {key['a']['source']}; B = {key['b']['source']}. Raters compared the two grades blind: which system "
        f"was Left was decided by a coin per item. Gold questions ({metrics['gold']['items']} items) count only "
        f"for rater accuracy.",
        "Raters were asked: " + metrics["definitions"]["question"],
        f"GSB = (G - B) / (G + S + B): G = items where {name_b}'s grade was judged more correct, B = where "
        f"{name_a}'s was. An item's verdict is the majority of its kept raters (a tie counts as Same and is listed "
        f"in disputes); adjudicated items use the adjudicated answer.",
        "Item Goodrate of a system: share of rated items where its grade was judged at least as correct as the "
        "other's (so Item Goodrate B - A = GSB). Query Goodrate: share of rated queries where "
        f"{'all' if cfg.query_good_share >= 1 else f'at least {cfg.query_good_share:.0%}'} of the query's rated "
        "items are good for the system.",
        f"Raters with at least {cfg.min_gold_answers} gold answers and gold accuracy below {cfg.min_gold_accuracy:.0%} "
        f"are excluded: {', '.join(excluded['rater']) or 'none'}.",
        f"Intervals: {cfg.ci_level:.0%} percentile bootstrap ({cfg.bootstrap} resamples, seed {cfg.seed}) of items "
        f"within strata (of queries for Query Goodrate); items of one query are resampled independently.",
    ]
    if metrics["reweighted"]:
        notes.append("The sample over- or under-represents some strata (disagree_share): GSB and Item Goodrate "
                     "weight each stratum by its share of all pairs; G / S / B are raw counts; Query Goodrate "
                     "is a figure of the sampled queries.")
    if overall["uncovered_strata"]:
        notes.append(f"Strata with pairs but no rated item (left out of the estimate): {overall['uncovered_strata']}")
    return notes
