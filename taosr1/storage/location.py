"""Where a table or folder lives, resolved once: one `Location` that every layer passes down.

`resolve(uri, options, fmt)` turns a path or an object-store URI (s3://, gs://, abfss://, ...)
into a frozen value: the URI as given (for messages and records), the path to use (absolute for
a local path), the scheme, the delta-rs storage options (the environment's settings, then
`options`; taosr1.storage.stores) and the fsspec arguments derived from them, the table format
(given, or read off the name) and, built on first use, the filesystem. The CLI resolves each
path it is handed; the nightly job, the Spark side and the storage modules take the Location and
never derive options for it again. A Location pickles without its filesystem (executors build
their own on first use).

`check_writable(loc, what)` proves an output can be written before any model work: a local
path's nearest existing folder takes a new file (folders it lacks are created and removed
again), an existing path is of the right kind (a file, or a folder for Delta tables and report
folders); an object store is reachable, with credentials, and has the bucket
(stores.store_problem, the check the readers use).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from taosr1.storage import stores

FORMATS = ("csv", "parquet", "jsonl", "delta")
EXT = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
FOLDER_FORMATS = (None, "delta")  # a Location of no format is a folder (a report, a stage's output)


class NotWritable(stores.StorageError):
    """An output that cannot be written: said before any work, naming the output and why."""


def suffix(uri: str | Path) -> str:
    return PurePosixPath(str(uri).split("://", 1)[-1]).suffix.lower()


def name_format(uri: str | Path) -> str | None:
    """The table format a name says (`.delta` or a file extension), None when it says none."""
    s = suffix(uri)
    return "delta" if s == ".delta" else EXT.get(s)


def checked_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    return fmt


@dataclass(frozen=True)
class Location:
    """A path or URI, resolved (see `resolve`).

    Attributes:
        uri: the path or URI as given (messages, run records).
        path: what I/O uses: the absolute local path, or the URI.
        protocol: `file`, or the URI's scheme (s3, s3a, gs, abfss, az, ...).
        storage_options: delta-rs keys ({} for a local path); may hold credentials, so never shown.
        fsspec_options: the fsspec filesystem's arguments for the same settings (pandas' storage_options).
        fmt: csv, parquet, jsonl or delta: given, or from the name (or a local Delta folder); None: unknown
            or a folder.
    """

    uri: str
    path: str
    protocol: str = "file"
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    fsspec_options: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)
    fmt: str | None = None

    def __str__(self) -> str:
        return self.uri

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_fs"}  # executors build their own

    @property
    def is_remote(self) -> bool:
        return self.protocol != "file"

    @functools.cached_property
    def _fs(self) -> tuple[Any, str]:
        fs, path = stores.filesystem(self.path, dict(self.storage_options))
        return fs, path.rstrip("/") or path

    @property
    def fs(self):
        """The fsspec filesystem (built once per Location)."""
        return self._fs[0]

    @property
    def fs_path(self) -> str:
        """The path inside `fs`, without a trailing slash."""
        return self._fs[1]

    @property
    def delta_options(self) -> dict[str, str] | None:
        """delta-rs's storage_options argument (None for a local path)."""
        return dict(self.storage_options) or None

    @property
    def pandas_options(self) -> dict[str, Any] | None:
        """pandas' storage_options argument (None for a local path)."""
        return dict(self.fsspec_options) if self.is_remote else None

    def join(self, *parts: str, fmt: str | None = None) -> "Location":
        """A location under this one, with the same store and options."""
        if self.is_remote:
            return dataclasses.replace(self, uri=stores.join(self.uri, *parts), path=stores.join(self.path, *parts),
                                       fmt=fmt)
        return dataclasses.replace(self, uri=os.path.join(self.uri, *parts), path=os.path.join(self.path, *parts),
                                   fmt=fmt)

    def sibling(self, name: str, fmt: str | None = None) -> "Location":
        """This location with its last component replaced by `name`."""
        head = self.uri.rstrip("/").rpartition("/")[0]
        uri = f"{head}/{name}" if head else name
        path = (posixpath.join(posixpath.dirname(self.path.rstrip("/")), name) if self.is_remote
                else os.path.join(os.path.dirname(self.path.rstrip(os.sep)), name))
        return dataclasses.replace(self, uri=uri, path=path, fmt=fmt)

    def with_format(self, fmt: str | None) -> "Location":
        return self if fmt == self.fmt else dataclasses.replace(self, fmt=checked_format(fmt) if fmt else None)

    def exists(self) -> bool:
        return os.path.exists(self.path) if not self.is_remote else self.fs.exists(self.fs_path)

    def is_dir(self) -> bool:
        return os.path.isdir(self.path) if not self.is_remote else self.fs.isdir(self.fs_path)

    def is_delta(self) -> bool:
        """Whether a Delta table is here (its _delta_log folder)."""
        if not self.is_remote:
            return os.path.isdir(os.path.join(self.path, "_delta_log"))
        return self.fs.isdir(f"{self.fs_path}/_delta_log")


