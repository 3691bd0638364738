"""The rating app through Flask's test client and a real threaded server; the SQLite answer store."""

from __future__ import annotations

import http.cookiejar
import threading
import urllib.parse
import urllib.request

import pytest

from sbs_data import build
from taosr1.sbs.app import create_app
from taosr1.sbs.store import AnswerStore


@pytest.fixture
def task(tmp_path):
    tasks, key, _, path = build(tmp_path, size=6, k=2, raters=["ann", "bo"], gold_rate=0)
    return tasks, path


def client(path, name=None):
    c = create_app(path).test_client()
    if name:
        assert c.post("/signin", data={"name": name}).status_code == 302
    return c


def test_sign_in_by_name_only_for_raters(task):
    tasks, path = task
    c = client(path)
    r = c.post("/signin", data={"name": "mallory"})
    assert r.status_code == 403 and b"not on this task" in r.data
    assert c.get("/rate").headers["Location"] == "/"  # signed out: back to the sign-in page
    r = c.post("/rate/1", data={"answer": "left"}, headers={"Accept": "application/json"})
    assert r.status_code == 401 and r.json["signin"] == "/"
    assert c.post("/signin", data={"name": "  Bo "}).headers["Location"] == "/rate"
    assert c.get("/rate").headers["Location"] == "/rate/1"
    page = c.get("/rate/1").data.decode()
    item = tasks.items[tasks.queue("bo")[0]]
    assert item["query"].replace("&", "&amp;").replace("'", "&#39;") in page
    for shortcut in ("<kbd>1</kbd>", "<kbd>2</kbd>", "<kbd>3</kbd>", "<kbd>B</kbd>", "<kbd>N</kbd>"):
        assert shortcut in page


def test_answers_resume_change_and_finish(task, tmp_path):
    tasks, path = task
    c = client(path, "ann")
    q = tasks.queue("ann")
    json_h = {"Accept": "application/json"}
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
    assert client(path, "bo").get("/export.csv").data.decode().count("\n") == 1  # only one's own answers


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

    tasks, path = task
    app = create_app(path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    errors = []

    def rate(name, answer, rounds):
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        try:
            opener.open(base + "/signin", urllib.parse.urlencode({"name": name}).encode())
            for r in range(rounds):
                for p in range(1, len(tasks.queue(name)) + 1):
                    a = answer if r == rounds - 1 else "same"
                    req = urllib.request.Request(f"{base}/rate/{p}", urllib.parse.urlencode({"answer": a}).encode(),
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
