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

from sbs_data import blinded, build, free_server, plant, stop
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


def sign_in(page, url, name):
    page.goto(url + "/")
    page.fill("#name", name)
    page.click("#signin")
    page.wait_for_url("**/rate/*")


def wanted(key, verdicts, item_id):
    rec = key["items"][item_id]
    return blinded(rec["expected"] if rec["kind"] == "gold" else verdicts[item_id], rec["left"])


def position(page) -> tuple[int, str]:
    return int(page.text_content("#position").split()[1]), page.text_content("#item-id").strip()


def test_sign_in_rate_reload_go_back_resume_and_export(browser, server, tmp_path):
    tasks, key, _, tasks_path = build(tmp_path, size=4, k=2, raters=["ann", "bo"], gold_rate=0.2)
    verdicts = plant(key, seed=2)
    queue = tasks.queue("ann")
    assert len(queue) == 5
    _, url = server(tasks_path)
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, url, "  ANN ")  # names match without case or surrounding spaces
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
    sign_in(page, url, "ann")
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
    queue = tasks.queue("ann")
    proc, url = server(tasks_path)
    port = int(url.rsplit(":", 1)[1])
    page = browser.new_page()
    sign_in(page, url, "ann")
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
    _, url = server(tasks_path)
    pages = {}
    for name in ("ann", "bo"):
        pages[name] = browser.new_context().new_page()
        sign_in(pages[name], url, name)
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
