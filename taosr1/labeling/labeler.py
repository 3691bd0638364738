"""The labeling path for one table: validate -> prompts -> engine.score -> CumPT.

Used as is by `taosr1 label`, and batch by batch by the Spark job's executors.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from taosr1.core.config import ConfigError
from taosr1.core.cumpt import check_beta, grade_rows
from taosr1.core.labels import LabelScheme, load_scheme
from taosr1.core.prompts import BuiltPrompts, PromptBuilder, PromptConfig
from taosr1.core.validate import ColumnConfig, duplicate_mask, validate_rows
from taosr1.labeling.calibration import resolve_beta
from taosr1.labeling.engines.base import Engine, EngineConfig, EngineStats

DUPLICATE_REASON = "duplicate_key: this key appeared earlier in the input; the first occurrence is graded"


@dataclass
class LabelConfig:
    """Everything `taosr1 label` and the nightly job need to grade a table (conf/label.yaml).

    Parameters:
        labels: label scheme name under conf/labels, or a YAML path.
        beta: CumPT beta in (0, 1]; None takes the model's calibrated beta, else 0.5.
        chunk_rows: rows scored per call to the engine (progress and memory granularity).
        encoding: the text encoding of a CSV or JSON lines input (a Python codec name: utf-8,
            latin-1, cp1252, utf-16, ...).
        columns, prompt, engine: sections, see ColumnConfig, PromptConfig, EngineConfig.
    """

    labels: str = "taosr1"
    beta: float | None = None
    chunk_rows: int = 2048
    encoding: str = "utf-8"
    columns: ColumnConfig = field(default_factory=ColumnConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if self.beta is not None:
            check_beta(self.beta)
        if self.chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be >= 1, got {self.chunk_rows}")
        try:
            codecs.lookup(self.encoding)
        except (LookupError, TypeError):
            raise ConfigError(f"encoding {self.encoding!r} is not a text encoding Python knows "
                              "(e.g. utf-8, latin-1, cp1252, utf-16)") from None


@dataclass
class LabelResult:
    graded: pd.DataFrame
    quarantine: pd.DataFrame
    rows_in: int
    seconds: float
    padding_efficiency: float

    @property
    def items_per_s(self) -> float:
        return len(self.graded) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "graded": len(self.graded),
            "quarantined": len(self.quarantine),
            "seconds": round(self.seconds, 3),
            "items_per_s": round(self.items_per_s, 2),
            "padding_efficiency": round(self.padding_efficiency, 4),
        }


class Labeler:
    """Grades validated rows with one engine, label scheme, prompt config and beta."""

    def __init__(self, engine: Engine, scheme: LabelScheme, prompt_cfg: PromptConfig, beta: float):
        self.engine = engine
        self.scheme = scheme
        self.prompt_cfg = prompt_cfg
        self.beta = check_beta(beta)
        self.builder = PromptBuilder(engine.tokenizer, scheme, prompt_cfg)
        self.label_ids = scheme.token_ids(engine.tokenizer)
        self.model_name = Path(engine.model_path).name

    @classmethod
    def from_config(cls, cfg: LabelConfig) -> "Labeler":
        from taosr1.labeling.engines import make_engine

        scheme = load_scheme(cfg.labels)  # fail on a bad scheme before loading a model
        engine = make_engine(cfg.engine)
        return cls(engine, scheme, cfg.prompt, resolve_beta(cfg.beta, engine.model_path, scheme))

    @property
    def output_columns(self) -> list[str]:
        """The columns grading adds to a row, in output order."""
        return ["grade", "label", "tier", "score", *self.scheme.prob_columns, "prompt_tokens", "truncated",
                "model", "label_scheme", "prompt_version", "beta"]

    def grade_fields(
        self, fields: pd.DataFrame, progress: Callable[[int], None] | None = None
    ) -> tuple[pd.DataFrame, list[str | None]]:
        """Grade clean field rows; returns grade columns (same index) and a reason per row
        for the ones that could not be graded (prompt longer than the budget)."""
        built = self.builder.build(fields.to_dict("records"))
        return self.grade_built(built, fields.index, progress=progress)

    def grade_built(
        self, built: BuiltPrompts, index: pd.Index, progress: Callable[[int], None] | None = None
    ) -> tuple[pd.DataFrame, list[str | None]]:
        """Grade prompts built by `self.builder` (the Spark job builds them in an earlier stage,
        to sort rows by prompt length); `index` labels the rows. Same result as grade_fields."""
        reasons = [prompt_too_long(len(ids), self.prompt_cfg.max_prompt_tokens) for ids in built.ids]
        ok = [i for i, r in enumerate(reasons) if r is None]
        probs = self.engine.score([built.ids[i] for i in ok], self.label_ids, progress=progress)
        cols: dict[str, Any] = {}
        for j, name in enumerate(self.scheme.prob_columns):
            cols[name] = probs[:, j]
        cols.update(grade_rows(probs, self.scheme, self.beta) if len(ok) else {
            "grade": np.array([], dtype=np.int64), "label": [], "tier": [], "score": np.array([], dtype=float)})
        out = pd.DataFrame(cols, index=index[ok])
        out["prompt_tokens"] = np.array([len(built.ids[i]) for i in ok], dtype=np.int64)
        out["truncated"] = np.array([built.truncated[i] for i in ok], dtype=bool)
        out["model"] = self.model_name
        out["label_scheme"] = self.scheme.name
        out["prompt_version"] = self.prompt_cfg.version
        out["beta"] = self.beta
        return out[self.output_columns], reasons


def prompt_too_long(n_tokens: int, limit: int) -> str | None:
    """The quarantine reason for a prompt over `max_prompt_tokens`, else None."""
    if n_tokens <= limit:
        return None
    return f"prompt_too_long: {n_tokens} tokens after truncation > max_prompt_tokens {limit}"


def quarantine_frame(df: pd.DataFrame, mask: pd.Series, reasons: pd.Series) -> pd.DataFrame:
    """Quarantined rows as text (their values may be of any type), with the reason."""
    q = df[mask].copy()
    for c in q.columns:
        q[c] = q[c].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    q["reason"] = reasons[mask].astype(str)
    return q.reset_index(drop=True)


def label_frame(df: pd.DataFrame, labeler: Labeler, cols: ColumnConfig, progress: Callable[[int], None] | None = None,
                chunk_rows: int = 2048) -> LabelResult:
    """Grade a whole table: each input row ends in `graded` or in `quarantine` with a reason.

    `graded` keeps every input column and adds the grade columns; `quarantine` keeps every
    input column (as text) and adds `reason`.
    """
    start = time.perf_counter()
    df = df.reset_index(drop=True)
    fields, reasons_list = validate_rows(df, cols)
    reasons = pd.Series(reasons_list, index=df.index, dtype=object)
    dup = duplicate_mask(df, cols.keys) & reasons.isna()
    reasons[dup] = DUPLICATE_REASON
    ok_index = reasons.index[reasons.isna()]
    # Chunks cut in (character) length order keep each chunk's length-sorted batches tight.
    approx_len = fields.loc[ok_index].fillna("").apply(lambda r: sum(len(v) for v in r), axis=1)
    ok_index = approx_len.sort_values(ascending=False, kind="stable").index if len(ok_index) else ok_index
    stats0 = (labeler.engine.stats.padding_tokens, labeler.engine.stats.computed_tokens)
    parts = []
    for s in range(0, len(ok_index), chunk_rows):
        idx = ok_index[s : s + chunk_rows]
        graded, too_long = labeler.grade_fields(fields.loc[idx], progress=progress)
        for i, r in zip(idx, too_long):
            if r is not None:
                reasons[i] = r
        parts.append(graded)
    graded_mask = reasons.isna()
    out = df[graded_mask].copy()
    if parts:
        out = out.join(pd.concat(parts))
    else:
        for c in labeler.output_columns:
            out[c] = pd.Series(dtype=object)
    quarantine = quarantine_frame(df, ~graded_mask, reasons)
    padding = labeler.engine.stats.padding_tokens - stats0[0]
    computed = labeler.engine.stats.computed_tokens - stats0[1]
    return LabelResult(
        graded=out.reset_index(drop=True),
        quarantine=quarantine,
        rows_in=len(df),
        seconds=time.perf_counter() - start,
        padding_efficiency=EngineStats(padding_tokens=padding, computed_tokens=computed).padding_efficiency,
    )
