"""Settings of `taosr1 sbs make` and `taosr1 sbs report` (conf/sbs.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from taosr1.core.config import ConfigError


@dataclass
class SbsReportConfig:
    """How answers become figures.

    Parameters:
        min_gold_accuracy: raters whose accuracy on gold questions is below this are excluded
            (their answers count nowhere) and listed.
        min_gold_answers: a rater needs at least this many gold answers to be judged; with fewer,
            the rater is kept and flagged.
        query_good_share: a query counts as good for a system when at least this share of its rated
            items are good for it (1.0: all of them).
        bootstrap: resamples for percentile bootstrap intervals (0 turns them off).
        ci_level: coverage of the intervals, in (0, 1).
        seed: bootstrap seed.
        max_rows: rows of a long table (disputes, items) shown in the HTML/Markdown report; all go to CSV.
    """

    min_gold_accuracy: float = 0.7
    min_gold_answers: int = 3
    query_good_share: float = 1.0
    bootstrap: int = 1000
    ci_level: float = 0.95
    seed: int = 0
    max_rows: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.min_gold_accuracy <= 1:
            raise ConfigError(f"report.min_gold_accuracy is a share in [0, 1], got {self.min_gold_accuracy}")
        if self.min_gold_answers < 1:
            raise ConfigError(f"report.min_gold_answers must be >= 1, got {self.min_gold_answers}")
        if not 0 < self.query_good_share <= 1:
            raise ConfigError(f"report.query_good_share is a share in (0, 1], got {self.query_good_share}")
        if self.bootstrap < 0:
            raise ConfigError(f"report.bootstrap must be >= 0 resamples, got {self.bootstrap}")
        if not 0 < self.ci_level < 1:
            raise ConfigError(f"report.ci_level must be in (0, 1), got {self.ci_level}")
        if self.max_rows < 1:
            raise ConfigError(f"report.max_rows must be >= 1, got {self.max_rows}")


@dataclass
class SbsConfig:
    """Parameters:
        keys: key columns that identify a pair in both prediction sets and the gold table.
        size: regular (non-gold) items to sample; the whole population when it has fewer pairs.
        seed: seed of the sample, the blinding, the assignment and the gold placement.
        segment: column of query type to stratify and break the report down by (null: none).
        disagree_share: share of each segment's sample drawn from pairs where the two systems'
            labels differ; null samples each stratum in proportion to its size. Any other value
            oversamples (or undersamples) disagreements, and the report reweights by stratum.
        raters: names of the raters; a rater signs in with one of them.
        k: raters per item.
        gold_rate: share of each rater's queue that is gold questions (0 turns them off).
        gold_same_share: share of gold questions whose two sides are both right (answer Same);
            the rest have exactly one side right.
        query_column: column holding the query text.
        query_key: column that identifies a query for Query Goodrate (falls back to query_column).
        item_columns: item columns shown to raters when present (the first is the title).
        reasoning_column: column of the systems' reasoning, shown when both sets have it.
        title: heading of the rating page.
        report: see SbsReportConfig.
    """

    keys: list[str] = field(default_factory=lambda: ["query_id", "product_id"])
    size: int = 200
    seed: int = 0
    segment: str | None = None
    disagree_share: float | None = None
    raters: list[str] = field(default_factory=list)
    k: int = 3
    gold_rate: float = 0.1
    gold_same_share: float = 0.2
    query_column: str = "query"
    query_key: str = "query_id"
    item_columns: list[str] = field(default_factory=lambda: [
        "product_title", "product_brand", "product_category", "product_attributes", "product_description"])
    reasoning_column: str = "reasoning"
    title: str = "Which grade is more correct?"
    report: SbsReportConfig = field(default_factory=SbsReportConfig)

    def __post_init__(self) -> None:
        if not self.keys or not all(isinstance(k, str) and k for k in self.keys):
            raise ConfigError(f"keys must be a non-empty list of column names, got {self.keys!r}")
        if self.size < 1:
            raise ConfigError(f"size must be >= 1 item, got {self.size}")
        if self.disagree_share is not None and not 0 <= self.disagree_share <= 1:
            raise ConfigError(f"disagree_share is a share in [0, 1] or null, got {self.disagree_share}")
        if isinstance(self.raters, str):
            self.raters = [r for r in self.raters.split(",")]
        self.raters = [str(r).strip() for r in self.raters if str(r).strip()]
        low = [r.lower() for r in self.raters]
        dup = sorted({r for r in low if low.count(r) > 1})
        if dup:
            raise ConfigError(f"raters must be distinct (names compare without case), repeated: {dup}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1 rater per item, got {self.k}")
        if not 0 <= self.gold_rate < 1:
            raise ConfigError(f"gold_rate is a share of each queue in [0, 1), got {self.gold_rate}")
        if not 0 <= self.gold_same_share <= 1:
            raise ConfigError(f"gold_same_share is a share in [0, 1], got {self.gold_same_share}")
        if not self.item_columns:
            raise ConfigError("item_columns must name at least the title column")


def load_sbs_config(path=None, overrides=None) -> SbsConfig:
    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir

    return cfgmod.load(SbsConfig, path or conf_dir() / "sbs.yaml", overrides or {})
