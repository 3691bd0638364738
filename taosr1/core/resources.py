"""Find the project's `conf/`, `schemas/` and bundled data, in a checkout or an installed wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # taosr1/
_REPO = _PACKAGE.parent


def _root(name: str) -> Path:
    # A checkout (or editable install) reads the top-level folder; a wheel ships it as
    # the package data `taosr1.<name>` (see pyproject's package-dir mapping).
    local = _REPO / name
    if local.is_dir():
        return local
    return Path(str(resources.files(f"taosr1.{name}")))


def conf_dir() -> Path:
    return _root("conf")


def schemas_dir() -> Path:
    return _root("schemas")


def data_dir() -> Path:
    return _PACKAGE / "data"


def sample_path() -> Path:
    """The bundled ESCI sample (Apache-2.0): 1,263 human-labelled query-product pairs."""
    return data_dir() / "esci_us_sample.csv"


def find_conf(kind: str, name_or_path: str | Path, suffix: str = ".yaml") -> Path:
    """A config given by path, or by name under `conf/<kind>/` (e.g. labels `esci`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    candidate = conf_dir() / kind / f"{name_or_path}{suffix}"
    if candidate.is_file():
        return candidate
    known = sorted(f.stem for f in (conf_dir() / kind).glob(f"*{suffix}"))
    raise FileNotFoundError(
        f"no {kind} config {str(name_or_path)!r}: not a file, and not one of {known} in {conf_dir() / kind}"
    )
