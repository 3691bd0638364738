"""Reading what eval and compare score: a predictions table (or one nightly run of it) and its gold labels."""

from __future__ import annotations

from taosr1.evaluation.data import labelled


def read_run(path: str, fmt: str | None, run_date: str | None = None):
    """A table; with `run_date`, only that run (read as one partition from a Delta table)."""
    from taosr1.storage.tables import detect_format, read_table

    if run_date is None:
        return read_table(path, fmt)
    if detect_format(path, fmt) == "delta":
        from taosr1.evaluation.drift import run_dates
        from taosr1.storage.tables import delta_table

        dates = run_dates(path)
        if run_date not in dates:
            raise ValueError(f"{path}: no run_date {run_date!r}; runs in the table: {dates[-10:]}")
        return delta_table(path).to_pandas(partitions=[("run_date", "=", run_date)])
    df = read_table(path, fmt)
    if "run_date" not in df.columns:
        raise ValueError(f"{path}: --run-date given but the table has no run_date column")
    df = df[df["run_date"].astype(str) == run_date]
    if df.empty:
        raise ValueError(f"{path}: no rows with run_date {run_date!r}")
    return df


def read_labelled(predictions, fmt, gold_col, gold, gold_fmt, cfg, labels, drop_unparsed, run_date=None):
    """PREDICTIONS (one run of it with `run_date`) with their gold labels, parsed by the scheme."""

    pred = read_run(predictions, fmt, run_date)
    gold_df = read_run(gold, gold_fmt) if gold else None
    return labelled(pred, gold_col=gold_col, source=predictions, gold=gold_df, gold_source=gold or predictions,
                    keys=cfg.keys, labels=labels, drop_unparsed=drop_unparsed)
