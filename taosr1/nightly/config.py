"""The nightly job's settings (conf/nightly.yaml): NightlyConfig and its fault-injection section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from taosr1.core.config import ConfigError, config_hash
from taosr1.labeling.labeler import LabelConfig
from taosr1.nightly.alerts import AlertConfig

WRITERS = ("auto", "delta-rs", "spark")
INPUT_FORMATS = ("auto", "csv", "parquet", "json", "delta", "table")


@dataclass
class FaultConfig:
    """Fault injection for drills and tests (docs/reliability.md); all off by default.

    Parameters:
        fail_batch: k > 0 raises in the k-th Arrow batch of every grading task's first
            attempt; Spark retries the task (needs task retries: `local[N,F]` or a cluster).
        fail_partition: p >= 0 makes grading partition p fail on every attempt once the other
            partitions are staged: the run dies with most work done (resume it).
        die_before_commit: the driver process exits (code 137, as if killed) after staging,
            before the first commit.
        die_between_commits: the driver exits (137) after the quarantine commit, before the grades one.
        die_before_run_record: the driver exits (137) after both commits, before the runs row.
    """

    fail_batch: int = 0
    fail_partition: int = -1
    die_before_commit: bool = False
    die_between_commits: bool = False
    die_before_run_record: bool = False


@dataclass
class NightlyConfig:
    """The nightly job's settings (conf/nightly.yaml).

    Parameters:
        spark_profile: conf/spark/<name>.yaml or a path; used when the job starts its own
            session (spark-submit's own settings win).
        partitions: grading partitions; 0 takes the cluster's default parallelism.
        writer: `delta-rs` (executors write Parquet, the driver commits with delta-rs),
            `spark` (delta-spark jars on the cluster, replaceWhere) or `auto` (spark when the
            session has the Delta extension, else delta-rs).
        input_format: `auto` (from the path; a name that is no path is a catalog table),
            csv, parquet, json, delta or table.
        keep_staging: keep the staged Parquet files after the commit (debugging).
        storage_options: object-store settings in delta-rs's keys (AWS_ENDPOINT_URL, AWS_REGION,
            AWS_ACCESS_KEY_ID, AZURE_STORAGE_ACCOUNT_NAME, ...), over the environment's (taosr1/stores.py).
        reuse: `off`, or `previous`: carry the grade of every pair whose grading fingerprint
            an earlier committed run graded (taosr1/nightly/incremental.py); delta-rs writer only.
        fingerprints: the fingerprint Delta table for reuse ("" = OUTPUT/_fingerprints).
        label: the labeling settings, as in conf/label.yaml (LabelConfig); `label.encoding` is the text
            encoding of a CSV or JSON input (utf-8 unless set).
        fault: fault injection switches (FaultConfig), off by default.
        alert: thresholds that fail a committed run (AlertConfig, taosr1/nightly/alerts.py), off by default.
    """

    spark_profile: str = "local"
    partitions: int = 0
    writer: str = "auto"
    input_format: str = "auto"
    keep_staging: bool = False
    storage_options: dict[str, str] = field(default_factory=dict)
    reuse: str = "off"
    fingerprints: str = ""
    label: LabelConfig = field(default_factory=LabelConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    alert: AlertConfig = field(default_factory=AlertConfig)

    def __post_init__(self) -> None:
        if self.partitions < 0:
            raise ConfigError(f"partitions must be >= 0 (0: the cluster's parallelism), got {self.partitions}")
        if self.writer not in WRITERS:
            raise ConfigError(f"writer must be one of {WRITERS}, got {self.writer!r}")
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}")
        from taosr1.nightly.incremental import MODES

        if self.reuse is False:  # YAML 1.1 reads a bare `off` as false
            self.reuse = "off"
        if self.reuse not in MODES:
            raise ConfigError(f"reuse must be one of {MODES}, got {self.reuse!r}")


def resume_hash(cfg: NightlyConfig) -> str:
    """The config hash a resumed run must match: fault switches, alerts, keep_staging and storage options left out."""
    return config_hash(dataclasses.replace(cfg, fault=FaultConfig(), alert=AlertConfig(), keep_staging=False,
                                           storage_options={}))
