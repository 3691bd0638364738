"""Alerts for the person on call: a night that quarantines too much, or whose grades moved too far.

Checked after the run's commits, before its runs row is written: the data is kept, the row
records the verdict (`status` alerted, `alerts` the reasons), and `taosr1 nightly` then exits
with ALERT_EXIT and one line saying why. Drift is the population stability index (PSI) of the
label distribution against the previous night's committed run (taosr1/evaluation/drift.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taosr1.core.config import ConfigError

ALERT_EXIT = 3  # not 2 (bad input or config, nothing written): this run's data is committed


@dataclass
class AlertConfig:
    """Thresholds that fail a committed run (null: no check).

    Parameters:
        max_quarantine_share: alert when quarantined / rows_in is above this share.
        max_psi: alert when the PSI of tonight's label distribution against the previous
            night's (the latest committed run of an earlier date) is above this (0.1 moderate,
            0.25 large). No previous night: no PSI, no alert.
    """

    max_quarantine_share: float | None = None
    max_psi: float | None = None

    def __post_init__(self) -> None:
        if self.max_quarantine_share is not None and not 0 <= self.max_quarantine_share <= 1:
            raise ConfigError(f"alert.max_quarantine_share is a share in [0, 1] or null, got {self.max_quarantine_share}")
        if self.max_psi is not None and self.max_psi < 0:
            raise ConfigError(f"alert.max_psi must be >= 0 or null, got {self.max_psi}")


def label_psi(previous, current, names: list[str]) -> float | None:
    """PSI of two label columns over the scheme's labels; None when either night graded nothing."""
    from taosr1.evaluation.drift import _shares, psi

    if len(previous) == 0 or len(current) == 0:
        return None
    return psi(_shares(previous, names), _shares(current, names))[0]


def night_psi(record: dict[str, Any], runs: str, names: list[str]) -> tuple[float | None, dict | None]:
    """PSI of this run's committed labels against the previous night's, and that night's runs row."""
    from taosr1.nightly import reader

    prev = reader.previous_run(runs, record["run_date"])
    if prev is None:
        return None, None
    path = record["output"]  # this run's path to the table both nights were written to
    before = reader.read_table_of(prev, "output", path=path, columns=["label"])["label"]
    tonight = reader.read_table_of(record, "output", path=path, columns=["label"])["label"]
    return label_psi(before, tonight, names), prev


def evaluate(cfg: AlertConfig, record: dict[str, Any], runs: str, names: list[str]) -> dict[str, Any]:
    """The alert columns of the runs row: quarantine_share, grade_psi, previous_run_id, alerts, status."""
    rows_in = record["rows_in"]
    share = record["quarantined"] / rows_in if rows_in else 0.0
    reasons = []
    try:
        value, prev = night_psi(record, runs, names)
    except Exception as e:  # noqa: BLE001 - the run is committed: a failed check must not hide it
        value, prev = None, None
        if cfg.max_psi is not None:
            reasons.append(f"label PSI against the previous night could not be computed ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
    if cfg.max_quarantine_share is not None and share > cfg.max_quarantine_share:
        reasons.append(f"quarantined {share:.1%} of {rows_in} rows > max_quarantine_share {cfg.max_quarantine_share:g}")
    if cfg.max_psi is not None and value is not None and value > cfg.max_psi:
        reasons.append(f"label PSI {value:.3f} against {prev['run_date']} (run {prev['run_id']}) > max_psi "
                       f"{cfg.max_psi:g}")
    return {"quarantine_share": round(share, 6), "grade_psi": None if value is None else round(value, 6),
            "previous_run_id": prev["run_id"] if prev is not None else None, "alerts": "; ".join(reasons),
            "status": "alerted" if reasons else "succeeded"}


def alert_line(record: dict[str, Any]) -> str | None:
    """The one line `taosr1 nightly` prints when the run alerted (None when it did not)."""
    if not record.get("alerts"):
        return None
    return (f"ALERT run {record['run_id']} ({record['run_date']}): {record['alerts']}; the run is committed "
            f"(grades version {record['grades_version']})")
