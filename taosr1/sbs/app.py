"""The rating page: a small Flask app over a task file and an answer store.

A rater opens their own secret link (`/t/<token>`, taosr1/sbs/access.py), sees one item at a time (the query, the item, and the two systems'
grades side by side, with reasoning when the task has it), answers Left / Same / Right by
button or key, can go back, and on return resumes at the first item not yet answered. Each
answer is written to SQLite before the page moves on; when the server cannot be reached the
page keeps the answer and retries until it is saved.

Every page needs a valid link: a missing, wrong or revoked one gets the same bare 403. A
rater's link opens only that rater's queue (nothing in a URL or form names a rater); admin
links open /admin. Every POST carries the session's CSRF token; without it (a forged form
from another page, a replay outside the session) it is refused with 403. Over a network, run
behind an HTTPS reverse proxy with `secure_cookies` (docs/sbs.md).
"""

from __future__ import annotations

import csv
import hmac
import io
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, current_app, jsonify, redirect, render_template, request, session, url_for

from taosr1.sbs.access import LiveAccess, access_path
from taosr1.sbs.store import AnswerStore
from taosr1.sbs.tasks import ANSWERS, Tasks, load_tasks


def default_db(tasks_path: str | Path) -> Path:
    return Path(tasks_path).with_name("answers.sqlite")


def _pretty(column: str) -> str:
    name = column[len("product_"):] if column.startswith("product_") else column
    return name.replace("_", " ").capitalize()


FORBIDDEN = "Forbidden: this page needs a valid personal link."


@dataclass(frozen=True)
class Site:
    """What every view reads: the tasks, the answer store, the live links, the page's constants."""
    tasks: Tasks
    store: AnswerStore
    links: LiveAccess
    common: dict

    @property
    def sheet(self) -> dict:
        return self.tasks.sheet


def create_app(tasks_path: str | Path, db_path: str | Path | None = None, *, access: str | Path | None = None,
               retry_ms: int = 2000, secure_cookies: bool = False, proxies: int = 0) -> Flask:
    """The app serving `tasks_path`, answers in `db_path` (default: answers.sqlite beside the tasks),
    links in `access` (default: access.json beside the tasks). `secure_cookies`: the session cookie
    is sent over HTTPS only; `proxies`: trust that many reverse proxies' X-Forwarded-* headers."""
    tasks: Tasks = load_tasks(tasks_path)
    store = AnswerStore(db_path or default_db(tasks_path), tasks.task_id)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=store.secret(), SESSION_COOKIE_NAME=f"sbs_{tasks.task_id[:10]}",  # one cookie per task set
        SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SECURE=secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(days=30))
    if proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_prefix=proxies)
    app.extensions["sbs"] = Site(tasks, store, LiveAccess(access or access_path(tasks_path), tasks),
                                 {"title": tasks.sheet["title"], "labels": tasks.sheet["labels"], "retry_ms": retry_ms})
    app.after_request(_headers)
    app.before_request(_csrf)
    app.context_processor(lambda: {"csrf": session.get("csrf", "")})
    for rule, view, methods in _ROUTES:
        app.add_url_rule(rule, view_func=view, methods=methods)
    return app


def _site() -> Site:
    return current_app.extensions["sbs"]


# --- who is asking ------------------------------------------------------------------------


def _grant():
    """The signed-in browser's link, if it is still valid (revocation applies at once)."""
    return _site().links.get().grant(session.get("grant"))


def _rater() -> str | None:
    g = _grant()
    return g.rater if g is not None and g.role == "rater" and g.rater in _site().sheet["queues"] else None


def _is_admin() -> bool:
    g = _grant()
    if g is None:
        auth = request.headers.get("Authorization", "")
        g = _site().links.get().check(auth[7:]) if auth.startswith("Bearer ") else None
    return g is not None and g.role == "admin"


def _forbidden():
    if request.accept_mimetypes.best == "application/json":
        return jsonify(error="Your link is not valid (or no longer). Open your personal link again; your saved "
                             "answers are kept."), 403
    return Response(FORBIDDEN, 403, mimetype="text/plain")


def _headers(resp):
    resp.headers["Referrer-Policy"] = "no-referrer"  # a link's token never leaves in a Referer
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _csrf():
    """Every POST must carry the session's CSRF token (form field or X-CSRF-Token header)."""
    if request.method != "POST":
        return None
    want = session.get("csrf")
    got = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
    if not want or not hmac.compare_digest(str(want).encode(), got.encode()) or _grant() is None:
        return _forbidden()
    return None


def _first_open(name: str, after: int = 0) -> int | None:
    """1-based position of the first unanswered item after `after` (wrapping), None when all are done."""
    queue, done = _site().tasks.queue(name), _site().store.answers_of(name)
    n = len(queue)
    for step in range(n):
        p = (after + step) % n
        if queue[p] not in done:
            return p + 1
    return None


# --- views ---------------------------------------------------------------------------------


