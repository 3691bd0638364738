"""The rating app through Flask's test client and a real threaded server; the SQLite answer store;
secret links, CSRF and revocation (taosr1/sbs/access.py)."""

from __future__ import annotations

import http.cookiejar
import json
import threading
import urllib.parse
import urllib.request

import pytest
from sbs_data import build, links

from taosr1.sbs.access import access_path, load_access
from taosr1.sbs.app import FORBIDDEN, create_app
from taosr1.sbs.store import AnswerStore
from taosr1.sbs.tasks import load_tasks

JSON = {"Accept": "application/json"}


@pytest.fixture
def task(tmp_path):
    tasks, key, _, path = build(tmp_path, size=6, k=2, raters=["ann", "bo"], gold_rate=0)
    return tasks, path, links(path)


class Rater:
    """A test client signed in through a secret link; posts carry the session's CSRF token."""

    def __init__(self, path, token=None, app=None):
        self.c = (app or create_app(path)).test_client()
        if token:
            assert self.c.get(f"/t/{token}").status_code == 302

    @property
    def csrf(self):
        with self.c.session_transaction() as s:
            return s.get("csrf", "")

    def get(self, url, **kw):
        return self.c.get(url, **kw)

    def post(self, url, data=None, **kw):
        return self.c.post(url, data={**(data or {}), "csrf": self.csrf}, **kw)


def client(path, token=None):
    return Rater(path, token)


def test_only_a_valid_link_opens_the_page_and_reveals_nothing_else(task):
    tasks, path, tok = task
    c = client(path)
    for url in ("/", "/rate", "/rate/1", "/done", "/export.csv", "/admin", "/admin/status.json", "/t/" + "x" * 43,
                "/t/" + tok["ann"][:-1] + ("A" if tok["ann"][-1] != "A" else "B")):
        r = c.get(url)
        assert r.status_code == 403 and r.data.decode() == FORBIDDEN, url  # same bare answer for all
    r = c.c.post("/rate/1", data={"answer": "left"}, headers=JSON)
    assert r.status_code == 403 and "personal link" in r.json["error"]
    assert c.get(f"/t/{tok['bo']}").headers["Location"] == "/rate"
    assert c.get("/rate").headers["Location"] == "/rate/1"
    page = c.get("/rate/1").data.decode()
    item = tasks.items[tasks.queue("bo")[0]]
    assert item["query"].replace("&", "&amp;").replace("'", "&#39;") in page
    assert 'name="csrf"' in page and c.csrf in page
    for shortcut in ("<kbd>1</kbd>", "<kbd>2</kbd>", "<kbd>3</kbd>", "<kbd>B</kbd>", "<kbd>N</kbd>"):
        assert shortcut in page
    assert c.get("/admin").status_code == 403  # a rater's link is no admin link
    assert tok["ann"] not in (path.read_text() + access_path(path).read_text())  # no token stored anywhere
    assert load_access(access_path(path), tasks).key not in path.read_text()
    assert oct(access_path(path).stat().st_mode & 0o777) == "0o600"


def test_posts_without_the_sessions_csrf_token_are_refused(task, tmp_path):
    tasks, path, tok = task
    c = client(path, tok["ann"])
    for data in ({"answer": "left"}, {"answer": "left", "csrf": "forged"}, {"answer": "left", "csrf": "é" * 43}):
        r = c.c.post("/rate/1", data=data, headers=JSON)
        assert r.status_code == 403
    old = c.csrf
    assert c.post("/rate/1", {"answer": "left"}, headers=JSON).status_code == 200
    other = client(path)  # a replay of that post, token included, from outside the session
    assert other.c.post("/rate/1", data={"answer": "right", "csrf": old}, headers=JSON).status_code == 403
    c.get(f"/t/{tok['ann']}")  # opening the link again starts a new session with a new token
    assert c.csrf != old
    assert c.c.post("/rate/1", data={"answer": "right", "csrf": old}, headers=JSON).status_code == 403
    assert AnswerStore(tmp_path / "answers.sqlite", tasks.task_id).answers_of("ann") == {tasks.queue("ann")[0]: "left"}


def test_revoked_link_and_its_session_stop_at_once_and_admin_sees_progress(task):
    from click.testing import CliRunner

    from taosr1.cli.main import main

    tasks, path, tok = task
    app = create_app(path)
    ann, admin = Rater(path, tok["ann"], app), Rater(path, tok["admin"], app)
    assert ann.post("/rate/1", {"answer": "same"}, headers=JSON).status_code == 200
    assert admin.get("/admin").status_code == 200 and b"ann" in admin.get("/admin").data
    st = app.test_client().get("/admin/status.json", headers={"Authorization": f"Bearer {tok['admin']}"})
    assert st.json["raters"] == {"ann": {"answered": 1, "items": 6}, "bo": {"answered": 0, "items": 6}}
    assert app.test_client().get("/admin/status.json", headers={"Authorization": f"Bearer {tok['ann']}"}).status_code == 403
    r = CliRunner().invoke(main, ["sbs", "revoke", str(path), "--rater", "ANN"])
    assert r.exit_code == 0 and "revoked 1 link(s)" in r.output, r.output
    assert ann.get("/rate/2").status_code == 403  # the signed-in session too, with no restart
    assert ann.post("/rate/2", {"answer": "same"}, headers=JSON).status_code == 403
    assert Rater(path, app=app).get(f"/t/{tok['ann']}").status_code == 403
    r = CliRunner().invoke(main, ["sbs", "invite", str(path), "--rater", "ann"])
    assert r.exit_code == 0, r.output
    new = json.loads(r.output.strip().splitlines()[-1])["links"]["ann"].rsplit("/t/", 1)[1]
    back = Rater(path, new, app)
    assert back.get("/rate").headers["Location"] == "/rate/2"  # resumes: answers given before are kept
    assert load_access(access_path(path), load_tasks(path)).check(tok["ann"]) is None


