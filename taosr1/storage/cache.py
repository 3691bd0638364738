"""taosr1's cache folder (converted models, remote copies, digests) and atomic folder writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    return Path(os.environ.get("TAOSR1_CACHE", Path.home() / ".cache" / "taosr1"))


def build_folder(target: Path, write: Callable[[Path], None], prefix: str) -> Path:
    """`write` fills a temporary folder beside `target`, which is then renamed to it: concurrent
    Spark workers never see half a model, and the first to finish wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        write(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another worker finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
