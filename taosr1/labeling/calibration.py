"""The calibrated CumPT beta recorded beside a model, per label scheme (`taosr1 calibrate` writes it,
`taosr1 label` and the nightly job read it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from taosr1.core.cumpt import check_beta
from taosr1.core.labels import LabelScheme
from taosr1.core.names import CALIBRATION_FILE

DEFAULT_BETA = 0.5  # the median of the predicted grade distribution, when nothing was calibrated


def read_calibration(model_path: str | Path, scheme: str) -> float | None:
    f = Path(model_path) / CALIBRATION_FILE
    if not f.is_file():
        return None
    return json.loads(f.read_text()).get(scheme, {}).get("beta")


def write_calibration(model_path: str | Path, scheme: str, beta: float, **info: Any) -> Path:
    """Record the calibrated beta beside the model, where `label` and the nightly job read it."""
    f = Path(model_path) / CALIBRATION_FILE
    data = json.loads(f.read_text()) if f.is_file() else {}
    data[scheme] = {"beta": float(check_beta(beta)), **info}
    f.write_text(json.dumps(data, indent=2, sort_keys=True))
    return f


def resolve_beta(beta: float | None, model_path: str, scheme: LabelScheme) -> float:
    if beta is not None:
        return check_beta(beta)
    calibrated = read_calibration(model_path, scheme.name)
    return check_beta(calibrated) if calibrated is not None else DEFAULT_BETA
