"""`taosr1 runs`: the recent nightly runs, as the runs table records them (committed runs only)."""

from __future__ import annotations

import json

import click

from taosr1.cli.tools import fail

# shown when the runs table has them; `reused*` columns come from incremental runs
COLUMNS = ["run_date", "run_id", "status", "current", "rows_in", "graded", "quarantined", "quarantine_share",
           "grade_psi", "resumed_rows", "reused", "reused_rows", "grades_version", "quarantine_version",
           "finished_at", "alerts"]


def runs_frame(output: str | None, runs: str | None, date: str | None, limit: int, incomplete: bool):
    """Newest first: each committed run, whether readers see it (`current`), and runs with no row."""
    import pandas as pd

    from taosr1.nightly import reader

    if not output and not runs:
        raise ValueError("pass --output GRADES (its runs table is GRADES_runs) or --runs RUNS")
    path = runs or reader.runs_path(output)
    if not reader._exists(path):
        raise FileNotFoundError(f"{path} is not a Delta table: no run has committed there yet")
    df = reader.committed_runs(path).astype(object)  # object: ints stay ints beside incomplete runs' gaps
    current = set(reader.current_runs(path)["run_id"])
    df["current"] = df["run_id"].isin(current)
    if incomplete and output:
        extra = pd.DataFrame(reader.incomplete_runs(output, runs), dtype=object)
        if not extra.empty:
            extra["current"] = False
            df = pd.concat([df, extra], ignore_index=True)
    if date:
        df = df[df["run_date"] == date]
    df = df.iloc[::-1].head(limit)
    return df[[c for c in COLUMNS if c in df.columns]].reset_index(drop=True)


def _plain(v):
    import pandas as pd

    if v is None or v is pd.NaT or (isinstance(v, float) and v != v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return v


@click.command("runs")
@click.option("--output", help="Grades Delta table; its runs table is OUTPUT_runs.")
@click.option("--runs", help="Runs Delta table (default: OUTPUT_runs).")
@click.option("--date", metavar="YYYY-MM-DD", help="Only runs of this run_date.")
@click.option("--limit", default=20, show_default=True, type=int, help="Newest runs shown.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run, newest first, instead of a table.")
def runs_cmd(output, runs, date, limit, as_json):
    """Recent nightly runs: counts, quarantine share, PSI against the previous night, status.

    Lists committed runs only (a run becomes visible through its runs row, written last);
    `current` marks the run whose grades `taosr1.read_grades` returns for its date. With
    --output, runs that committed a table but were killed before their row are listed as
    `incomplete` (readers do not see them; rerun or resume the date).
    """
    try:
        df = runs_frame(output, runs, date, limit, incomplete=True)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    if as_json:
        for row in df.to_dict("records"):
            click.echo(json.dumps({k: _plain(v) for k, v in row.items()}))
        return
    if df.empty:
        click.echo("no runs")
        return
    show = df.copy()
    if "quarantine_share" in show:
        show["quarantine_share"] = show["quarantine_share"].map(lambda v: "" if _plain(v) is None else f"{v:.1%}")
    if "grade_psi" in show:
        show["grade_psi"] = show["grade_psi"].map(lambda v: "" if _plain(v) is None else f"{v:.3f}")
    show = show.map(lambda v: "" if _plain(v) is None else v)
    click.echo(show.to_string(index=False))
