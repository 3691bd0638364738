"""The rating page in a real headless Chromium (Playwright), against `taosr1 sbs serve` in its own process.

Needs Chromium (Debian package `chromium`) and the `playwright` Python package (no Playwright browser
download: the system Chromium is used). Skipped when either is missing, except under CI (env CI set),
where a missing browser fails the run.
"""

from __future__ import annotations

import csv
import os
import shutil

import pytest
from sbs_data import blinded, build, free_server, links, plant, stop

from taosr1.sbs.config import SbsReportConfig
from taosr1.sbs.report import sbs_report
from taosr1.sbs.store import AnswerStore

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
KEY_OF = {"left": "1", "same": "2", "right": "3"}


def _chromium() -> str | None:
    for p in (os.environ.get("TAOSR1_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
              "/usr/bin/chromium"):
        if p and os.path.exists(p):
            return p
    return None


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        why = ("no Chromium found (apt-get install chromium)" if exe is None else
               "the playwright package is not installed (pip install -e '.[dev]')")
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {why}")
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def server():
    procs = []

    def start(tasks_path, port=0):
        proc, url = free_server(tasks_path, port=port)
        procs.append(proc)
        return proc, url

    yield start
    for p in procs:
        stop(p)


def sign_in(page, url, token):
    """Open a rater's secret link: it lands on the first unanswered item (or the done page)."""
    page.goto(f"{url}/t/{token}")
    page.wait_for_url(lambda u: "/rate/" in u or u.endswith("/done"))


def wanted(key, verdicts, item_id):
    rec = key["items"][item_id]
    return blinded(rec["expected"] if rec["kind"] == "gold" else verdicts[item_id], rec["left"])


def position(page) -> tuple[int, str]:
    return int(page.text_content("#position").split()[1]), page.text_content("#item-id").strip()


def test_link_rate_reload_go_back_resume_and_export(browser, server, tmp_path):
    tasks, key, _, tasks_path = build(tmp_path, size=4, k=2, raters=["ann", "bo"], gold_rate=0.2)
    tok = links(tasks_path)
    verdicts = plant(key, seed=2)
    queue = tasks.queue("ann")
    assert len(queue) == 5
    _, url = server(tasks_path)
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, url, tok["ann"])
    assert page.text_content("#rater") == "ann" and position(page) == (1, queue[0])
    assert page.text_content("#query") == tasks.items[queue[0]]["query"]
    page.keyboard.press(KEY_OF[wanted(key, verdicts, queue[0])])  # by key
    page.wait_for_url("**/rate/2")
    page.click(f"#btn-{wanted(key, verdicts, queue[1])}")  # by button
    page.wait_for_url("**/rate/3")
    page.reload()
    assert position(page) == (3, queue[2]) and page.text_content("#answered").startswith("2 answered")
    page.keyboard.press("b")  # back: the earlier answer is shown and can be changed
    page.wait_for_url("**/rate/2")
    first = wanted(key, verdicts, queue[1])
    assert "chosen" in page.get_attribute(f"#btn-{first}", "class")
    other = "same" if first != "same" else "left"
    page.keyboard.press(KEY_OF[other])
    page.wait_for_url("**/rate/3")
    page.keyboard.press("b")
    page.wait_for_url("**/rate/2")
    page.click(f"#btn-{first}")  # and back again
    page.wait_for_url("**/rate/3")
    ctx.close()  # the browser goes away; a new one resumes at the first unanswered item
    ctx = browser.new_context(accept_downloads=True)
    page = ctx.new_page()
    sign_in(page, url, tok["ann"])
    assert position(page) == (3, queue[2])
    for p in range(3, 6):
        page.keyboard.press(KEY_OF[wanted(key, verdicts, queue[p - 1])])
        page.wait_for_url("**/done" if p == 5 else f"**/rate/{p + 1}")
    assert "All 5 items answered" in page.text_content("#done")
    with page.expect_download() as dl:
        page.click("#export")
    rows = list(csv.DictReader(open(dl.value.path())))
    assert [r["item_id"] for r in rows] == queue
    assert [r["answer"] for r in rows] == [wanted(key, verdicts, i) for i in queue]
    ctx.close()
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    log = store.log()
    assert (log["rater"] == "ann").sum() == 7  # five answers, one change and one change back
    assert store.frame().set_index("item_id").loc[queue[1], "changes"] == 2
    store.save_many([("bo", i, wanted(key, verdicts, i), 3.0) for i in tasks.queue("bo")])
    m = sbs_report(tasks, key, store.frame(), SbsReportConfig(bootstrap=0, min_gold_answers=1))[0]
    vs = list(verdicts.values())
    assert (m["G"], m["S"], m["B"]) == (vs.count("B"), vs.count("same"), vs.count("A"))
    assert m["raters"]["gold_accuracy"].tolist() == [1.0, 1.0]


