"""The rating page: a small Flask app over a task file and an answer store.

A rater signs in by name, sees one item at a time (the query, the item, and the two systems'
grades side by side, with reasoning when the task has it), answers Left / Same / Right by
button or key, can go back, and on return resumes at the first item not yet answered. Each
answer is written to SQLite before the page moves on; when the server cannot be reached the
page keeps the answer and retries until it is saved.

No passwords: bind to 127.0.0.1 (the default) or a network you trust.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, jsonify, redirect, render_template, request, session, url_for

from taosr1.sbs.store import AnswerStore
from taosr1.sbs.tasks import ANSWERS, Tasks, load_tasks


def default_db(tasks_path: str | Path) -> Path:
    return Path(tasks_path).with_name("answers.sqlite")


def _pretty(column: str) -> str:
    name = column[len("product_"):] if column.startswith("product_") else column
    return name.replace("_", " ").capitalize()


def create_app(tasks_path: str | Path, db_path: str | Path | None = None, *, retry_ms: int = 2000) -> Flask:
    """The app serving `tasks_path`, answers in `db_path` (default: answers.sqlite beside the tasks)."""
    tasks: Tasks = load_tasks(tasks_path)
    store = AnswerStore(db_path or default_db(tasks_path), tasks.task_id)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=store.secret(), SESSION_COOKIE_NAME=f"sbs_{tasks.task_id[:10]}",  # one cookie per task set
        SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True,
        PERMANENT_SESSION_LIFETIME=timedelta(days=30))
    app.extensions["sbs"] = {"tasks": tasks, "store": store}
    sheet = tasks.sheet
    common = {"title": sheet["title"], "labels": sheet["labels"], "retry_ms": retry_ms}

    def rater() -> str | None:
        name = session.get("rater")
        return name if name in sheet["queues"] else None

    def first_open(name: str, after: int = 0) -> int | None:
        """1-based position of the first unanswered item after `after` (wrapping), None when all are done."""
        queue, done = tasks.queue(name), store.answers_of(name)
        n = len(queue)
        for step in range(n):
            p = (after + step) % n
            if queue[p] not in done:
                return p + 1
        return None

    @app.get("/")
    def index():
        if rater():
            return redirect(url_for("resume"))
        return render_template("signin.html", error=None, **common)

    @app.post("/signin")
    def signin():
        name = tasks.rater(request.form.get("name", ""))
        if name is None:
            return render_template("signin.html", error="That name is not on this task's list of raters. "
                                   "Type it as you were given it.", **common), 403
        session.clear()
        session.permanent = True
        session["rater"] = name
        return redirect(url_for("resume"))

    @app.post("/signout")
    def signout():
        session.clear()
        return redirect(url_for("index"))

    @app.get("/rate")
    def resume():
        name = rater()
        if not name:
            return redirect(url_for("index"))
        pos = first_open(name)
        return redirect(url_for("done") if pos is None else url_for("rate", pos=pos))

    @app.get("/rate/<int:pos>")
    def rate(pos: int):
        name = rater()
        if not name:
            return redirect(url_for("index"))
        queue = tasks.queue(name)
        if not queue:
            return redirect(url_for("done"))
        if not 1 <= pos <= len(queue):
            return redirect(url_for("resume"))
        answers = store.answers_of(name)
        item = tasks.items[queue[pos - 1]]
        fields = [(_pretty(c), item["fields"][c]) for c in sheet["fields"][1:] if c in item["fields"]]
        return render_template(
            "rate.html", rater=name, pos=pos, total=len(queue), answered=sum(i in answers for i in queue),
            item=item, heading=item["fields"].get(sheet["fields"][0], ""), fields=fields,
            current=answers.get(queue[pos - 1]), show_reasoning=sheet["show_reasoning"],
            back=url_for("rate", pos=pos - 1) if pos > 1 else None,
            forward=url_for("rate", pos=pos + 1) if pos < len(queue) and queue[pos - 1] in answers else None,
            **common)

    @app.post("/rate/<int:pos>")
    def answer(pos: int):
        wants_json = request.accept_mimetypes.best == "application/json"
        name = rater()
        if not name:
            if wants_json:
                return jsonify(error="You are signed out. Sign in again; your saved answers are kept.",
                               signin=url_for("index")), 401
            return redirect(url_for("index"))
        queue = tasks.queue(name)
        value = request.form.get("answer", "")
        if not 1 <= pos <= len(queue) or value not in ANSWERS:
            msg = f"bad answer {value!r} for item {pos} of {len(queue)}; answer one of {list(ANSWERS)}"
            return (jsonify(error=msg), 400) if wants_json else (msg, 400)
        try:
            seconds = float(request.form.get("seconds", ""))
        except ValueError:
            seconds = None
        store.save(name, queue[pos - 1], value, seconds)
        nxt = first_open(name, after=pos)
        target = url_for("done") if nxt is None else url_for("rate", pos=nxt)
        return jsonify(saved=True, next=target) if wants_json else redirect(target)

    @app.get("/done")
    def done():
        name = rater()
        if not name:
            return redirect(url_for("index"))
        queue, answers = tasks.queue(name), store.answers_of(name)
        left = first_open(name)
        return render_template("done.html", rater=name, total=len(queue), answered=sum(i in answers for i in queue),
                               resume=url_for("rate", pos=left) if left else None, **common)

    @app.get("/export.csv")
    def export():
        """The signed-in rater's own answers (blinded, as given): position, item, answer, time."""
        name = rater()
        if not name:
            return redirect(url_for("index"))
        mine = store.rows_of(name)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["position", "item_id", "answer", "seconds", "answered_at"])
        for p, item_id in enumerate(tasks.queue(name), 1):
            if item_id in mine:
                answer, seconds, at = mine[item_id]
                w.writerow([p, item_id, answer, "" if seconds is None else round(seconds, 1), at])
        return Response(buf.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": f"attachment; filename=sbs_answers_{name}.csv"})

    return app


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