def resolve(uri: str | Path | Location, options: Mapping[str, Any] | None = None, fmt: str | None = None) -> Location:
    """`uri` as a Location; a Location passes through (with `fmt`, if given). `options`: storage settings
    in delta-rs's keys over the environment's (an object store only). No remote I/O: a store is first
    asked in check_writable / check_readable."""
    if isinstance(uri, Location):
        return uri.with_format(fmt) if fmt else uri
    text = str(uri)
    if stores.is_remote(text):
        storage = stores.options_for(text, dict(options or {}))
        return Location(uri=text, path=text, protocol=stores.protocol(text), storage_options=storage,
                        fsspec_options=stores.fsspec_options(text, storage),
                        fmt=checked_format(fmt) if fmt else name_format(text))
    path = os.path.abspath(os.path.expanduser(text[len("file://"):] if text.startswith("file://") else text))
    if fmt:
        kind = checked_format(fmt)
    else:  # a Delta folder is one whatever its name (as tables.detect_format)
        kind = "delta" if os.path.isdir(os.path.join(path, "_delta_log")) else name_format(text)
    return Location(uri=text, path=path, fmt=kind)


def resolve_all(uris: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> dict[str, Location]:
    """{role: Location} for {role: uri}, with one set of options (None values are left out)."""
    return {k: resolve(u, options) for k, u in uris.items() if u is not None}


def check_readable(loc: Location, what: str = "input") -> None:
    """Fail now, naming `loc` and what to set, when its object store cannot be used (a local path: no check;
    its absence is said by the reader)."""
    if loc.is_remote:
        why = stores.store_problem(loc.path, dict(loc.storage_options))
        if why:
            raise stores.StorageError(f"{what} {loc.uri}: {why}")


def check_writable(loc: Location, what: str = "output", folder: bool | None = None) -> None:
    """Raise NotWritable (`cannot write URI: why`) unless `loc` can be written; nothing is left behind.

    `folder`: whether the output is a folder (default: a Delta table or a Location without a format)."""
    folder = loc.fmt in FOLDER_FORMATS if folder is None else folder
    why = stores.store_problem(loc.path, dict(loc.storage_options)) if loc.is_remote else _local_problem(loc, folder)
    if why:
        role = "" if what == "output" else f" ({what})"
        raise NotWritable(f"cannot write {loc.uri}{role}: {why}")


def _local_problem(loc: Location, folder: bool) -> str | None:
    p = Path(loc.path)
    if p.exists():
        if folder and not p.is_dir():
            return "it is a file; this output is a folder" + (" (a Delta table)" if loc.fmt == "delta" else "")
        if not folder and p.is_dir():
            return f"it is a folder; a {loc.fmt or 'file'} output is a file"
        return _probe(p) if folder else _replaceable(p)
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    created: list[Path] = []
    try:
        for d in reversed([q for q in p.parents if parent in q.parents]):  # the folders it lacks, top down
            try:
                d.mkdir()
            except OSError as e:
                return f"cannot create the folder {d} ({e.strerror or e})"
            created.append(d)
        return _probe(p.parent)
    finally:
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass


def _probe(folder: Path) -> str | None:
    """Why a new file cannot be made in `folder`, or None (the probe file is removed)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".taosr1-write-check-", dir=folder)
    except OSError as e:
        return f"cannot create files in {folder} ({e.strerror or e})"
    os.close(fd)
    os.unlink(name)
    return None


def _replaceable(file: Path) -> str | None:
    try:
        with open(file, "ab"):  # opened for writing, not truncated, not changed
            pass
    except OSError as e:
        return f"cannot replace it ({e.strerror or e})"
    return None