def test_server_killed_mid_session_loses_no_answer(browser, server, tmp_path):
    tasks, key, _, tasks_path = build(tmp_path, size=5, k=1, raters=["ann"], gold_rate=0)
    tok = links(tasks_path)
    queue = tasks.queue("ann")
    proc, url = server(tasks_path)
    port = int(url.rsplit(":", 1)[1])
    page = browser.new_page()
    sign_in(page, url, tok["ann"])
    page.keyboard.press("1")
    page.wait_for_url("**/rate/2")
    page.keyboard.press("3")
    page.wait_for_url("**/rate/3")
    stop(proc)  # SIGKILL: the server dies with the rater in the middle of the queue
    page.keyboard.press("2")  # answered while the server is down: kept in the page, retried
    page.wait_for_selector("#status.warn")
    assert "Not saved yet" in page.text_content("#status")
    assert page.url.endswith("/rate/3")
    server(tasks_path, port=port)  # back on the same address; the session cookie is still valid
    page.wait_for_url("**/rate/4", timeout=20_000)
    page.reload()
    assert position(page) == (4, queue[3]) and page.text_content("#answered").startswith("3 answered")
    got = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id).answers_of("ann")
    assert got == {queue[0]: "left", queue[1]: "right", queue[2]: "same"}
    page.close()


def test_two_raters_at_once_do_not_overwrite_each_other(browser, server, tmp_path):
    tasks, key, _, tasks_path = build(tmp_path, size=6, k=2, raters=["ann", "bo"], gold_rate=0)
    assert sorted(tasks.queue("ann")) == sorted(tasks.queue("bo"))  # both rate every item
    tok = links(tasks_path)
    _, url = server(tasks_path)
    pages = {}
    for name in ("ann", "bo"):
        pages[name] = browser.new_context().new_page()
        sign_in(pages[name], url, tok[name])
    for p in range(1, 7):
        pages["ann"].keyboard.press("1")  # both requests in flight together
        pages["bo"].keyboard.press("3")
        for page in pages.values():
            page.wait_for_url("**/done" if p == 6 else f"**/rate/{p + 1}")
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    assert store.answers_of("ann") == {i: "left" for i in tasks.queue("ann")}
    assert store.answers_of("bo") == {i: "right" for i in tasks.queue("bo")}
    for page in pages.values():
        page.context.close()


# ---------------------------------------------------------------- access: links, CSRF, revocation

def test_rater_cannot_open_or_answer_another_raters_queue(browser, server, tmp_path):
    tasks, key, _, tasks_path = build(tmp_path, size=8, k=1, raters=["ann", "bo"], gold_rate=0)
    tok = links(tasks_path)
    mine, theirs = tasks.queue("ann"), tasks.queue("bo")
    assert not set(mine) & set(theirs)  # k=1: disjoint queues
    _, url = server(tasks_path)
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, url, tok["ann"])
    seen = []
    for p in range(1, len(mine) + 1):  # every page a rater can reach shows her own items only
        page.goto(f"{url}/rate/{p}")
        seen.append(position(page)[1])
    assert seen == mine
    page.goto(f"{url}/rate/{len(mine) + 1}")  # past the end: back into her own queue
    assert position(page)[1] == mine[0]
    # nothing a rater sends names the rater: a post naming bo still answers ann's own item 1
    status = page.evaluate("""async () => {
        const body = new FormData(document.getElementById("answer-form"));
        body.set("answer", "right"); body.set("rater", "bo"); body.set("item_id", %r);
        const r = await fetch("/rate/1", {method: "POST", body, headers: {"Accept": "application/json"}});
        return r.status; }""" % theirs[0])
    assert status == 200
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    assert store.answers_of("bo") == {} and store.answers_of("ann") == {mine[0]: "right"}
    # a guessed link, a near miss of bo's, and the admin page: the same bare 403, naming nobody
    for target in (f"/t/{tok['bo'][:-2]}xy", "/t/" + "A" * 43, "/admin", "/admin/status.json"):
        resp = page.goto(url + target)
        body = page.text_content("body")
        assert resp.status == 403 and body == "Forbidden: this page needs a valid personal link.", target
        assert "bo" not in body and "ann" not in body and theirs[0] not in body
    page.goto(f"{url}/rate/1")  # a failed guess does not sign her out, nor into bo's queue
    assert page.text_content("#rater") == "ann" and position(page)[1] == mine[0]
    ctx.close()


