"""Read and write the table formats the CLI takes: CSV, Parquet, JSONL and Delta.

A table is named by a path or an object-store URI (s3://, gs://, abfss://, ...), or by a
Location resolved from one (taosr1.storage.location): files go through fsspec, Delta tables
through delta-rs's own object stores, with the Location's options (the environment's
AWS_* / AZURE_* / GOOGLE_* settings, or `options`). CSV and JSON lines are text in an encoding
(utf-8 unless told); a file that is not says so, naming the file and how to pass its encoding.
"""

from __future__ import annotations

import codecs
import io
import itertools
from pathlib import Path
from typing import Any

import pandas as pd

from taosr1.storage.location import FORMATS, Location, check_readable, checked_format, name_format, resolve

Table = str | Path | Location
ENCODING = "utf-8"
ENCODING_HINT = ("pass its encoding, e.g. --encoding latin-1 or cp1252 (taosr1 label; config key `encoding`), or "
                 "save it as UTF-8")


class EncodingError(ValueError):
    """A CSV or JSON lines input that is not text in the encoding it is read with."""


def is_delta(path: Table, options: dict[str, Any] | None = None) -> bool:
    return resolve(path, options).is_delta()


def exists(path: Table, options: dict[str, Any] | None = None) -> bool:
    return resolve(path, options).exists()


def detect_format(path: Table, fmt: str | None = None, options: dict[str, Any] | None = None) -> str:
    """`fmt`, or the table's format: a Delta folder, else what its name says."""
    if fmt:
        return checked_format(fmt)
    loc = resolve(path, options)
    if loc.fmt and loc.fmt != name_format(loc.uri):
        return loc.fmt  # given when it was resolved
    if loc.fmt == "delta" or (loc.is_remote and loc.is_delta()):  # a local one: resolve looked
        return "delta"
    if loc.fmt:
        return loc.fmt
    raise ValueError(
        f"cannot tell the format of {loc.uri} from its name; use a .csv/.parquet/.jsonl name, a Delta "
        f"folder, or pass --format {{{','.join(FORMATS)}}}"
    )


def read_table(path: Table, fmt: str | None = None, options: dict[str, Any] | None = None,
               encoding: str | None = None) -> pd.DataFrame:
    """The whole table as pandas. CSV cells are read as text, unchanged (no NA guessing):
    a CSV has no types, and an id like 007 or a query like "NA" must survive. `encoding`: of a
    CSV or JSON lines file (default utf-8)."""
    loc = resolve(path, options, fmt)
    check_readable(loc, "input")
    fmt = detect_format(loc, fmt)
    if not loc.exists():
        raise FileNotFoundError(f"input {loc.uri} does not exist")
    if fmt in ("csv", "jsonl"):
        text = io.StringIO(decoded(loc, encoding))
        if fmt == "csv":
            return pd.read_csv(text, dtype=str, keep_default_na=False)
        return pd.read_json(text, lines=True, dtype=False)
    if fmt == "parquet":
        return pd.read_parquet(loc.path, storage_options=loc.pandas_options)
    return delta_table(loc).to_pandas()


def write_table(df: pd.DataFrame, path: Table, fmt: str | None = None,
                options: dict[str, Any] | None = None) -> str | Path:
    """Write (replacing) `path`; Delta overwrites in one commit, keeping the table's history."""
    loc = resolve(path, options, fmt)
    fmt = detect_format(loc, fmt)
    if loc.is_remote:
        check_readable(loc, "output")
    elif fmt != "delta":
        Path(loc.path).parent.mkdir(parents=True, exist_ok=True)
    dst: str | Path = loc.path if loc.is_remote else Path(loc.path)
    so = loc.pandas_options
    if fmt == "csv":
        df.to_csv(dst, index=False, storage_options=so)
    elif fmt == "parquet":
        df.to_parquet(dst, index=False, storage_options=so)
    elif fmt == "jsonl":
        df.to_json(dst, orient="records", lines=True, force_ascii=False, storage_options=so)
    else:
        from deltalake import write_deltalake

        write_deltalake(str(dst), df, mode="overwrite", schema_mode="overwrite", storage_options=loc.delta_options)
    return dst if loc.is_remote else Path(loc.uri)


