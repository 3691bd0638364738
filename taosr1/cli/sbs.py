"""`taosr1 sbs make | invite | revoke | serve | status | report`: side-by-side human evaluation of two prediction sets.

Registered on the main group at the bottom of taosr1/cli/main.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from taosr1.cli.tools import fail as _fail
from taosr1.cli.tools import option_values, writable
from taosr1.core.config import ConfigError

_ERRORS = (ConfigError, ValueError, FileNotFoundError, KeyError)
_FORMATS = click.Choice(["csv", "parquet", "jsonl", "delta"])


def _config(config, overrides, **values):
    from taosr1.sbs.config import load_sbs_config

    merged = option_values(values, overrides)
    return load_sbs_config(config, merged)


def _config_options(f):
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config key, e.g. report.min_gold_accuracy=0.8.")(f)
    return click.option("--config", type=click.Path(dir_okay=False), help="YAML config (default conf/sbs.yaml).")(f)


def _tasks_and_db(tasks_path, db):
    from taosr1.sbs.app import default_db
    from taosr1.sbs.tasks import load_tasks

    tasks = load_tasks(tasks_path)
    return tasks, Path(db) if db else default_db(tasks_path)


@click.group("sbs")
def sbs() -> None:
    """Side-by-side human evaluation (GSB) of two prediction sets, with gold questions.

    \b
      taosr1 sbs make base.parquet new.parquet --raters ann,bo,cy --gold gold.csv --gold-col label --out sbs/
      taosr1 sbs serve sbs/tasks.json            # each rater opens their own link and rates
      taosr1 sbs revoke sbs/tasks.json --rater bo   # bo's link stops working
      taosr1 sbs status sbs/tasks.json
      taosr1 sbs report sbs/tasks.json --out sbs/report/
    """


def _base_url_option(f):
    return click.option("--base-url", default="http://127.0.0.1:5000", show_default=True,
                        help="Address raters reach the page at (e.g. https://sbs.example.com), to print full links.")(f)


def _echo_links(tokens: dict[str, str], base_url: str) -> dict[str, str]:
    """Print each new link once (they are stored nowhere): send each rater their own, keep the admin one."""
    links = {name: f"{base_url.rstrip('/')}/t/{token}" for name, token in tokens.items()}
    click.echo("Secret links, shown only now (a lost one: `taosr1 sbs invite TASKS --rater NAME --replace`):")
    for name, url in links.items():
        click.echo(f"  {name:<20} {url}")
    return links


@sbs.command("make")
@click.argument("a")
@click.argument("b")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for tasks.json (the sheet, for the server) and key.json (the blinding key).")
@click.option("--raters", help="Rater names, comma separated (config: raters).")
@click.option("--k", type=int, help="Raters per item.")
@click.option("--size", type=int, help="Regular items to sample.")
@click.option("--seed", type=int, help="Seed of the sample, blinding, assignment and gold placement.")
@click.option("--segment", help="Column of query type to stratify by and break the report down by.")
@click.option("--disagree-share", type=float, help="Share of each segment's sample drawn from pairs the systems label differently (default: proportional).")
@click.option("--gold", help="Labelled table of gold pairs (keys + a gold label column).")
@click.option("--gold-col", help="Gold label column of --gold.")
@click.option("--gold-rate", type=float, help="Share of each rater's queue that is gold questions.")
@click.option("--name-a", help="Name of A, the baseline (default: its file name).")
@click.option("--name-b", help="Name of B, the candidate (default: its file name).")
@click.option("--labels", help="Label scheme (default: the predictions' label_scheme column, else taosr1).")
@click.option("--format", "fmt", type=_FORMATS, help="Format of A and B.")
@click.option("--gold-format", type=_FORMATS)
@_base_url_option
@_config_options
def make_cmd(a, b, out_dir, raters, k, size, seed, segment, disagree_share, gold, gold_col, gold_rate, name_a, name_b,
             labels, fmt, gold_format, base_url, config, overrides):
    """Sample pairs graded by A (baseline) and B (candidate), blind them, mix in gold questions and
    assign each item to k raters.

    A and B are prediction tables of the same pairs (outputs of `taosr1 label`). Writes OUT/tasks.json,
    which `taosr1 sbs serve` shows to raters, OUT/key.json (which side is which, gold answers):
    keep the key away from raters; only `taosr1 sbs report` reads it, and OUT/access.json (mode
    0600: hashes of the links). Prints each rater's secret link and an admin link, once: send each
    rater their own.
    """
    from taosr1.sbs.make import make_tasks
    from taosr1.sbs.tasks import write_tasks
    from taosr1.storage.tables import read_table

    out = Path(out_dir)
    if (out / "answers.sqlite").exists():
        _fail(f"{out} already holds answers (answers.sqlite) to a task set; making new tasks there would orphan "
              f"them. Use another --out folder")
    writable(out_dir, "task folder", folder=True)
    name_a, name_b = name_a or Path(a).name, name_b or Path(b).name
    if name_a == name_b:
        name_a, name_b = f"A: {name_a}", f"B: {name_b}"
    try:
        cfg = _config(config, overrides, raters=raters, k=k, size=size, seed=seed, segment=segment,
                      disagree_share=disagree_share, gold_rate=gold_rate)
        da, db = read_table(a, fmt), read_table(b, fmt)
        gold_df = read_table(gold, gold_format) if gold else None
        sheet, key, summary = make_tasks(da, db, cfg, gold=gold_df, gold_col=gold_col, labels=labels, name_a=name_a,
                                         name_b=name_b, source_a=a, source_b=b, gold_source=gold or "")
    except _ERRORS as e:
        _fail(str(e))
    from taosr1.sbs.access import access_path, invite, new_access
    from taosr1.sbs.tasks import load_tasks

    paths = write_tasks(out, sheet, key)
    tasks = load_tasks(paths["tasks"])
    tokens = invite(new_access(tasks, access_path(paths["tasks"])), tasks, tasks.raters, admin=True)
    click.echo(f"{summary['regular_items']} items + {summary['gold_items']} gold questions for "
               f"{len(summary['raters'])} raters ({cfg.k} per item). Serve {paths['tasks']}; keep {paths['key']} "
               f"away from raters.")
    links = _echo_links(tokens, base_url)
    click.echo(json.dumps({**summary, "tasks": str(paths["tasks"]), "key": str(paths["key"]), "links": links}))


@sbs.command("invite")
@click.argument("tasks_path", metavar="TASKS")
@click.option("--rater", "raters", multiple=True, help="Rater to issue a link to (repeatable).")
@click.option("--all", "everyone", is_flag=True, help="A link for every rater of TASKS.")
@click.option("--admin", is_flag=True, help="An admin link (progress page /admin).")
@click.option("--replace", is_flag=True, help="Revoke the earlier links of those raters (or the admin).")
@click.option("--access", "access_file", type=click.Path(dir_okay=False), help="Access file (default: access.json beside TASKS).")
@_base_url_option
def invite_cmd(tasks_path, raters, everyone, admin, replace, access_file, base_url):
    """Issue new secret links for raters of TASKS (creates the access file when missing).

    A rater's earlier links stay valid unless --replace. Works while the server runs.
    """
    from taosr1.sbs.access import access_path, invite, load_access, new_access
    from taosr1.sbs.tasks import load_tasks

    if not (raters or everyone or admin):
        _fail("name whom to invite: --rater NAME, --all or --admin")
    try:
        tasks = load_tasks(tasks_path)
        path = Path(access_file) if access_file else access_path(tasks_path)
        acc = load_access(path, tasks) if path.exists() else new_access(tasks, path)
        tokens = invite(acc, tasks, tasks.raters if everyone else list(raters), admin=admin, replace=replace)
    except _ERRORS as e:
        _fail(str(e))
    click.echo(json.dumps({"links": _echo_links(tokens, base_url)}))


@sbs.command("revoke")
@click.argument("tasks_path", metavar="TASKS")
@click.option("--rater", "raters", multiple=True, help="Revoke every link of this rater (repeatable).")
@click.option("--id", "ids", multiple=True, help="Revoke the link with this id (see /admin or --list).")
@click.option("--admin", is_flag=True, help="Revoke every admin link.")
@click.option("--all", "everyone", is_flag=True, help="Revoke every link: nobody can open the page.")
@click.option("--list", "listing", is_flag=True, help="Only list the links (id, role, rater, issued, revoked).")
@click.option("--access", "access_file", type=click.Path(dir_okay=False), help="Access file (default: access.json beside TASKS).")
def revoke_cmd(tasks_path, raters, ids, admin, everyone, listing, access_file):
    """Revoke links: they stop working at the next request, also in a browser already using them.

    Answers given through them are kept. Issue a new link with `taosr1 sbs invite`.
    """
    from taosr1.sbs.access import access_path, load_access
    from taosr1.sbs.tasks import load_tasks

    try:
        tasks = load_tasks(tasks_path)
        acc = load_access(Path(access_file) if access_file else access_path(tasks_path), tasks)
        if not listing:
            if not (raters or ids or admin or everyone):
                _fail("name what to revoke: --rater NAME, --id ID, --admin or --all")
            unknown = [r for r in raters if tasks.rater(r) is None] + [i for i in ids if i not in
                                                                         {g.id for g in acc.grants}]
            if unknown:
                raise ValueError(f"no such rater or link id: {unknown}; see `taosr1 sbs revoke {tasks_path} --list`")
            hit = [g for r in raters for g in acc.revoke(rater=tasks.rater(r))]
            hit += [g for i in ids for g in acc.revoke(grant_id=i)] + acc.revoke(admin=admin, everyone=everyone)
            acc.save()
            click.echo(f"revoked {len(hit)} link(s): {', '.join(g.id for g in hit) or 'none were valid'}")
    except _ERRORS as e:
        _fail(str(e))
    for g in acc.grants:
        click.echo(f"{g.id:<20} {g.role:<6} {g.rater or '':<16} issued {g.created}  "
                   f"{'revoked ' + g.revoked if g.revoked else 'valid'}")


@sbs.command("serve")
@click.argument("tasks_path", metavar="TASKS")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite answer file (default: answers.sqlite beside TASKS).")
@click.option("--access", "access_file", type=click.Path(dir_okay=False), help="Access file (default: access.json beside TASKS).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind. Over a network, bind to 127.0.0.1 behind an HTTPS reverse proxy (docs/sbs.md).")
@click.option("--port", default=5000, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option("--secure-cookies", is_flag=True, help="Send the session cookie over HTTPS only (behind a TLS proxy).")
@click.option("--proxies", default=0, show_default=True, type=int, help="Reverse proxies in front whose X-Forwarded-* headers to trust.")
def serve_cmd(tasks_path, db, access_file, host, port, secure_cookies, proxies):
    """Start the rating page for TASKS (tasks.json from `taosr1 sbs make`).

    Each rater opens their own secret link, answers Left / Same / Right (keys 1 2 3 or arrows), can go
    back, and resumes where they left off. Every answer is written to the SQLite file at once; stop with
    Ctrl-C at any time. Without a valid link every page answers 403.
    """
    from taosr1.sbs.app import create_app, serve

    try:
        tasks, db_path = _tasks_and_db(tasks_path, db)
        app = create_app(tasks_path, db_path, access=access_file, secure_cookies=secure_cookies, proxies=proxies)
    except _ERRORS as e:
        _fail(str(e))

    def announce(url):
        click.echo(f"serving {len(tasks.items)} items to {len(tasks.raters)} raters on {url} "
                   f"(answers in {db_path}); Ctrl-C stops", err=False)
        sys.stdout.flush()

    serve(app, host, port, announce=announce)


@sbs.command("status")
@click.argument("tasks_path", metavar="TASKS", required=False)
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite answer file (default: answers.sqlite beside TASKS).")
@click.option("--url", help="Ask a running server instead (its /admin/status.json), with the admin token in "
              "the environment variable TAOSR1_SBS_ADMIN_TOKEN.")
def status_cmd(tasks_path, db, url):
    """How far each rater has got: from the answer file (safe while the server runs), or from a
    server over the network with an admin token (--url)."""
    from taosr1.sbs.store import open_existing

    if url:
        return _remote_status(url)
    if not tasks_path:
        _fail("pass TASKS (the tasks.json) or --url of a running server")

    try:
        tasks, db_path = _tasks_and_db(tasks_path, db)
        answers = open_existing(db_path, tasks.task_id).frame()
    except _ERRORS as e:
        _fail(str(e))
    done = answers.groupby("rater")["item_id"].nunique()
    for name in tasks.raters:
        click.echo(f"{name:<20} {int(done.get(name, 0)):>5} / {len(tasks.queue(name))}")
    click.echo(json.dumps({"answers": int(len(answers)), "items": len(tasks.items),
                           "raters": {n: int(done.get(n, 0)) for n in tasks.raters}}))


@sbs.command("report")
@click.argument("tasks_path", metavar="TASKS")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite answer file (default: answers.sqlite beside TASKS).")
@click.option("--key", "key_path", type=click.Path(dir_okay=False), help="Blinding key (default: key.json beside TASKS).")
@click.option("--adjudication", type=click.Path(dir_okay=False),
              help="disputes.csv with its `adjudicated` column filled (left / same / right).")
@click.option("--title", help="Report title.")
@_config_options
def report_cmd(tasks_path, out_dir, db, key_path, adjudication, title, config, overrides):
    """Un-blind the answers and write the GSB / Goodrate report with rater quality controls.

    Writes OUT/metrics.json, report.md, report.html, figures/*.png and tables/*.csv (segments, raters,
    agreement_pairs, disputes, strata, items), like `taosr1 eval`.
    """
    from taosr1.evaluation.report import write_report
    from taosr1.sbs.report import CAPTIONS, read_adjudication, sbs_report
    from taosr1.sbs.store import open_existing
    from taosr1.sbs.tasks import load_key
    from taosr1.storage.tables import read_table

    writable(out_dir, "report folder", folder=True)
    try:
        cfg = _config(config, overrides)
        tasks, db_path = _tasks_and_db(tasks_path, db)
        key = load_key(key_path or Path(tasks_path).with_name("key.json"), tasks)
        answers = open_existing(db_path, tasks.task_id).frame()
        adj = read_adjudication(read_table(adjudication, "csv"), key, adjudication) if adjudication else None
        metrics, figures, tables, summary, notes = sbs_report(tasks, key, answers, cfg.report, adjudicated=adj)
    except _ERRORS as e:
        _fail(str(e))
    paths = write_report(out_dir, title or f"Side by side: {metrics['b']} against {metrics['a']}", metrics, figures,
                         tables, summary=summary, notes=notes, captions=CAPTIONS, max_rows=cfg.report.max_rows)
    click.echo(json.dumps({k: metrics[k] for k in ("gsb", "item_goodrate_a", "item_goodrate_b", "query_goodrate_a",
                                                   "query_goodrate_b", "G", "S", "B", "rated_items",
                                                   "excluded_raters", "disputes")}
                          | {"gsb_ci": metrics["ci"]["gsb"], "report": str(paths["html"])}))


def _remote_status(url: str) -> None:
    import os
    import urllib.error
    import urllib.request

    token = os.environ.get("TAOSR1_SBS_ADMIN_TOKEN", "")
    if not token:
        _fail("set TAOSR1_SBS_ADMIN_TOKEN to the admin link's token (the part after /t/)")
    req = urllib.request.Request(url.rstrip("/") + "/admin/status.json",
                                 headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as e:
        _fail(f"{url} answered {e.code}: {'the admin token is not valid' if e.code == 403 else e.reason}")
    except urllib.error.URLError as e:
        _fail(f"cannot reach {url}: {e.reason}")
    for name, p in data["raters"].items():
        click.echo(f"{name:<20} {p['answered']:>5} / {p['items']}")
    click.echo(json.dumps({"answers": data["answered"], "items": data["items"],
                           "raters": {n: p["answered"] for n, p in data["raters"].items()}}))
