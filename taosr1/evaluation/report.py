"""Report writer shared by every evaluation: JSON for machines; Markdown, PNG and one
self-contained HTML page (figures embedded as base64 PNG) for people.

    write_report(out_dir, "Zero-shot SmolLM2 on ESCI", metrics, {"confusion": fig}, {"per_class": df})

writes out_dir/metrics.json, report.md, report.html, figures/<name>.png, tables/<name>.csv.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def to_jsonable(obj: Any) -> Any:
    """numpy scalars and arrays to Python, NaN and infinities to None, DataFrames to records."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict("records"))
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if obj is None or isinstance(obj, (int, str)):
        return obj
    return str(obj)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4f}"
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    cells = [[_fmt(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in cells)])


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="t", na_rep="–", float_format=lambda v: f"{v:.4f}",
                      escape=True)


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The top-level scalar entries of `metrics`: what a reader wants first."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool, np.number)) or v is None}


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table.t{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}table.t td,table.t th{border:1px solid #ddd;
padding:.25rem .5rem;text-align:right}table.t th{background:#f4f4f4}table.t td:first-child{text-align:left}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85rem;color:#555}
.note{color:#555;font-size:.9rem}.kv td:first-child{font-weight:600}"""


def write_report(out_dir: str | Path, title: str, metrics: dict[str, Any], figures: dict[str, Any] | None = None,
                 tables: dict[str, pd.DataFrame] | None = None, *, summary: dict[str, Any] | None = None,
                 notes: list[str] | tuple[str, ...] = (), captions: dict[str, str] | None = None,
                 max_rows: int = 50) -> dict[str, Path]:
    """Write one report in every format; returns the paths written by kind.

    Args:
        metrics: everything, nested as you like; written whole to metrics.json.
        figures: name -> matplotlib Figure; saved as figures/<name>.png and embedded in the HTML.
        tables: name -> DataFrame; saved whole as tables/<name>.csv, the first `max_rows` shown.
        summary: the key numbers shown first (default: the top-level scalars of `metrics`).
        notes: sentences shown under the summary (what was evaluated, caveats).
        captions: figure or table name -> one sentence on how to read it.
    """
    captions = captions or {}
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures, tables = figures or {}, tables or {}
    paths: dict[str, Any] = {"metrics": out / "metrics.json", "markdown": out / "report.md",
                             "html": out / "report.html", "figures": {}, "tables": {}}
    paths["metrics"].write_text(json.dumps(to_jsonable(metrics), indent=2) + "\n")
    png: dict[str, bytes] = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        png[name] = buf.getvalue()
        (out / "figures" / f"{name}.png").write_bytes(png[name])
        paths["figures"][name] = out / "figures" / f"{name}.png"
    if tables:
        (out / "tables").mkdir(exist_ok=True)
    for name, df in tables.items():
        paths["tables"][name] = out / "tables" / f"{name}.csv"
        df.to_csv(paths["tables"][name], index=False)
    top = headline(metrics) if summary is None else summary
    kv = pd.DataFrame({"metric": list(top), "value": [_fmt(v) for v in top.values()]})
    page = _Page(title, kv, list(notes), captions, max_rows)
    paths["markdown"].write_text(page.markdown(list(figures), tables))
    paths["html"].write_text(page.html(png, tables))
    return paths


@dataclass
class _Page:
    """One report's text: the headline table, the notes, then each figure and table with its caption."""

    title: str
    kv: pd.DataFrame
    notes: list[str]
    captions: dict[str, str]
    max_rows: int

    def shown(self, name: str, df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        more = f"first {self.max_rows} of {len(df)} rows; all in tables/{name}.csv" if len(df) > self.max_rows else ""
        return df.head(self.max_rows), more

    def markdown(self, figures: list[str], tables: dict[str, pd.DataFrame]) -> str:
        captions = self.captions
        md = [f"# {self.title}", "", _md_table(self.kv), ""]
        md += [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        for name in figures:
            md += [f"## {name.replace('_', ' ')}", "", f"![{name}](figures/{name}.png)", ""]
            md += [captions[name], ""] if name in captions else []
        for name, df in tables.items():
            part, more = self.shown(name, df)
            md += [f"## {name.replace('_', ' ')}", ""] + ([captions[name], ""] if name in captions else [])
            md += [_md_table(part), ""] + ([f"_{more}_", ""] if more else [])
        return "\n".join(md)

    def html(self, png: dict[str, bytes], tables: dict[str, pd.DataFrame]) -> str:
        captions, title = self.captions, html.escape(self.title)
        h = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>",
             f"<style>{_CSS}</style></head><body><h1>{title}</h1>",
             self.kv.to_html(index=False, border=0, classes="t kv", escape=True)]
        h += [f"<p class=note>{html.escape(n)}</p>" for n in self.notes]
        for name, data in png.items():
            b64 = base64.b64encode(data).decode()
            cap = f"<figcaption>{html.escape(captions[name])}</figcaption>" if name in captions else ""
            h.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2><figure><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{b64}'>{cap}</figure>")
        for name, df in tables.items():
            part, more = self.shown(name, df)
            cap = f"<p class=note>{html.escape(captions[name])}</p>" if name in captions else ""
            h.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2>{cap}{_html_table(part)}")
            if more:
                h.append(f"<p class=note>{html.escape(more)}</p>")
        h.append("<p class=note>metrics.json holds every number; tables/ holds every table as CSV.</p></body></html>")
        return "\n".join(h)
