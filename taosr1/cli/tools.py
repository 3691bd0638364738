"""What every click command of the project shares: one way to fail, one way to merge options, one way
to check an output before any work."""

from __future__ import annotations

import sys
from typing import Any, Iterable, NoReturn

import click

from taosr1.core.config import parse_overrides


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print `error: msg` on stderr and exit with `code` (2: bad input or config, nothing done)."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def option_values(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Config values from command-line options (those given) and then `--set KEY=VALUE` (winning)."""
    merged = {k: v for k, v in values.items() if v is not None and v != ()}
    merged.update(parse_overrides(overrides))
    return merged


def writable(uri: Any, what: str = "output", *, fmt: str | None = None, folder: bool | None = None,
             options: dict[str, Any] | None = None):
    """`uri` resolved (a storage Location) and proven writable, before any model or Spark work; else one
    line, `error: cannot write URI: why`, and exit 2. `folder`: default, a Delta table or no format."""
    from taosr1.storage.location import check_writable, resolve

    try:
        loc = resolve(uri, options, fmt)
        check_writable(loc, what, folder)
    except ValueError as e:  # NotWritable and StorageError are ValueErrors
        fail(str(e))
    return loc
