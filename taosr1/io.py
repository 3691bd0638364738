"""Read and write the local table formats the CLI takes: CSV, Parquet, JSONL and Delta."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FORMATS = ("csv", "parquet", "jsonl", "delta")
_EXT = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
        return fmt
    p = Path(path)
    if (p / "_delta_log").is_dir() or p.suffix == ".delta":
        return "delta"
    if p.suffix.lower() in _EXT:
        return _EXT[p.suffix.lower()]
    raise ValueError(
        f"cannot tell the format of {p} from its name; use a .csv/.parquet/.jsonl name, a Delta "
        f"folder, or pass --format {{{','.join(FORMATS)}}}"
    )


def read_table(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """The whole table as pandas. CSV cells are read as text, unchanged (no NA guessing):
    a CSV has no types, and an id like 007 or a query like "NA" must survive."""
    fmt = detect_format(path, fmt)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input {p} does not exist")
    if fmt == "csv":
        return pd.read_csv(p, dtype=str, keep_default_na=False)
    if fmt == "parquet":
        return pd.read_parquet(p)
    if fmt == "jsonl":
        return pd.read_json(p, lines=True, dtype=False)
    from deltalake import DeltaTable

    return DeltaTable(str(p)).to_pandas()


def write_table(df: pd.DataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write (replacing) `path`; Delta overwrites in one commit, keeping the table's history."""
    fmt = detect_format(path, fmt)
    p = Path(path)
    if fmt != "delta":
        p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(p, index=False)
    elif fmt == "parquet":
        df.to_parquet(p, index=False)
    elif fmt == "jsonl":
        df.to_json(p, orient="records", lines=True, force_ascii=False)
    else:
        from deltalake import write_deltalake

        write_deltalake(str(p), df, mode="overwrite", schema_mode="overwrite")
    return p
