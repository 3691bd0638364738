"""Grading fingerprints: what must be equal for an earlier grade to stand for a new one.

A pair's fingerprint is SHA-256 over the grading context and the pair's field values
(query, title, optional item fields) as the input holds them. The context
(`grading_context`) hashes everything else that decides a grade: the model's files by
content (`model_fingerprint`: weights, config and tokenizer, not the folder's name), the
label scheme's labels and tokens, the prompt (version, config, system prompt, chat
template, and the token ids of a probe row, which catch a code change that forgot to bump
the version), beta, the engine and its dtype and device.

The prompt's token ids are a function of exactly these inputs, so equal fingerprints mean
equal token ids; hashing the inputs rather than the ids lets the job find a reused pair
before it validates and tokenizes it, which is most of Spark's cost per row (the values
are hashed raw: text that cleaning or cutting would make equal is graded again, never
reused wrongly). Changing any part of the context changes every fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from taosr1.core.names import CALIBRATION_FILE
from taosr1.core.resources import data_dir

FORMAT = "taosr1-fingerprint-1"  # bump when the definition below changes: every old fingerprint stops matching
CACHE_FILE = "model_fingerprints.json"
SKIP_FILES = (CALIBRATION_FILE,)  # beta is in the context itself; calibrating must not regrade
_CHUNK = 8 << 20
_MEMO: dict[str, tuple[tuple, str]] = {}


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in SKIP_FILES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _cache_path() -> Path:
    from taosr1.storage.cache import cache_dir

    return cache_dir() / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict[str, Any]) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache costs a rehash next time, nothing else


def model_fingerprint(folder: str | Path) -> str:
    """SHA-256 over every file of a model folder (weights, config, tokenizer) by content.

    Each file's BLAKE2 digest is cached per folder under the taosr1 cache, keyed by its
    size and modification time, so a 15 GB model is read once, not every night. A copy of
    the same files in another folder has the same fingerprint.
    """
    folder = Path(folder).resolve()
    files = _model_files(folder)
    stats = tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    memo = _MEMO.get(str(folder))
    if memo is not None and memo[0] == stats:
        return memo[1]
    cache = _read_cache()
    known = cache.get(str(folder), {})
    digests, changed = {}, False
    for p, (rel, size, mtime) in zip(files, stats):
        entry = known.get(rel)
        if entry and entry[0] == size and entry[1] == mtime:
            digests[rel] = entry[2]
        else:
            digests[rel] = _file_digest(p)
            changed = True
    if changed or set(known) != set(digests):
        cache[str(folder)] = {rel: [size, mtime, digests[rel]] for rel, size, mtime in stats}
        _write_cache(cache)
    h = hashlib.sha256(FORMAT.encode())
    for rel, size, _ in stats:
        h.update(f"\n{rel}\t{size}\t{digests[rel]}".encode())
    _MEMO[str(folder)] = (stats, h.hexdigest())
    return h.hexdigest()


def content_fingerprint(path: str | Path) -> str:
    """A file's or folder's content (a training input: CSV, Parquet, a Delta table's folder),
    not its place: what the training pipeline's stage hashes record, so that a moved checkout
    or a fresh local copy of a remote input reuses the stages built from it. A path that does
    not exist is returned as it is (reading it fails later, naming it)."""
    from taosr1.storage.bundled import FILES, is_bundled

    if is_bundled(str(path)):  # the files it reads, by content: new bundled data is a new input
        return f"{path}:" + ":".join(_file_digest(data_dir() / f) for f in FILES.values())
    p = Path(path)
    if p.is_dir():
        return "folder:" + model_fingerprint(p)
    if p.is_file():
        return f"file:{p.stat().st_size}:{_file_digest(p)}"
    return str(path)


PROBE = {"query": "taosr1 probe query", "title": "Probe title \u8336 \U0001f375", "brand": "Probe", "color": "probe red",
         "category": "a > b", "attributes": "k: v", "bullets": "probe bullet", "description": "probe description"}


def prompt_identity(builder) -> dict[str, Any]:
    """What renders and tokenizes a pair's fields (a PromptBuilder's inputs), with a probe's ids."""
    import dataclasses

    return {"version": builder.cfg.version, "config": dataclasses.asdict(builder.cfg), "system": builder.system,
            "template": builder.template, "probe_ids": builder.build([PROBE]).ids[0]}


def grading_context(*, model_fp: str, scheme, prompt: dict[str, Any], beta: float, engine: str, dtype: str,
                    device: str) -> str:
    """The hash of everything but the pair's fields that decides a grade (32 hex digits)."""
    labels = [[lab.name, lab.grade, lab.token, lab.tier] for lab in scheme.labels]
    parts = {"format": FORMAT, "model": model_fp, "scheme": [scheme.name, labels], "prompt": prompt,
             "beta": repr(float(beta)), "engine": engine, "dtype": dtype, "device": device}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def row_fingerprint(context: str, fields: dict[str, Any]) -> str:
    """A pair's fingerprint in Python: what `fingerprint_column` computes in Spark (string
    fields; a null field is left out of the JSON, as Spark's to_json does)."""
    doc = json.dumps({k: v for k, v in fields.items() if v is not None}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{context}:{doc}".encode()).hexdigest()


def fingerprint_column(context: str, fields: dict[str, str]):
    """The Spark expression (JVM only, no Python) of a pair's fingerprint; `fields` maps each
    prompt field (query, title, ...) present in the input to its column, in FIELDS order."""
    from pyspark.sql import functions as F

    doc = F.to_json(F.struct(*[F.col(f"`{col}`").alias(name) for name, col in fields.items()]))
    return F.sha2(F.concat(F.lit(f"{context}:"), doc), 256)