def link(token: str):
    g = _site().links.get().check(token)
    if g is None:
        return _forbidden()
    session.clear()
    session.permanent = True
    session["grant"] = g.id
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(url_for("admin") if g.role == "admin" else url_for("resume"))  # the token leaves the URL bar


def index():
    if _rater():
        return redirect(url_for("resume"))
    if _is_admin():
        return redirect(url_for("admin"))
    return _forbidden()


def signout():
    session.clear()
    return Response("Signed out. Open your personal link to continue.", mimetype="text/plain")


def resume():
    name = _rater()
    if not name:
        return _forbidden()
    pos = _first_open(name)
    return redirect(url_for("done") if pos is None else url_for("rate", pos=pos))


def rate(pos: int):
    name = _rater()
    if not name:
        return _forbidden()
    site = _site()
    queue, sheet = site.tasks.queue(name), site.sheet
    if not queue:
        return redirect(url_for("done"))
    if not 1 <= pos <= len(queue):
        return redirect(url_for("resume"))
    answers = site.store.answers_of(name)
    item = site.tasks.items[queue[pos - 1]]
    fields = [(_pretty(c), item["fields"][c]) for c in sheet["fields"][1:] if c in item["fields"]]
    return render_template(
        "rate.html", rater=name, pos=pos, total=len(queue), answered=sum(i in answers for i in queue),
        item=item, heading=item["fields"].get(sheet["fields"][0], ""), fields=fields,
        current=answers.get(queue[pos - 1]), show_reasoning=sheet["show_reasoning"],
        back=url_for("rate", pos=pos - 1) if pos > 1 else None,
        forward=url_for("rate", pos=pos + 1) if pos < len(queue) and queue[pos - 1] in answers else None,
        **site.common)


def answer(pos: int):
    wants_json = request.accept_mimetypes.best == "application/json"
    name = _rater()
    if not name:
        return _forbidden()
    queue = _site().tasks.queue(name)
    value = request.form.get("answer", "")
    if not 1 <= pos <= len(queue) or value not in ANSWERS:
        msg = f"bad answer {value!r} for item {pos} of {len(queue)}; answer one of {list(ANSWERS)}"
        return (jsonify(error=msg), 400) if wants_json else (msg, 400)
    try:
        seconds = float(request.form.get("seconds", ""))
    except ValueError:
        seconds = None
    _site().store.save(name, queue[pos - 1], value, seconds)
    nxt = _first_open(name, after=pos)
    target = url_for("done") if nxt is None else url_for("rate", pos=nxt)
    return jsonify(saved=True, next=target) if wants_json else redirect(target)


def done():
    name = _rater()
    if not name:
        return _forbidden()
    queue, answers = _site().tasks.queue(name), _site().store.answers_of(name)
    left = _first_open(name)
    return render_template("done.html", rater=name, total=len(queue), answered=sum(i in answers for i in queue),
                           resume=url_for("rate", pos=left) if left else None, **_site().common)


def export():
    """The signed-in rater's own answers (blinded, as given): position, item, answer, time."""
    name = _rater()
    if not name:
        return _forbidden()
    mine = _site().store.rows_of(name)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["position", "item_id", "answer", "seconds", "answered_at"])
    for p, item_id in enumerate(_site().tasks.queue(name), 1):
        if item_id in mine:
            value, seconds, at = mine[item_id]
            w.writerow([p, item_id, value, "" if seconds is None else round(seconds, 1), at])
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=sbs_answers_{name}.csv"})


def _progress() -> dict:
    tasks = _site().tasks
    answered = _site().store.frame().groupby("rater")["item_id"].nunique()
    return {n: {"answered": int(answered.get(n, 0)), "items": len(tasks.queue(n))} for n in tasks.raters}


def admin():
    if not _is_admin():
        return _forbidden()
    site = _site()
    return render_template("admin.html", progress=_progress(), grants=list(site.links.get().grants),
                           task_id=site.tasks.task_id, **site.common)


def admin_status():
    """Progress per rater, for scripts: an admin session or `Authorization: Bearer <admin token>`."""
    if not _is_admin():
        return _forbidden()
    p = _progress()
    return jsonify(task_id=_site().tasks.task_id, items=len(_site().tasks.items), raters=p,
                   answered=sum(r["answered"] for r in p.values()))


_ROUTES = [  # rule, view (its name is the endpoint templates' url_for uses), methods
    ("/t/<token>", link, ["GET"]), ("/", index, ["GET"]), ("/signout", signout, ["POST"]),
    ("/rate", resume, ["GET"]), ("/rate/<int:pos>", rate, ["GET"]), ("/rate/<int:pos>", answer, ["POST"]),
    ("/done", done, ["GET"]), ("/export.csv", export, ["GET"]), ("/admin", admin, ["GET"]),
    ("/admin/status.json", admin_status, ["GET"]),
]


def serve(app: Flask, host: str = "127.0.0.1", port: int = 5000, announce=print) -> None:
    """Run `app` on Werkzeug's threaded WSGI server until interrupted; port 0 picks a free port.
    `announce` gets the URL once the socket is bound (tests read it)."""
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)
    announce(f"http://{host}:{server.server_port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
