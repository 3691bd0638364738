"""Raters' answers in a SQLite file, written the moment they are given.

One row per (rater, item) holds the current answer (going back and changing it updates the
row); every answer given is also appended to a log, so a changed mind is kept too. Each write
is its own transaction in WAL mode with synchronous=FULL: once the page says "saved", the
answer is on disk and survives the server or the browser stopping. Every call opens its own
connection, so the threaded server's requests never share one; two raters writing at once
write different rows and SQLite serialises the commits.
"""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from taosr1.sbs.tasks import ANSWERS

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    rater TEXT NOT NULL, item_id TEXT NOT NULL,
    answer TEXT NOT NULL CHECK (answer IN {ANSWERS!r}),
    seconds REAL, first_at TEXT NOT NULL, at TEXT NOT NULL, changes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rater, item_id));
CREATE TABLE IF NOT EXISTS answer_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rater TEXT NOT NULL, item_id TEXT NOT NULL,
    answer TEXT NOT NULL, seconds REAL, at TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AnswerStore:
    """The answers of one task set in one SQLite file; refuses a file made for another task set."""

    def __init__(self, path: str | Path, task_id: str):
        self.path = Path(path)
        self.task_id = task_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.executescript(_SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('task_id', ?)", (task_id,))
            con.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
            found = con.execute("SELECT value FROM meta WHERE key = 'task_id'").fetchone()[0]
        if found != task_id:
            raise ValueError(f"{self.path} holds answers to task set {found}, not {task_id}; use the answer "
                             f"file of this task set, or a new --db path")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def secret(self) -> str:
        """Key that signs the rating page's session cookies: kept in the file, so a restarted
        server still knows who is signed in."""
        with closing(self._connect()) as con:
            return con.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0]

    def save(self, rater: str, item_id: str, answer: str, seconds: float | None = None) -> None:
        """Write one answer (replacing the rater's earlier answer to the item) and log it, in one commit."""
        self.save_many([(rater, item_id, answer, seconds)])

    def save_many(self, rows) -> None:
        """Write many (rater, item_id, answer, seconds) answers in one commit: answers collected
        elsewhere, e.g. on paper or in a spreadsheet."""
        rows = [(r, i, a, s) for r, i, a, s in rows]
        bad = [a for _, _, a, _ in rows if a not in ANSWERS]
        if bad:
            raise ValueError(f"answer {bad[0]!r} is not one of {ANSWERS}")
        at = _now()
        with closing(self._connect()) as con, con:
            con.executemany("INSERT INTO answer_log (rater, item_id, answer, seconds, at) VALUES (?, ?, ?, ?, ?)",
                            [(r, i, a, s, at) for r, i, a, s in rows])
            con.executemany(
                "INSERT INTO answers (rater, item_id, answer, seconds, first_at, at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (rater, item_id) DO UPDATE SET answer = excluded.answer, at = excluded.at, "
                "seconds = COALESCE(answers.seconds, 0) + COALESCE(excluded.seconds, 0), "
                "changes = answers.changes + (answers.answer != excluded.answer)",
                [(r, i, a, s, at, at) for r, i, a, s in rows])

    def answers_of(self, rater: str) -> dict[str, str]:
        with closing(self._connect()) as con:
            return dict(con.execute("SELECT item_id, answer FROM answers WHERE rater = ?", (rater,)).fetchall())

    def rows_of(self, rater: str) -> dict[str, tuple[str, float | None, str]]:
        """item_id -> (answer, seconds, answered at) of one rater."""
        with closing(self._connect()) as con:
            cur = con.execute("SELECT item_id, answer, seconds, at FROM answers WHERE rater = ?", (rater,))
            return {i: (a, s, at) for i, a, s, at in cur.fetchall()}

    def frame(self):
        """Every current answer as a DataFrame: rater, item_id, answer, seconds, first_at, at, changes."""
        import pandas as pd

        with closing(self._connect()) as con:
            return pd.read_sql_query("SELECT rater, item_id, answer, seconds, first_at, at, changes FROM answers "
                                     "ORDER BY rater, first_at", con)

    def log(self):
        """Every answer ever given, changed ones too, in order (a DataFrame)."""
        import pandas as pd

        with closing(self._connect()) as con:
            return pd.read_sql_query("SELECT * FROM answer_log ORDER BY id", con)


def open_existing(path: str | Path, task_id: str) -> AnswerStore:
    """The store at `path` for reading; a missing file is an error, not an empty store."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"answer file {path} does not exist; pass the --db that `taosr1 sbs serve` wrote")
    return AnswerStore(path, task_id)