def test_answers_resume_change_and_finish(task, tmp_path):
    tasks, path, tok = task
    c = client(path, tok["ann"])
    q = tasks.queue("ann")
    json_h = JSON
    assert c.post("/rate/1", data={"answer": "up"}, headers=json_h).status_code == 400
    assert c.post("/rate/9", data={"answer": "left"}, headers=json_h).status_code == 400
    assert c.post("/rate/1", data={"answer": "left", "seconds": "4.5"}, headers=json_h).json == {
        "saved": True, "next": "/rate/2"}
    assert c.post("/rate/2", data={"answer": "same"}).headers["Location"] == "/rate/3"  # works without JS too
    assert c.post("/rate/1", data={"answer": "right", "seconds": "2"}, headers=json_h).json["next"] == "/rate/3"
    assert c.get("/rate").headers["Location"] == "/rate/3"  # resumes at the first unanswered item
    for p in range(3, 7):
        r = c.post(f"/rate/{p}", data={"answer": "same"}, headers=json_h)
    assert r.json["next"] == "/done"
    assert b"All 6 items answered" in c.get("/done").data
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    rows = store.frame().set_index("item_id")
    assert rows.loc[q[0], "answer"] == "right" and rows.loc[q[0], "changes"] == 1
    assert rows.loc[q[0], "seconds"] == pytest.approx(6.5)
    assert len(store.log()) == 7
    export = c.get("/export.csv").data.decode().splitlines()
    assert export[0] == "position,item_id,answer,seconds,answered_at"
    assert export[1].startswith(f"1,{q[0]},right,6.5,") and len(export) == 7
    assert client(path, tok["bo"]).get("/export.csv").data.decode().count("\n") == 1  # only one's own answers


def test_store_refuses_another_task_set_and_keeps_its_secret(tmp_path):
    s = AnswerStore(tmp_path / "a.sqlite", "task-1")
    secret = s.secret()
    assert AnswerStore(tmp_path / "a.sqlite", "task-1").secret() == secret  # a restart keeps sessions valid
    with pytest.raises(ValueError, match="holds answers to task set task-1"):
        AnswerStore(tmp_path / "a.sqlite", "task-2")
    with pytest.raises(ValueError, match="not one of"):
        s.save("ann", "it1", "maybe")


def test_raters_posting_at_once_to_a_threaded_server_all_land(task, tmp_path):
    """Two raters hammer a real threaded server from threads; every answer of each is kept."""
    from werkzeug.serving import make_server

    tasks, path, tok = task
    app = create_app(path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    errors = []

    def rate(name, answer, rounds):
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        try:
            page = opener.open(f"{base}/t/{tok[name]}").read().decode()
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            for r in range(rounds):
                for p in range(1, len(tasks.queue(name)) + 1):
                    a = answer if r == rounds - 1 else "same"
                    req = urllib.request.Request(f"{base}/rate/{p}",
                                                 urllib.parse.urlencode({"answer": a, "csrf": csrf}).encode(),
                                                 headers={"Accept": "application/json"})
                    assert opener.open(req).status == 200
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        threads = [threading.Thread(target=rate, args=(n, a, 3)) for n, a in (("ann", "left"), ("bo", "right"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        server.shutdown()
    assert not errors
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    assert store.answers_of("ann") == {i: "left" for i in tasks.queue("ann")}
    assert store.answers_of("bo") == {i: "right" for i in tasks.queue("bo")}
    assert len(store.log()) == 2 * 3 * 6


def test_status_over_the_network_needs_the_admin_token(task, monkeypatch):
    """`taosr1 sbs status --url` against a real server: progress with the admin token, 403 without."""
    from click.testing import CliRunner
    from werkzeug.serving import make_server

    from taosr1.cli.main import main

    tasks, path, tok = task
    app = create_app(path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        Rater(path, tok["bo"], app).post("/rate/1", {"answer": "left"}, headers=JSON)
        monkeypatch.setenv("TAOSR1_SBS_ADMIN_TOKEN", tok["admin"])
        r = CliRunner().invoke(main, ["sbs", "status", "--url", url])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output.strip().splitlines()[-1]) == {"answers": 1, "items": 6, "raters": {"ann": 0, "bo": 1}}
        monkeypatch.setenv("TAOSR1_SBS_ADMIN_TOKEN", tok["bo"])  # a rater's token is not enough
        r = CliRunner().invoke(main, ["sbs", "status", "--url", url])
        assert r.exit_code == 2 and "admin token is not valid" in r.output
    finally:
        server.shutdown()
