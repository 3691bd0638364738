"""Settings of evaluation, comparison and drift (conf/eval.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from taosr1.core.config import ConfigError
from taosr1.core.cumpt import MIN_SUPPORT


@dataclass
class DriftConfig:
    """When a night's grades count as drifted from the previous night's.

    Parameters:
        psi_threshold: population stability index of the grade or the tier distribution above
            which the run is flagged.
        changed_share_threshold: share of the pairs graded on both nights whose grade changed.
        score_psi_threshold: PSI of the score (expected grade), binned by the previous night's deciles.
        score_bins: quantile bins for the score PSI.
        epsilon: floor on a share inside the PSI's logarithm.
    """

    psi_threshold: float = 0.2
    changed_share_threshold: float = 0.1
    score_psi_threshold: float = 0.2
    score_bins: int = 10
    epsilon: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("psi_threshold", "changed_share_threshold", "score_psi_threshold", "epsilon"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"drift.{name} must be > 0, got {getattr(self, name)}")
        if self.changed_share_threshold > 1:
            raise ConfigError(f"drift.changed_share_threshold is a share in (0, 1], got {self.changed_share_threshold}")
        if self.score_bins < 2:
            raise ConfigError(f"drift.score_bins must be >= 2, got {self.score_bins}")


@dataclass
class EvalConfig:
    """Parameters:
        keys: key columns that join predictions to gold labels, two prediction sets, two runs.
        bootstrap: resamples for percentile bootstrap intervals (0 turns them off).
        ci_level: coverage of the intervals, in (0, 1).
        seed: bootstrap seed.
        bootstrap_unit: what a resample draws: whole clusters of this column (default `query_id`:
            the pairs of one query are not independent, so resampling them one by one gives
            intervals that are too narrow), or `pair`. Data without the column resamples pairs and
            the report says so.
        calibration_bins: equal-width bins of the reliability diagram and ECE.
        min_support: the CumPT curve's macro-F1 (and so the best beta) averages over the grades with
            at least this many gold pairs: one lucky hit on a grade seen twice is not signal.
        max_disagreements: rows of disagreement `compare` shows in its report.
        drift: see DriftConfig.
    """

    keys: list[str] = field(default_factory=lambda: ["query_id", "product_id"])
    bootstrap: int = 1000
    ci_level: float = 0.95
    seed: int = 0
    bootstrap_unit: str = "query_id"
    calibration_bins: int = 10
    min_support: int = MIN_SUPPORT
    max_disagreements: int = 500
    drift: DriftConfig = field(default_factory=DriftConfig)

    def __post_init__(self) -> None:
        if not self.keys or not all(isinstance(k, str) and k for k in self.keys):
            raise ConfigError(f"keys must be a non-empty list of column names, got {self.keys!r}")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be >= 0 resamples, got {self.bootstrap}")
        if not isinstance(self.bootstrap_unit, str) or not self.bootstrap_unit:
            raise ConfigError(f"bootstrap_unit must be a column name or `pair`, got {self.bootstrap_unit!r}")
        if not 0 < self.ci_level < 1:
            raise ConfigError(f"ci_level must be in (0, 1), got {self.ci_level}")
        if self.min_support < 0:
            raise ConfigError(f"min_support must be >= 0 gold pairs, got {self.min_support}")
        if self.calibration_bins < 2:
            raise ConfigError(f"calibration_bins must be >= 2, got {self.calibration_bins}")
        if self.max_disagreements < 0:
            raise ConfigError(f"max_disagreements must be >= 0, got {self.max_disagreements}")


def load_eval_config(path=None, overrides=None) -> EvalConfig:
    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir

    return cfgmod.load(EvalConfig, path or conf_dir() / "eval.yaml", overrides or {})