def sibling(path: str | Path, name: str) -> str:
    """`path` with its last component replaced by `name`, for local paths and URIs alike."""
    s = str(path).rstrip("/")
    head, _, _ = s.rpartition("/")
    return f"{head}/{name}" if head else name


def delta_table(path: Table, options: dict[str, Any] | None = None, **kwargs):
    """A deltalake.DeltaTable for a local path or an object-store URI (with its storage options)."""
    from deltalake import DeltaTable

    loc = resolve(path, options)
    return DeltaTable(loc.path, storage_options=loc.delta_options, **kwargs)


# ---------------------------------------------------------------- text encodings

def data_files(loc: Location) -> list[str]:
    """The files of `loc` (paths inside loc.fs): the file itself, or a folder's files (not _* or .*)."""
    if not loc.is_dir():
        return [loc.fs_path]
    return sorted(p for p in loc.fs.find(loc.fs_path)
                  if not any(part.startswith(("_", ".")) for part in p[len(loc.fs_path):].split("/") if part))


def first_undecodable(loc: Location, encoding: str, chunk: int = 1 << 20) -> tuple[str, int, bytes] | None:
    """(file, byte offset, the bytes) of the first bytes in `loc`'s files that are not `encoding` text,
    or None when all of it decodes. Reads each file once, a chunk at a time (compressed ones decompressed)."""
    from fsspec.utils import infer_compression

    for f in data_files(loc):
        decoder, offset = codecs.getincrementaldecoder(encoding)(), 0
        with loc.fs.open(f, "rb", compression=infer_compression(f)) as fh:
            for block in itertools.chain(iter(lambda: fh.read(chunk), b""), [b""]):  # b"": the end
                pending = len(decoder.getstate()[0])  # bytes of a character the last block cut
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as e:
                    return f, max(offset - pending + e.start, 0), e.object[e.start:e.end]
                offset += len(block)
    return None


def check_text(loc: Location, encoding: str | None = None, hint: str = ENCODING_HINT) -> None:
    """Raise EncodingError unless every file of `loc` is text in `encoding` (readers that replace
    undecodable bytes without a word, as Spark's CSV reader does, are checked with this first)."""
    enc = encoding or ENCODING
    bad = first_undecodable(loc, enc)
    if bad:
        raise _error(loc, enc, bad, hint)


def decoded(loc: Location, encoding: str | None = None, hint: str = ENCODING_HINT) -> str:
    """The text of the file `loc` (read once); EncodingError, naming the file and where, if it is not
    `encoding` text (pandas' own utf-8 reading passes over undecodable bytes after a NUL byte)."""
    from fsspec.utils import infer_compression

    enc = encoding or ENCODING
    with loc.fs.open(loc.fs_path, "rb", compression=infer_compression(loc.fs_path)) as f:  # x.csv.gz, as pandas
        raw = f.read()
    try:
        return raw.decode(enc)
    except UnicodeDecodeError as e:
        raise _error(loc, enc, (loc.fs_path, e.start, raw[e.start:e.end]), hint) from None


def _error(loc: Location, encoding: str, bad: tuple[str, int | None, bytes], hint: str) -> EncodingError:
    file, offset, raw = bad
    where = "" if offset is None else f" at offset {offset}"
    name = loc.uri if file == loc.fs_path else f"{loc.uri} (file {file})"
    shown = " ".join(f"0x{b:02x}" for b in raw[:4]) or "?"
    return EncodingError(f"{name} is not {encoding} text: byte(s) {shown}{where} cannot be decoded; {hint}")
