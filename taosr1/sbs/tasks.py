"""The two files `taosr1 sbs make` writes, and reading them back.

tasks.json (the sheet) is everything the rating page needs: items with their left and right
sides, and each rater's queue. It says nothing about which system is on which side or which
items are gold questions. key.json (the blinding key) holds exactly that, plus the strata of
the sample; the server never reads it, only `taosr1 sbs report` does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHEET_FORMAT = "taosr1-sbs-tasks/1"
KEY_FORMAT = "taosr1-sbs-key/1"
ANSWERS = ("left", "same", "right")  # what a rater answers, in the sheet's (blinded) terms
VERDICTS = ("A", "same", "B")  # the same answers un-blinded: which system's grade is more correct


def task_id(sheet: dict[str, Any], key: dict[str, Any]) -> str:
    """Stable id of one task set: a hash of the sheet and the key, so answers, sheet and key
    that do not belong together are refused."""
    blob = json.dumps({"sheet": sheet, "key": key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_tasks(out_dir: str | Path, sheet: dict[str, Any], key: dict[str, Any]) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"tasks": out / "tasks.json", "key": out / "key.json"}
    paths["tasks"].write_text(json.dumps(sheet, ensure_ascii=False, indent=1) + "\n")
    paths["key"].write_text(json.dumps(key, ensure_ascii=False, indent=1) + "\n")
    return paths


def _read_json(path: Path, fmt: str, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); is it a file written by `taosr1 sbs make`?") from e
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} (format {fmt!r}); pass the file `taosr1 sbs make` wrote")
    return data


@dataclass
class Tasks:
    """A sheet, loaded: items by id, each rater's queue."""

    path: Path
    sheet: dict[str, Any]

    @property
    def task_id(self) -> str:
        return self.sheet["task_id"]

    @property
    def raters(self) -> list[str]:
        return list(self.sheet["queues"])

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        return self._items

    def __post_init__(self) -> None:
        self._items = {it["item_id"]: it for it in self.sheet["items"]}
        self._names = {r.lower(): r for r in self.sheet["queues"]}
        for rater, queue in self.sheet["queues"].items():
            unknown = [i for i in queue if i not in self._items]
            if unknown:
                raise ValueError(f"{self.path}: queue of {rater} names unknown item(s) {unknown[:5]}")

    def rater(self, name: str) -> str | None:
        """The rater's name as the task spells it, for a name typed in any case; None if not a rater."""
        return self._names.get(" ".join(str(name).split()).lower())

    def queue(self, rater: str) -> list[str]:
        return self.sheet["queues"][rater]


def load_tasks(path: str | Path) -> Tasks:
    p = Path(path)
    return Tasks(p, _read_json(p, SHEET_FORMAT, "SBS task file (tasks.json)"))


def load_key(path: str | Path, tasks: Tasks) -> dict[str, Any]:
    """The blinding key of `tasks`; refuses a key written for another task set."""
    p = Path(path)
    key = _read_json(p, KEY_FORMAT, "SBS blinding key (key.json)")
    if key.get("task_id") != tasks.task_id:
        raise ValueError(f"{p} is the key of task set {key.get('task_id')}, but {tasks.path} is task set "
                         f"{tasks.task_id}; pass the key.json written together with it")
    missing = [i for i in tasks.items if i not in key["items"]]
    if missing:
        raise ValueError(f"{p}: no blinding record for {len(missing)} item(s) of {tasks.path}, e.g. {missing[:3]}")
    return key
