"""Object-store paths for code that reads and writes local folders: Hugging Face and TRL saves,
stage markers, report writers.

`fetched(uri)` is a local copy of a remote file or folder (a model, a stage's output),
`published(uri)` a local folder uploaded to `uri` when the block ends, `localized(cfg)` a
config whose remote inputs are fetched, and `cached(uri)` a lasting copy of a remote model
folder (what `taosr1 label` and each executor of the nightly job load). Local paths pass
through untouched. Uploads run when the block fails too: what a stage completed (its marker
written last) is kept, and a rerun with `resume` picks it up.

The local copies live at a path fixed by the URI (TAOSR1_CACHE/remote/...), not a random one:
the pipeline's skip rules hash its stages' paths, and a rerun must find the same ones.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import posixpath
import shutil
from pathlib import Path
from typing import Any, Iterator

from taosr1.storage import stores
from taosr1.storage.location import Location, check_readable, resolve

# config fields that name inputs (files or folders) in the training stages' configs
INPUT_FIELDS = ("input", "data", "samples", "model", "label_config", "rules")


@contextlib.contextmanager
def fetched(uri: str | Location, options: dict[str, Any] | None = None) -> Iterator[str]:
    """A local path holding `uri`'s file or folder for the block; `uri` itself when it is local."""
    if not _remote(uri):
        yield str(uri) if isinstance(uri, Location) else uri
        return
    loc = resolve(uri, options)
    fs, path = loc.fs, loc.fs_path
    with _scratch("in", loc.uri) as tmp:
        dest = os.path.join(tmp, posixpath.basename(path) or "data")
        if fs.isdir(path):
            _download(fs, path, dest)
        elif fs.isfile(path):
            fs.get_file(path, dest)
        else:
            raise FileNotFoundError(f"{loc.uri}: no such file or folder in the store")
        yield dest


def cached(uri: str | Location, options: dict[str, Any] | None = None) -> str:
    """A local copy of the remote folder `uri` that stays, fetched again only when the store's listing
    (names, sizes, ETags) changed. Safe for several processes at once (executors on one machine):
    each downloads into a folder of its own and renames it into place (storage.cache.build_folder)."""
    from taosr1.storage.cache import build_folder, cache_dir

    loc = resolve(uri, options)
    fs, path = loc.fs, loc.fs_path
    fs.invalidate_cache(path)  # a long-lived worker must see today's folder, not a listing it cached
    listing = {posixpath.relpath(p, path): [info.get("size"), str(info.get("ETag") or info.get("etag") or
                                                                   info.get("LastModified") or info.get("mtime") or "")]
               for p, info in fs.find(path, detail=True).items()}
    if not listing:
        raise FileNotFoundError(f"{loc.uri}: no such folder in the store (or it is empty)")
    root = Path(cache_dir()) / "remote" / "models" / _digest(loc.uri)
    version = root / _digest(json.dumps(listing, sort_keys=True))
    dest = version / (posixpath.basename(path) or "model")
    if not dest.is_dir():
        build_folder(dest, lambda tmp: _download(fs, path, str(tmp)), ".fetch-")
        for old in root.iterdir():  # earlier versions of this URI (best effort)
            if old != version:
                shutil.rmtree(old, ignore_errors=True)
    return str(dest)


def put(local_file: str | Path, uri: str | Location, options: dict[str, Any] | None = None) -> str:
    """Upload one file to `uri` (e.g. a calibration written beside a remote model); returns the URI."""
    loc = resolve(uri, options)
    loc.fs.put_file(str(local_file), loc.fs_path)
    return loc.uri


def _remote(uri: Any) -> bool:
    return uri.is_remote if isinstance(uri, Location) else stores.is_remote(uri)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def published(uri: str | Location, options: dict[str, Any] | None = None, resume: bool = False) -> Iterator[str]:
    """A local folder whose files are uploaded under `uri` when the block ends (also on failure).

    `resume`: start from what `uri` already holds (a pipeline's completed stages)."""
    if not _remote(uri):
        yield str(uri) if isinstance(uri, Location) else uri
        return
    loc = resolve(uri, options)
    check_readable(loc, "output")
    fs, path = loc.fs, loc.fs_path
    with _scratch("out", loc.uri) as tmp:
        local = os.path.join(tmp, posixpath.basename(path) or "out")
        unchanged = _download(fs, path, local) if resume and fs.isdir(path) else {}
        os.makedirs(local, exist_ok=True)
        try:
            yield local
        finally:
            _upload(fs, local, path, skip=unchanged)


@contextlib.contextmanager
def localized(cfg: Any, fields: tuple[str, ...] = INPUT_FIELDS) -> Iterator[Any]:
    """`cfg` (a dataclass, nested ones too) with every remote input among `fields` fetched locally."""
    with contextlib.ExitStack() as stack:
        yield _localize(cfg, fields, stack)


def _localize(cfg: Any, fields: tuple[str, ...], stack: contextlib.ExitStack) -> Any:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            inner = _localize(value, fields, stack)
            if inner is not value:
                changes[f.name] = inner
        elif f.name in fields and isinstance(value, str) and stores.is_remote(value):
            changes[f.name] = stack.enter_context(fetched(value))
    if not changes:
        return cfg
    cfg = copy.copy(cfg)  # not dataclasses.replace: TRL's configs' __post_init__ must not run twice
    for name, value in changes.items():
        setattr(cfg, name, value)
    return cfg


@contextlib.contextmanager
def _scratch(kind: str, uri: str) -> Iterator[str]:
    """An empty folder named for `uri`, removed after the block."""
    from taosr1.storage.cache import cache_dir

    folder = Path(cache_dir()) / "remote" / kind / _digest(uri)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _download(fs, path: str, dest: str) -> dict[str, tuple[int, int]]:
    """Every file under `path` into `dest`; {relative path: (size, mtime)} of the copies."""
    got = {}
    for remote in fs.find(path):
        rel = posixpath.relpath(remote, path)
        local = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        fs.get_file(remote, local)
        st = os.stat(local)
        got[rel] = (st.st_size, st.st_mtime_ns)
    return got


def _upload(fs, local: str, path: str, skip: dict[str, tuple[int, int]]) -> None:
    """Every file under `local` but the downloaded copies left untouched (`skip`); stage markers
    last, so a marker in the store means its stage is all there."""
    from taosr1.core.names import STAGE_FILE

    files = []
    for root, _, names in os.walk(local):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), local).replace(os.sep, "/")
            st = os.stat(os.path.join(root, n))
            if skip.get(rel) != (st.st_size, st.st_mtime_ns):
                files.append(rel)
    for rel in sorted(files, key=lambda r: (posixpath.basename(r) == STAGE_FILE, r)):
        fs.put_file(os.path.join(local, rel), f"{path}/{rel}")


def write_folder(uri: str | Location, write, *args, **kwargs) -> dict[str, Any]:
    """`write(folder, *args, **kwargs)` (a report writer returning {kind: path or {name: path}}) into
    `uri`, local or remote; the returned paths as they are named under `uri`."""
    loc = resolve(uri)
    with published(loc) as local:
        paths = write(local, *args, **kwargs)

    def named(v):
        if isinstance(v, dict):
            return {k: named(x) for k, x in v.items()}
        return stores.join(loc.uri, Path(v).relative_to(local).as_posix()) if loc.is_remote else str(v)

    return named(paths)
