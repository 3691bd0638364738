"""Figures for people: confusion heat maps, reliability diagram, CumPT curve, segment bars.

Built with matplotlib's object API (`matplotlib.figure.Figure`, Agg canvas): no pyplot global
state, nothing shown on screen, figures freed when dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

_BLUE, _ORANGE, _GREY = "#1f77b4", "#ff7f0e", "#7f7f7f"


def _figure(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def confusion_figure(matrix, labels: list[str], title: str, ylabel: str = "gold label",
                     xlabel: str = "predicted label", col_labels: list[str] | None = None):
    """Heat map of row shares, each cell printed as count and share of its row."""
    m = np.asarray(matrix, dtype=float)
    col_labels = col_labels or labels
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = 1.0 + 0.9 * max(len(labels), len(col_labels))
    fig = _figure(side + 1.6, side)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(labels)), [f"{lab} (n={int(r)})" for lab, r in zip(labels, rows[:, 0])])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="share of the row", shrink=0.8)
    return fig


def reliability_figure(top_bins: pd.DataFrame, class_bins: dict[str, pd.DataFrame], ece: float):
    """Left: accuracy of the argmax against its confidence per bin, with bin counts. Right: each
    label's P against how often the gold label is that label."""
    fig = _figure(11, 4.6)
    ax, ax2 = fig.subplots(1, 2)
    used = top_bins[top_bins["n"] > 0]
    width = float(top_bins["hi"].iloc[0] - top_bins["lo"].iloc[0])
    ax.bar(used["lo"], used["accuracy"], width=width, align="edge", color=_BLUE, alpha=0.75,
           edgecolor="white", label="accuracy of the argmax")
    ax.plot(used["confidence"], used["accuracy"], "o", color="black", ms=4, label="bin mean confidence")
    ax.plot([0, 1], [0, 1], "--", color=_GREY, label="perfect calibration")
    for _, r in used.iterrows():
        ax.text(r["lo"] + width / 2, 0.015, f"n={int(r['n'])}", ha="center", va="bottom", fontsize=7,
                rotation=90, color="black")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence: highest P(label)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(f"Top-label reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    for name, b in class_bins.items():
        u = b[b["n"] > 0]
        ax2.plot(u["confidence"], u["accuracy"], "o-", ms=3, label=name)
    ax2.plot([0, 1], [0, 1], "--", color=_GREY)
    ax2.set_xlim(0, 1)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("P(label) (bin mean)")
    ax2.set_ylabel("share of rows whose gold is that label")
    ax2.set_title("Per-label reliability")
    ax2.legend(title="label", fontsize=8)
    return fig


def cumpt_figure(curve: pd.DataFrame, chosen: float, used: float | None = None, title: str = "CumPT: quality against beta"):
    """Macro-F1, accuracy and each tier's precision against beta; the chosen beta marked."""
    fig = _figure(10, 4.6)
    ax = fig.add_subplot()
    ax.plot(curve["beta"], curve["macro_f1"], "o-", lw=2, color=_BLUE, label="macro-F1")
    ax.plot(curve["beta"], curve["accuracy"], "s-", color=_ORANGE, label="accuracy")
    for c in [c for c in curve.columns if c.startswith("precision_")]:
        ax.plot(curve["beta"], curve[c], ":", marker=".", label=f"precision of tier {c[len('precision_'):]}")
    best = curve.loc[(curve["beta"] - chosen).abs().idxmin()]
    ax.axvline(chosen, color="black", lw=1)
    ax.annotate(f"chosen beta {chosen:.2f}\nmacro-F1 {best['macro_f1']:.3f}", (chosen, best["macro_f1"]),
                xytext=(0.5, 0.06), textcoords="axes fraction", ha="center", fontsize=9,
                bbox={"boxstyle": "round", "fc": "white", "ec": _GREY},
                arrowprops={"arrowstyle": "->", "color": "black"})
    if used is not None and abs(used - chosen) > 1e-9:
        ax.axvline(used, color=_GREY, lw=1, ls="--", label=f"beta of these predictions ({used:.2f})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1)
    ax.set_xlabel("beta (cumulative probability threshold, best grade first)")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return fig


def segment_figure(table: pd.DataFrame, column: str):
    """Accuracy and macro-F1 per segment value, with bootstrap intervals and row counts."""
    n = len(table)
    fig = _figure(8, 1.4 + 0.7 * n)
    ax = fig.add_subplot()
    y = np.arange(n)
    h = 0.38
    for off, metric, color in ((-h / 2, "accuracy", _BLUE), (h / 2, "macro_f1", _ORANGE)):
        vals = table[metric].to_numpy(dtype=float)
        lo = table.get(f"{metric}_low")
        hi = table.get(f"{metric}_high")
        err = None
        if lo is not None and lo.notna().all():
            err = np.vstack([vals - lo.to_numpy(dtype=float), hi.to_numpy(dtype=float) - vals])
        ax.barh(y + off, vals, height=h, xerr=err, color=color, capsize=3, label=metric.replace("_", "-"))
        ends = vals if err is None else vals + err[1]
        for yy, v, end in zip(y + off, vals, ends):
            ax.text(end + 0.01, yy, f"{v:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, [f"{s} (n={k})" for s, k in zip(table["segment"], table["n"])])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("score (whiskers: bootstrap interval)")
    ax.set_title(f"Quality by {column}")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def difference_figure(diffs: pd.DataFrame, a: str, b: str):
    """Forest plot: each metric's difference B - A with its paired bootstrap interval."""
    fig = _figure(7.5, 1.2 + 0.55 * len(diffs))
    ax = fig.add_subplot()
    y = np.arange(len(diffs))
    d = diffs["difference"].to_numpy(dtype=float)
    err = np.vstack([d - diffs["low"].to_numpy(dtype=float), diffs["high"].to_numpy(dtype=float) - d])
    ax.errorbar(d, y, xerr=err, fmt="o", color=_BLUE, capsize=4)
    for yy, v, lo, hi in zip(y, d, diffs["low"], diffs["high"]):
        ax.annotate(f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]", (v, yy), xytext=(0, 7), textcoords="offset points",
                    ha="center", fontsize=8)
    ax.axvline(0, color=_GREY, ls="--")
    lower_better = {"ordinal_mae"}
    ax.set_yticks(y, [f"{m}\n(lower is better)" if m in lower_better else m for m in diffs["metric"]])
    ax.invert_yaxis()
    ax.set_ylim(len(diffs) - 0.4, -0.8)
    ax.set_xlabel(f"difference {b} - {a} (paired bootstrap interval)")
    ax.set_title(f"{b} against {a}")
    return fig


def distribution_figure(shares: dict[str, Any], names: list[str], title: str, xlabel: str):
    """Grouped bars: the share of each category in each named distribution (e.g. two nights)."""
    fig = _figure(1.8 + 1.1 * len(names), 4)
    ax = fig.add_subplot()
    k = len(shares)
    w = 0.8 / k
    x = np.arange(len(names))
    for j, (label, s) in enumerate(shares.items()):
        vals = np.asarray(s, dtype=float)
        bars = ax.bar(x + (j - (k - 1) / 2) * w, vals, width=w, label=label)
        ax.bar_label(bars, [f"{v:.1%}" for v in vals], fontsize=8)
    ax.set_xticks(x, names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of pairs")
    ax.set_ylim(0, min(1.0, max(float(np.max(s)) for s in shares.values()) * 1.2 + 0.02))
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
