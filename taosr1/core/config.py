"""YAML configs with flat keys that map onto dataclass fields.

One loader for every config: unknown keys are rejected (with the valid ones listed),
`key=value` overrides are parsed as YAML scalars, and each dataclass validates itself
in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem found before any work starts."""


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. beta=0.4)")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value != "" else ""
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, found {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent:  # `extends: cpu.yaml`: that file's keys, with this file's on top (sections merged key by key)
        data = _deep_merge(read_yaml(path.parent / parent), data)
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _section_type(cls: type, name: str) -> type | None:
    """The dataclass type of field `name` when it is a nested section (default_factory=Section)."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == name and f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            t = f.default_factory  # type: ignore[misc]
            return t if dataclasses.is_dataclass(t) else None
    return None


def build(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Instantiate dataclass `cls` from `values`, rejecting keys it does not have.

    A field whose default is a dataclass is a section: its value is a mapping, built the same way.
    """
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys are {sorted(fields)}"
        )
    kwargs = dict(values)
    for name, value in values.items():
        section = _section_type(cls, name)
        if section is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {name} must be a mapping of {section.__name__} keys, got {value!r}")
            kwargs[name] = build(section, value, source=f"{source}: {name}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from e


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `overrides`, where a dotted key (`engine.dtype`) reaches into a section."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in overrides.items():
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {p} is not a section")
        node[leaf] = value
    return out


def load(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults of `cls`, then the YAML file, then overrides (None values are ignored)."""
    values: dict[str, Any] = read_yaml(path) if path else {}
    return build(cls, merge(values, overrides or {}), source=str(path) if path else cls.__name__)


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config dataclass, recorded with every run."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
