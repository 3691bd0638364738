"""Figures of the SBS report, on the evaluation package's matplotlib setup (no pyplot state)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taosr1.evaluation.plots import _figure

_GREEN, _GREY, _RED, _BLUE, _ORANGE = "#2e8b57", "#c8ccd2", "#c0392b", "#1f77b4", "#ff7f0e"


def gsb_figure(overall: dict[str, Any], segments: pd.DataFrame, name_a: str, name_b: str):
    """Stacked shares per row (all items, then each segment): A better | Same | B better, GSB written."""
    rows = [("all items", overall["share_a_better"], overall["share_same"], overall["share_b_better"],
             overall["gsb"], overall["gsb_ci"]["low"], overall["gsb_ci"]["high"], overall["rated"])]
    if len(segments) > 1:
        for _, s in segments.iterrows():
            if s.get("gsb") is not None and not pd.isna(s.get("gsb")):
                rows.append((str(s["segment"]), s["share_a_better"], s["share_same"], s["share_b_better"], s["gsb"],
                             s.get("gsb_low"), s.get("gsb_high"), int(s["rated"])))
    fig = _figure(10, 1.2 + 0.5 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    a = np.array([r[1] for r in rows]); s = np.array([r[2] for r in rows]); b = np.array([r[3] for r in rows])
    ax.barh(y, a, color=_RED, label=f"{name_a} better")
    ax.barh(y, s, left=a, color=_GREY, label="Same")
    ax.barh(y, b, left=a + s, color=_GREEN, label=f"{name_b} better")
    for yi, r in zip(y, rows):
        ci = "" if r[5] is None or pd.isna(r[5]) else f" [{r[5]:+.2f}, {r[6]:+.2f}]"
        ax.text(1.02, yi, f"GSB {r[4]:+.3f}{ci}", va="center", fontsize=9)
    ax.set_yticks(y, [f"{r[0]} (n={r[7]})" for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of rated items")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=9)
    return fig


def goodrate_figure(overall: dict[str, Any], name_a: str, name_b: str):
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot()
    x = np.arange(2)
    for off, side, color, name in ((-0.18, "a", _BLUE, name_a), (0.18, "b", _ORANGE, name_b)):
        vals, lo, hi = [], [], []
        for kind in ("item", "query"):
            k = f"{kind}_goodrate_{side}"
            v, ci = overall[k], overall[f"{k}_ci"]
            vals.append(v)
            lo.append(v - ci["low"] if ci["low"] is not None else 0)
            hi.append(ci["high"] - v if ci["high"] is not None else 0)
        ax.bar(x + off, vals, width=0.34, color=color, label=name, yerr=[lo, hi], capsize=4)
        for xi, v in zip(x + off, vals):
            ax.text(xi, 0.02, f"{v:.3f}", ha="center", va="bottom", fontsize=9, color="white")
    ax.set_xticks(x, ["Item Goodrate", "Query Goodrate"])
    ax.set_ylim(0, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("share")
    ax.legend(frameon=False, fontsize=9, loc="upper center", ncol=2)
    return fig


def rater_figure(raters: pd.DataFrame, threshold: float):
    r = raters[raters["gold_answered"] > 0]
    fig = _figure(max(4.5, 0.7 * len(r) + 2), 3.6)
    ax = fig.add_subplot()
    colors = [_BLUE if k else _RED for k in r["kept"]]
    ax.bar(range(len(r)), r["gold_accuracy"], color=colors)
    for i, (_, row) in enumerate(r.iterrows()):
        ax.text(i, row["gold_accuracy"] + 0.02, f"{row['gold_correct']}/{row['gold_answered']}",
                ha="center", fontsize=8)
    ax.axhline(threshold, ls="--", color="black", lw=1)
    ax.set_xticks(range(len(r)), r["rater"], rotation=30 if len(r) > 6 else 0)
    ax.set_ylim(0, 1.1)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("accuracy on gold questions")
    ax.set_title("Rater accuracy on gold (red: excluded)")
    return fig
