"""The human-labelled ESCI pairs that ship with taosr1 (Apache-2.0; data card taosr1/data/ESCI_README.md).

- `sample`: 1,263 pairs over 500 queries, titles only (esci_us_sample.csv);
- `judged`: 5,008 pairs over 113 queries, 20-78 judged products each, with brand, colour, bullet points
  and description (esci_us_judged.parquet: the CSV of the data card, every row and column, compressed);
- `union`: both, a pair in both files counted once (6,221 pairs over 600 queries).

A source named `bundled:NAME` reads one of them wherever a table of labelled pairs is read (`read_pairs`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from taosr1.core.resources import data_dir

PREFIX = "bundled:"
FILES = {"sample": "esci_us_sample.csv", "judged": "esci_us_judged.parquet"}
NAMES = (*FILES, "union")
KEYS = ["query_id", "product_id"]


def is_bundled(source: str) -> bool:
    return str(source).startswith(PREFIX)


def read_bundled(name: str) -> pd.DataFrame:
    """One bundled set by name; `dataset` says which file each row comes from (`both` for a shared pair)."""
    if name not in NAMES:
        raise ValueError(f"no bundled data set {name!r}; the bundled sets are {list(NAMES)} (as {PREFIX}NAME)")
    if name == "union":
        return union(read_bundled("judged"), read_bundled("sample"))
    f = data_dir() / FILES[name]
    df = pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f)
    return df.assign(dataset=name)


def union(judged: pd.DataFrame, sample: pd.DataFrame) -> pd.DataFrame:
    """The judged pairs, then the sample's pairs that are not among them. A shared pair keeps the judged
    row (its full title and texts) and the sample's `source`; its `dataset` is `both`."""
    key = lambda df: pd.MultiIndex.from_frame(df[KEYS].astype(str))  # noqa: E731
    shared = key(sample).isin(key(judged))
    src = sample[shared].set_index(KEYS)["source"] if "source" in sample else None
    out = judged.copy()
    if src is not None:
        out["source"] = pd.Series(out.set_index(KEYS).index.map(src.to_dict()), index=out.index)
        out.loc[out["source"].notna(), "dataset"] = "both"
    return pd.concat([out, sample[~shared]], ignore_index=True)


def read_pairs(source: str, fmt: str | None = None, options: dict[str, Any] | None = None) -> pd.DataFrame:
    """A table of labelled pairs: `bundled:NAME`, or any table `read_table` reads."""
    if is_bundled(source):
        return read_bundled(str(source)[len(PREFIX):])
    from taosr1.storage.tables import read_table

    return read_table(source, fmt, options)
