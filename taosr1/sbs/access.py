"""Who may use the rating page: one secret link per rater, admin links, revocation.

A link is `/t/<token>`: 256 random bits from `secrets`, shown once when issued and never
stored. access.json (beside tasks.json, mode 0600) holds a random key and, per link, only
HMAC-SHA256(key, token), the role (rater or admin), the rater, and when it was revoked. The
server re-reads the file when it changes, so `taosr1 sbs revoke` takes effect on the next
request, also for a browser already signed in with that link. tasks.json holds neither the
key nor any token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from taosr1.sbs.tasks import Tasks

ACCESS_FORMAT = "taosr1-sbs-access/1"
ROLES = ("rater", "admin")


def access_path(tasks_path: str | Path) -> Path:
    return Path(tasks_path).with_name("access.json")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Grant:
    """One issued link: its public id (safe to show and to revoke by), never its token."""

    id: str
    role: str
    rater: str | None
    hash: str
    created: str
    revoked: str | None = None

    @property
    def valid(self) -> bool:
        return self.revoked is None


@dataclass
class Access:
    path: Path
    task_id: str
    key: str
    grants: list[Grant]

    def digest(self, token: str) -> str:
        return hmac.new(bytes.fromhex(self.key), token.encode(), hashlib.sha256).hexdigest()

    def check(self, token: str) -> Grant | None:
        """The valid grant of `token`, else None (wrong, revoked or missing alike)."""
        if not token or len(token) > 200:
            return None
        d = self.digest(token)
        for g in self.grants:
            if hmac.compare_digest(g.hash, d):
                return g if g.valid else None
        return None

    def grant(self, grant_id: str | None) -> Grant | None:
        """The grant `grant_id` if it is still valid (a signed-in browser is checked by this on every request)."""
        g = next((g for g in self.grants if g.id == grant_id), None)
        return g if g is not None and g.valid else None

    def issue(self, role: str, rater: str | None = None) -> tuple[Grant, str]:
        """A new link: returns its grant and the token (the only time the token exists)."""
        if role not in ROLES or (role == "rater") != (rater is not None):
            raise ValueError(f"a {role} link {'needs' if role == 'rater' else 'takes no'} rater")
        token = secrets.token_urlsafe(32)  # 256 bits
        g = Grant(id=f"{(rater or 'admin')[:12]}-{secrets.token_hex(3)}", role=role, rater=rater,
                  hash=self.digest(token), created=_now())
        self.grants.append(g)
        return g, token

    def revoke(self, *, rater: str | None = None, grant_id: str | None = None, admin: bool = False,
               everyone: bool = False) -> list[Grant]:
        """Revoke the matching valid grants; returns them."""
        hit = [g for g in self.grants if g.valid and (everyone or (grant_id is not None and g.id == grant_id)
                                                      or (rater is not None and g.rater == rater)
                                                      or (admin and g.role == "admin"))]
        for g in hit:
            g.revoked = _now()
        return hit

    def save(self) -> None:
        """Write the file atomically, readable by its owner only."""
        data = {"format": ACCESS_FORMAT, "task_id": self.task_id, "key": self.key,
                "grants": [asdict(g) for g in self.grants]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def new_access(tasks: Tasks, path: str | Path) -> Access:
    return Access(Path(path), tasks.task_id, secrets.token_hex(32), [])


def load_access(path: str | Path, tasks: Tasks) -> Access:
    """The access file of `tasks`; refuses one of another task set or one others can read."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no access file {p}: issue links first with `taosr1 sbs invite {tasks.path} --all`")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"{p} is readable by others (mode {mode:o}); it holds the key of the raters' links: "
                         f"chmod 600 {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON ({e}); issue new links with `taosr1 sbs invite --all`") from e
    if data.get("format") != ACCESS_FORMAT:
        raise ValueError(f"{p} is not an SBS access file (format {ACCESS_FORMAT!r})")
    if data.get("task_id") != tasks.task_id:
        raise ValueError(f"{p} holds the links of task set {data.get('task_id')}, not {tasks.task_id} "
                         f"({tasks.path}); issue links for this one with `taosr1 sbs invite {tasks.path} --all`")
    return Access(p, data["task_id"], data["key"], [Grant(**g) for g in data["grants"]])


def invite(access: Access, tasks: Tasks, raters: list[str], admin: bool = False,
           replace: bool = False) -> dict[str, str]:
    """Issue links to `raters` (names as the task spells them, any case) and an admin link; with
    `replace`, their earlier links are revoked. Saves the file; returns name (or 'admin') -> token."""
    out = {}
    for typed in raters:
        name = tasks.rater(typed)
        if name is None:
            raise ValueError(f"{typed!r} is not a rater of {tasks.path}; raters: {tasks.raters}")
        if replace:
            access.revoke(rater=name)
        out[name] = access.issue("rater", name)[1]
    if admin:
        if replace:
            access.revoke(admin=True)
        out["admin"] = access.issue("admin")[1]
    access.save()
    return out


class LiveAccess:
    """The access file as the server sees it: re-read whenever it changes on disk."""

    def __init__(self, path: str | Path, tasks: Tasks):
        self.path, self.tasks = Path(path), tasks
        self._sig = None
        self._access = self.get()

    def get(self) -> Access:
        st = self.path.stat()
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig != self._sig:
            self._access, self._sig = load_access(self.path, self.tasks), sig
        return self._access
