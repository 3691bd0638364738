"""Table contracts (schemas/*.json): the nightly job's input and its output tables.

The input contract names columns by role (keys, query, title, ...), mapped to column
names by ColumnConfig; the job checks it against the input's schema before any model
work, and fails naming every column that is missing or mistyped. Output contracts fix
the columns the job adds; the job builds its output schemas from them, so a written
table matches its contract by construction. Types are Spark/Delta type names
(string, long, integer, double, boolean, date, timestamp).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from taosr1.core.resources import schemas_dir
from taosr1.core.validate import ColumnConfig

INPUT = "query_product"
OUTPUTS = ("grades", "quarantine", "runs", "fingerprints")


class ContractError(ValueError):
    """The input does not meet its contract; raised before any work, nothing written."""


@dataclass
class OutputColumn:
    name: str
    type: str
    nullable: bool = True
    partition: bool = False
    description: str = ""


@dataclass
class OutputContract:
    name: str
    passthrough: str  # input | input_as_text | none
    partition_by: list[str]
    columns: list[OutputColumn] = field(default_factory=list)

    def added_columns(self, label_names: Sequence[str] = ()) -> list[OutputColumn]:
        """The contract's own columns, `p_{label}` expanded to one column per label."""
        out: list[OutputColumn] = []
        for c in self.columns:
            if "{label}" in c.name:
                out += [OutputColumn(c.name.replace("{label}", n), c.type, c.nullable, c.partition, c.description)
                        for n in label_names]
            else:
                out.append(c)
        return out


@lru_cache(maxsize=None)
def load(name: str) -> dict[str, Any]:
    path = schemas_dir() / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no table contract {name!r}: {path} does not exist")
    return json.loads(path.read_text())


def output_contract(name: str) -> OutputContract:
    raw = load(name)
    cols = [OutputColumn(c["name"], c["type"], c.get("nullable", True), c.get("partition", False),
                         c.get("description", "")) for c in raw["columns"]]
    return OutputContract(raw["name"], raw.get("passthrough", "none"), list(raw.get("partition_by", [])), cols)


def input_roles(cols: ColumnConfig) -> list[tuple[str, str, bool, list[str]]]:
    """(column name, role, required, allowed types) for every column the input contract names."""
    out = []
    for spec in load(INPUT)["columns"]:
        role = spec["role"]
        names = cols.keys if role == "keys" else [getattr(cols, role)]
        for n in names:
            out.append((n, role, bool(spec["required"]), list(spec["types"])))
    return out


def check_input(found: Sequence[tuple[str, str]], cols: ColumnConfig, source: str = "input",
                reserved: Sequence[str] = ()) -> None:
    """Check `found` = [(column, type name)] against the input contract.

    Raises ContractError listing, for each bad column, what was expected and what was
    found; `reserved` are output column names an input column must not take.
    """
    types = dict(found)
    problems = []
    for name, role, required, allowed in input_roles(cols):
        expected = " or ".join(allowed)
        if name not in types:
            if required:
                problems.append(f"column {name!r} ({role}): expected {expected}, found no such column")
        elif types[name] not in allowed:
            problems.append(f"column {name!r} ({role}): expected {expected}, found {types[name]}")
    clash = sorted(set(types) & set(reserved))
    for name in clash:
        problems.append(f"column {name!r}: the job writes a column of that name; rename it in the input")
    if problems:
        raise ContractError(
            f"{source} does not meet the input contract {INPUT} (schemas/{INPUT}.json); nothing was written:\n  - "
            + "\n  - ".join(problems)
            + f"\nInput columns: {', '.join(f'{n} {t}' for n, t in found)}."
            + "\nMap your column names with the `columns` config section (--set label.columns.query=...)."
        )


def reserved_names(label_names: Sequence[str]) -> list[str]:
    """Column names the grades and quarantine tables add after the input's columns."""
    names = {c.name for c in output_contract("grades").added_columns(label_names)}
    names |= {c.name for c in output_contract("quarantine").added_columns(label_names)}
    return sorted(names)


def arrow_type(type_name: str):
    import pyarrow as pa

    types = {"string": pa.string(), "long": pa.int64(), "integer": pa.int32(), "double": pa.float64(),
             "boolean": pa.bool_(), "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC"),
             "array<double>": pa.list_(pa.float64())}
    if type_name not in types:
        raise ValueError(f"contract type {type_name!r} is not one of {sorted(types)}")
    return types[type_name]


def arrow_schema(columns: Sequence[OutputColumn]):
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in columns])


def default_paths(output: str) -> tuple[str, str]:
    """Quarantine and runs tables beside the grades table: OUTPUT_quarantine, OUTPUT_runs."""
    out = output.rstrip("/")
    return f"{out}_quarantine", f"{out}_runs"