ATTACK = """<!doctype html><form id="f" method="post" action="{target}">
<input name="answer" value="left"><input name="seconds" value="1"></form>
<script>document.getElementById("f").submit()</script>"""


def test_forged_or_replayed_post_without_the_csrf_token_is_refused(browser, server, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    tasks, key, _, tasks_path = build(tmp_path, size=4, k=1, raters=["ann"], gold_rate=0)
    tok = links(tasks_path)
    queue = tasks.queue("ann")
    _, url = server(tasks_path)
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, url, tok["ann"])
    posts = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
    page.keyboard.press("1")  # a real answer: its request carries the CSRF token
    page.wait_for_url("**/rate/2")
    assert store.answers_of("ann") == {queue[0]: "left"}
    body = posts[0].post_data
    assert "csrf" in body

    # forged: another site on this machine (another port: same-site, so the cookie IS sent) posts a form
    html = ATTACK.format(target=f"{url}/rate/2").encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *a):
            pass

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with page.expect_response(f"{url}/rate/2") as resp:
            page.goto(f"http://127.0.0.1:{evil.server_port}/")
        assert resp.value.request.method == "POST" and resp.value.status == 403
        assert "sbs_" in resp.value.request.all_headers().get("cookie", "")  # refused for the token alone
    finally:
        evil.shutdown()
    # in the session but without the token (script on a page of the same origin)
    status = page.evaluate("""async () => (await fetch("/rate/2", {method: "POST", headers: {"Accept":
        "application/json"}, body: new URLSearchParams({answer: "right"})})).status""")
    assert status == 403
    # replayed: the captured request, token and all, from a browser without the session
    replay = browser.new_context()
    r = replay.request.post(f"{url}/rate/1", data=body, headers={"Content-Type": posts[0].headers["content-type"],
                                                                  "Accept": "application/json"})
    assert r.status == 403
    # and within the session after the link was opened again (a new token): the old one is refused
    sign_in(page, url, tok["ann"])
    r = ctx.request.post(f"{url}/rate/1", data=body.replace("answer=left", "answer=same") if "answer=left" in body
                         else body, headers={"Content-Type": posts[0].headers["content-type"],
                                             "Accept": "application/json"})
    assert r.status == 403
    assert store.answers_of("ann") == {queue[0]: "left"}  # nothing forged or replayed landed
    replay.close()
    ctx.close()


def test_revoked_link_stops_working_in_an_open_page(browser, server, tmp_path):
    from click.testing import CliRunner

    from taosr1.cli.main import main

    tasks, key, _, tasks_path = build(tmp_path, size=4, k=1, raters=["ann", "bo"], gold_rate=0)
    tok = links(tasks_path)
    _, url = server(tasks_path)
    page = browser.new_context().new_page()
    sign_in(page, url, tok["ann"])
    page.keyboard.press("2")
    page.wait_for_url("**/rate/2")
    res = CliRunner().invoke(main, ["sbs", "revoke", str(tasks_path), "--rater", "ann"])
    assert res.exit_code == 0 and "revoked 1 link(s)" in res.output, res.output
    page.keyboard.press("3")  # the page is open, the link is revoked: the answer is refused, not lost silently
    page.wait_for_selector("#status.error")
    assert "not valid" in page.text_content("#status")
    assert page.goto(f"{url}/rate/2").status == 403
    fresh = browser.new_context().new_page()
    assert fresh.goto(f"{url}/t/{tok['ann']}").status == 403
    sign_in(fresh, url, tok["bo"])  # other raters' links keep working
    assert fresh.text_content("#rater") == "bo"
    store = AnswerStore(tmp_path / "answers.sqlite", tasks.task_id)
    assert store.answers_of("ann") == {tasks.queue("ann")[0]: "same"}  # answers given before are kept
    page.context.close()
    fresh.context.close()
