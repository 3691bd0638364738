"""Read and write the table formats the CLI takes: CSV, Parquet, JSONL and Delta.

A path may be local or an object-store URI (s3://, gs://, abfss://, ...): files go
through fsspec, Delta tables through delta-rs's own object stores, with the options of
taosr1.storage.stores (the environment's AWS_* / AZURE_* / GOOGLE_* settings, or `options`).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from taosr1.storage import stores

FORMATS = ("csv", "parquet", "jsonl", "delta")
_EXT = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def _suffix(path: str | Path) -> str:
    return PurePosixPath(str(path).split("://", 1)[-1]).suffix.lower()


def _remote_fs(path: str | Path, options: dict[str, Any] | None):
    """(fsspec filesystem, path within it) for an object-store URI, with taosr1.storage.stores's options."""
    return stores.filesystem(str(path), stores.options_for(str(path), options))


def is_delta(path: str | Path, options: dict[str, Any] | None = None) -> bool:
    if stores.is_remote(path):
        fs, p = _remote_fs(path, options)
        return fs.isdir(stores.join(p, "_delta_log"))
    return (Path(path) / "_delta_log").is_dir()


def exists(path: str | Path, options: dict[str, Any] | None = None) -> bool:
    if stores.is_remote(path):
        fs, p = _remote_fs(path, options)
        return fs.exists(p)
    return Path(path).exists()


def detect_format(path: str | Path, fmt: str | None = None, options: dict[str, Any] | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
        return fmt
    suffix = _suffix(path)
    if suffix == ".delta" or is_delta(path, options):
        return "delta"
    if suffix in _EXT:
        return _EXT[suffix]
    raise ValueError(
        f"cannot tell the format of {path} from its name; use a .csv/.parquet/.jsonl name, a Delta "
        f"folder, or pass --format {{{','.join(FORMATS)}}}"
    )


def _fs_options(path: str | Path, options: dict[str, Any] | None) -> dict[str, Any] | None:
    """pandas' storage_options (fsspec arguments) for a remote path, None for a local one."""
    if not stores.is_remote(path):
        return None
    return stores.fsspec_options(str(path), stores.options_for(str(path), options))


def read_table(path: str | Path, fmt: str | None = None, options: dict[str, Any] | None = None) -> pd.DataFrame:
    """The whole table as pandas. CSV cells are read as text, unchanged (no NA guessing):
    a CSV has no types, and an id like 007 or a query like "NA" must survive."""
    if stores.is_remote(path):
        stores.check_location(str(path), options, "input")
    fmt = detect_format(path, fmt, options)
    if not exists(path, options):
        raise FileNotFoundError(f"input {path} does not exist")
    src = str(path) if stores.is_remote(path) else Path(path)
    so = _fs_options(path, options)
    if fmt == "csv":
        return pd.read_csv(src, dtype=str, keep_default_na=False, storage_options=so)
    if fmt == "parquet":
        return pd.read_parquet(src, storage_options=so)
    if fmt == "jsonl":
        return pd.read_json(src, lines=True, dtype=False, storage_options=so)
    return delta_table(src, options).to_pandas()


def write_table(df: pd.DataFrame, path: str | Path, fmt: str | None = None,
                options: dict[str, Any] | None = None) -> str | Path:
    """Write (replacing) `path`; Delta overwrites in one commit, keeping the table's history."""
    fmt = detect_format(path, fmt, options)
    remote = stores.is_remote(path)
    if remote:
        stores.check_location(str(path), options, "output")
    dst: str | Path = str(path) if remote else Path(path)
    if fmt != "delta" and not remote:
        dst.parent.mkdir(parents=True, exist_ok=True)
    so = _fs_options(path, options)
    if fmt == "csv":
        df.to_csv(dst, index=False, storage_options=so)
    elif fmt == "parquet":
        df.to_parquet(dst, index=False, storage_options=so)
    elif fmt == "jsonl":
        df.to_json(dst, orient="records", lines=True, force_ascii=False, storage_options=so)
    else:
        from deltalake import write_deltalake

        write_deltalake(str(dst), df, mode="overwrite", schema_mode="overwrite",
                        storage_options=stores.options_for(str(path), options) or None)
    return dst


def sibling(path: str | Path, name: str) -> str:
    """`path` with its last component replaced by `name`, for local paths and URIs alike."""
    s = str(path).rstrip("/")
    head, _, _ = s.rpartition("/")
    return f"{head}/{name}" if head else name


def delta_table(path: str | Path, options: dict[str, Any] | None = None, **kwargs):
    """A deltalake.DeltaTable for a local path or an object-store URI (with its storage options)."""
    from deltalake import DeltaTable

    return DeltaTable(str(path), storage_options=stores.options_for(str(path), options) or None, **kwargs)
