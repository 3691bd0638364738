"""`taosr1 eval`, `taosr1 compare`, `taosr1 drift`: thin click commands over taosr1.evaluation.

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
from taosr1.evaluation.inputs import read_labelled, read_run
from taosr1.storage.local_copy import write_folder

_ERRORS = (ConfigError, ValueError, FileNotFoundError, KeyError)


def _config(config, overrides, **values):
    from taosr1.evaluation.config import load_eval_config

    merged = option_values(values, overrides)
    return load_eval_config(config, merged)


def eval_options(f):
    opts = [
        click.option("--config", type=click.Path(dir_okay=False), help="YAML config (default conf/eval.yaml)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. bootstrap=2000."),
        click.option("--key-col", multiple=True, help="Key column (repeat for a composite key; default: config keys)."),
        click.option("--labels", help="Label scheme (default: the predictions' label_scheme column, else taosr1)."),
        click.option("--bootstrap", type=int, help="Bootstrap resamples for intervals (0: none)."),
        click.option("--seed", type=int, help="Bootstrap seed."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _names(option: str) -> list[str]:
    """Grade names of a comma-separated option (--macro-over)."""
    return [x.strip() for x in option.split(",") if x.strip()]


@click.command("eval")
@click.argument("predictions")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--gold-col", required=True, help="Gold label column: of PREDICTIONS, or of --gold when given.")
@click.option("--gold", "gold", help="Table of gold labels, joined to PREDICTIONS on the key columns.")
@click.option("--segment", multiple=True, help="Column to break the metrics down by (repeatable), e.g. source.")
@click.option("--drop-unparsed", is_flag=True, help="Leave out rows whose gold value is not a label (counted in the report) instead of refusing.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "jsonl", "delta"]), help="Format of PREDICTIONS.")
@click.option("--gold-format", type=click.Choice(["csv", "parquet", "jsonl", "delta"]))
@click.option("--run-date", help="Evaluate one run of a nightly table (its run_date, YYYY-MM-DD).")
@click.option("--title", help="Report title.")
@click.option("--macro-over", default="", metavar="LABELS",
              help="Also report the mean F1 over these grades only (e.g. Excellent,Related,Irrelevant: "
                   "macro-F1 without a grade too rare to resolve), with its interval.")
@eval_options
def eval_cmd(predictions, out_dir, gold_col, gold, segment, drop_unparsed, fmt, gold_format, run_date, title, macro_over,
             config, overrides, key_col, labels, bootstrap, seed):
    """Score PREDICTIONS (the output of `taosr1 label` or the nightly job) against gold labels.

    Writes OUT/metrics.json (accuracy, macro_f1, per_class, n, confusion, ordinal error, tier metrics,
    bootstrap intervals, calibration, segments), report.md, report.html, figures/*.png, tables/*.csv.
    Gold values may be spelled any way the scheme accepts (name, token, grade, alias).
    """
    from taosr1.evaluation.evaluate import eval_report
    from taosr1.evaluation.report import write_report

    out = writable(out_dir, "report folder", folder=True)
    try:
        cfg = _config(config, overrides, keys=list(key_col) or None, bootstrap=bootstrap, seed=seed)
        lab = read_labelled(predictions, fmt, gold_col, gold, gold_format, cfg, labels, drop_unparsed, run_date)
        metrics, figures, tables, summary, notes = eval_report(
            lab, cfg, segment, predictions=predictions, gold=f"{gold or predictions} column {gold_col}",
            macro_over=_names(macro_over))
    except _ERRORS as e:
        _fail(str(e))
    from taosr1.evaluation.evaluate import CAPTIONS

    title = title or f"Evaluation of {Path(predictions).name}"
    paths = write_folder(out, write_report, title, metrics, figures, tables, summary=summary, notes=notes,
                         captions=CAPTIONS)
    line = {k: metrics.get(k) for k in ("n", "accuracy", "macro_f1", "ndcg_at_10", "spearman", "ordinal_mae", "ece")}
    line["macro_f1_ci"] = metrics["ci"].get("macro_f1")
    if "macro_f1_over" in metrics:
        line.update(macro_over=metrics["macro_f1_over_labels"], macro_f1_over=metrics["macro_f1_over"],
                    macro_f1_over_ci=metrics["ci"].get("macro_f1_over"))
    line["report"] = str(paths["html"])
    click.echo(json.dumps(line))


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--gold-col", required=True, help="Gold label column: of A, or of --gold when given.")
@click.option("--gold", "gold", help="Table of gold labels, joined on the key columns.")
@click.option("--name-a", help="Name of A in the report (default: its file name).")
@click.option("--name-b", help="Name of B in the report (default: its file name).")
@click.option("--drop-unparsed", is_flag=True, help="Leave out rows whose gold value is not a label.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "jsonl", "delta"]), help="Format of A and B.")
@click.option("--gold-format", type=click.Choice(["csv", "parquet", "jsonl", "delta"]))
@click.option("--macro-over", default="", metavar="LABELS",
              help="Also compare the mean F1 over these grades only (e.g. Excellent,Related,Irrelevant: "
                   "macro-F1 without a grade too rare to resolve), with its own paired interval.")
@eval_options
def compare_cmd(a, b, out_dir, gold_col, gold, name_a, name_b, drop_unparsed, fmt, gold_format, macro_over, config,
                overrides, key_col, labels, bootstrap, seed):
    """Compare two prediction sets A and B on the same pairs.

    Each metric's difference B - A with a paired bootstrap interval, McNemar's test on the pairs
    only one side gets right, and every row where they disagree (OUT/tables/disagreements.csv).
    """
    from taosr1.evaluation.compare import compare_report
    from taosr1.evaluation.report import write_report

    out = writable(out_dir, "report folder", folder=True)
    name_a, name_b = name_a or Path(a).name, name_b or Path(b).name
    if name_a == name_b:
        name_a, name_b = f"A: {name_a}", f"B: {name_b}"
    try:
        cfg = _config(config, overrides, keys=list(key_col) or None, bootstrap=bootstrap, seed=seed)
        da, db = read_run(a, fmt), read_run(b, fmt)
        gold_df = read_run(gold, gold_format) if gold else None
        result = compare_report(da, db, cfg, gold_col=gold_col, gold=gold_df, labels=labels,
                                drop_unparsed=drop_unparsed, source_a=a, source_b=b, gold_source=gold or a,
                                name_a=name_a, name_b=name_b,
                                macro_over=_names(macro_over))
    except _ERRORS as e:
        _fail(str(e))
    metrics, figures, tables, summary, notes = result
    paths = write_folder(out, write_report, f"{name_b} against {name_a}", metrics, figures, tables, summary=summary,
                         notes=notes, max_rows=cfg.max_disagreements)
    mc = metrics["mcnemar"]
    click.echo(json.dumps({"n": metrics["n"], "macro_f1_difference": metrics["differences"]["macro_f1"],
                           "accuracy_difference": metrics["differences"]["accuracy"],
                           **({"ndcg_at_10_difference": metrics["differences"]["ndcg_at_10"]}
                              if "ndcg_at_10" in metrics["differences"] else {}),
                           **({"macro_f1_over_difference": metrics["differences"]["macro_f1_over"],
                               "macro_over": metrics["macro_over"]} if metrics["macro_over"] else {}),
                           "mcnemar": {k: mc[k] for k in ("only_a_correct", "only_b_correct", "p_value")},
                           "disagreements": metrics["disagreements"], "report": str(paths["html"])}))


@click.command("drift")
@click.option("--table", required=True, help="The grades Delta table (partitioned by run_date).")
@click.option("--run-date", required=True, help="The run to check, YYYY-MM-DD.")
@click.option("--previous", help="The run to compare with (default: the latest run_date before --run-date).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Also write a report folder.")
@click.option("--fail-on-drift", is_flag=True, help="Exit with status 3 when a threshold is crossed (for schedulers).")
@click.option("--config", type=click.Path(dir_okay=False), help="YAML config (default conf/eval.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="e.g. drift.psi_threshold=0.1")
@click.option("--key-col", multiple=True, help="Key column (repeat for a composite key; default: config keys).")
@click.option("--labels", help="Label scheme (default: the table's label_scheme column).")
def drift_cmd(table, run_date, previous, out_dir, fail_on_drift, config, overrides, key_col, labels):
    """Compare the grade and tier distribution of one night's run with the run before it.

    Prints one plain line (DRIFT ... or "no drift") and the numbers as JSON: PSI of the grade,
    tier and score distributions, and the share of pairs whose grade changed.
    """
    from taosr1.evaluation import drift as dr

    out = writable(out_dir, "report folder", folder=True) if out_dir else None
    try:
        cfg = _config(config, overrides, keys=list(key_col) or None)
        dates = dr.run_dates(table)
        prev_date = previous or dr.previous_run(dates, run_date, table)
        if previous:
            for d in (previous, run_date):
                if d not in dates:
                    raise ValueError(f"{table}: no run_date {d!r}; runs in the table: {dates[-10:]}")
        if prev_date is None:
            click.echo(f"no earlier run than {run_date} in {table}: nothing to compare (first run)")
            click.echo(json.dumps({"run_date": run_date, "previous": None, "drifted": False}))
            return
        prev, cur = dr.read_run(table, prev_date, cfg.keys), dr.read_run(table, run_date, cfg.keys)
        scheme = dr._scheme(prev, cur, labels, table)
        result = {"run_date": run_date, "previous": prev_date, "table": table,
                  **dr.drift(prev, cur, cfg.keys, cfg.drift, scheme)}
    except _ERRORS as e:
        _fail(str(e))
    if result["drifted"]:
        click.echo(f"DRIFT in {table}: run {run_date} against {prev_date}: " + "; ".join(result["reasons"]))
    else:
        click.echo(f"no drift in {table}: run {run_date} against {prev_date} (grade PSI {result['grade_psi']:.3f}, "
                   f"tier PSI {result['tier_psi']:.3f}, changed share "
                   f"{(result['changed_share'] or 0):.1%}: all within thresholds)")
    if out is not None:
        from taosr1.evaluation.report import write_report

        write_folder(out, write_report, f"Drift: {run_date} against {prev_date}", result,
                     **dr.drift_report_parts(result, scheme))
    click.echo(json.dumps({k: v for k, v in result.items() if k not in ("labels", "tiers", "transitions")}))
    if result["drifted"] and fail_on_drift:
        sys.exit(3)
