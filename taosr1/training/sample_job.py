"""pass@N sampling as a Spark job (`spark-submit jobs/sample_responses.py`).

The same config (SampleConfig, conf/train/sample.yaml) and the same `sample_batch` as
`taosr1 sample`, run on the executors with the nightly job's worker machinery
(taosr1/spark/dispatch.py: one engine per Python worker, the task's GPU pinned, torch
threads from the task's cores). It writes what `taosr1 sample` writes (samples.parquet,
difficulty.parquet, taosr1_stage.json) plus quarantine.parquet, so `train dpo`,
`train grpo` and the pipeline take its output unchanged.

Plan, as the labeling job's: read cot.parquet -> hash-partition by pair_id, mark repeated
pair_ids -> prepare (mapInArrow: gold parsed, prompt tokenized; a reason for a row that
cannot be sampled) -> the rest sorted by prompt length in each partition -> sample
(mapInArrow: `sample_batch` on chunks of `batch_rows`; each partition staged as ONE
Parquet file, written under a temp name and renamed, so a retried task replaces it) ->
the driver checks that every prompt has N samples or a quarantine reason, merges the
staged files into samples.parquet, computes the pass rates and writes the marker last.

Determinism: both engines draw a prompt's samples from a seed made of `seed` and the
prompt's token ids, so a prompt gets the same samples whatever the partitioning, chunk or
batch it lands in, and the same as `taosr1 sample` gives it. The exception: a batch of
another shape can change a logit in its last float bits (threads, padding), which flips a
sampled token only where two candidates tie to that precision.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from taosr1.core.config import ConfigError

# Hidden columns of the prepared rows (none reaches an output file).
POS, DUP, REASON, NTOK = "_taosr1_pos", "_taosr1_dup", "_taosr1_reason", "_taosr1_prompt_tokens"
STAGING = "_staging"  # OUTPUT/_staging/part-<partition>.parquet while the job runs
QUARANTINE_FILE = "quarantine.parquet"
DUPLICATE_REASON = "duplicate_pair_id: this pair_id appeared earlier in the CoT data; the first occurrence is sampled"
# cot.parquet columns the job reads, beside the prompt fields (taosr1.core.prompts.FIELDS)
KEEP = ("pair_id", "query_id", "product_id", "gold")


@dataclass(frozen=True)
class Inputs:
    """What the driver checked before any Spark work."""

    cot_file: Path
    model: str  # resolved model folder
    labels: str  # the scheme's name or YAML path, as the label config gives it
    prompt: Any  # PromptConfig (the serving prompt, format set)
    columns: list[str]  # cot.parquet columns read


def check_inputs(cfg) -> Inputs:
    """Fail before any Spark work on a missing output, CoT folder, column or model, saying what to do."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taosr1.core.prompts import FIELDS
    from taosr1.labeling.models import resolve_model
    from taosr1.training.common import COT_FILE, require_stage, serving_setup

    if not cfg.output_dir:
        raise ConfigError("output_dir is not set; give --output DIR or output_dir in the config")
    serving = serving_setup(cfg.label_config, cfg.labels, cfg.format)
    cot_file = require_stage(cfg.data, "cot", "data") / COT_FILE
    if not cot_file.is_file():
        raise ConfigError(f"data: {cot_file} is missing although {cfg.data} has a complete marker; "
                          "run `taosr1 cot` again")
    schema = pq.read_schema(cot_file)
    wanted = {"pair_id": pa.types.is_integer, "gold": pa.types.is_string, "query": pa.types.is_string,
              "title": pa.types.is_string}
    for name, ok in wanted.items():
        if name not in schema.names or not ok(schema.field(name).type):
            found = schema.field(name).type if name in schema.names else "no such column"
            raise ConfigError(f"data: {cot_file} column {name!r}: expected "
                              f"{'an integer' if name == 'pair_id' else 'text'}, found {found}; "
                              "give the output folder of `taosr1 cot`")
    hint = "set engine.model (--set engine.model=DIR) to the model sampled, the output folder of `taosr1 train sft`"
    if cfg.engine.model and not Path(cfg.engine.model).exists():
        raise ConfigError(f"engine.model: model folder {cfg.engine.model} does not exist; {hint}")
    try:
        model = resolve_model(str(Path(cfg.engine.model).absolute()) if cfg.engine.model else "")
    except ConfigError as e:
        raise ConfigError(f"engine.model: {e} ({hint})") from None
    # a field that is empty in every row is stored with Arrow's null type: nothing to read
    columns = [c for c in (*KEEP, *FIELDS) if c in schema.names and not pa.types.is_null(schema.field(c).type)]
    return Inputs(cot_file=cot_file, model=model, labels=serving.label_config.labels, prompt=serving.prompt,
                  columns=columns)


@dataclass(frozen=True)
class SampleSpec:
    """What a worker needs (pickled into each task)."""

    engine: Any  # EngineConfig, model resolved
    labels: str
    prompt: Any  # PromptConfig
    n: int
    temperature: float
    max_new_tokens: int
    seed: int
    fmt: str
    batch_rows: int
    draw: str = "label"


# ---------------------------------------------------------------- executor side

def prepare_fn(spec: SampleSpec):
    """mapInArrow function: CoT rows (+ POS, DUP) -> same columns + REASON, NTOK.

    A row gets the first reason that applies: no pair_id, repeated pair_id, a gold label
    the scheme does not know, a prompt over max_prompt_tokens (as the labeling job's).
    """
    return functools.partial(_prepare, spec)


def _prepare(spec: SampleSpec, batches: Iterator[Any]) -> Iterator[Any]:
    import pyarrow as pa

    from taosr1.labeling.labeler import prompt_too_long
    from taosr1.spark import dispatch as D
    from taosr1.training.common import field_rows

    builder = D.builder_for_model(spec.engine.model, spec.labels, spec.prompt)
    limit = spec.prompt.max_prompt_tokens
    for batch in batches:
        df = batch.to_pandas()
        built = builder.build(field_rows(df)).ids if len(df) else []
        reasons, ntok = [], []
        for pid, dup, gold, ids in zip(df["pair_id"], df[DUP], df["gold"], built):
            if pid is None or pid != pid:
                reason = "missing_pair_id: the row has no pair_id"
            elif dup:
                reason = DUPLICATE_REASON
            elif builder.scheme.parse(gold) is None:
                reason = f"bad_gold: {gold!r} is not a label of scheme {builder.scheme.name!r}"
            else:
                reason = prompt_too_long(len(ids), limit)
            reasons.append(reason)
            ntok.append(len(ids))
        yield pa.RecordBatch.from_arrays([*batch.columns, pa.array(reasons, pa.string()), pa.array(ntok, pa.int32())],
                                         names=[*batch.schema.names, REASON, NTOK])


def sample_fn(spec: SampleSpec, folder: str, stats=None):
    """mapInArrow function: a partition's prompts (longest first) -> its samples, staged as one
    Parquet file `folder/part-<partition>.parquet`; yields (partition, prompts, rows)."""
    return functools.partial(_sample, spec, folder, stats)


def _sample(spec: SampleSpec, folder: str, stats, batches: Iterator[Any]) -> Iterator[Any]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark import TaskContext

    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder
    from taosr1.spark import dispatch as D
    from taosr1.training.sampling import sample_batch

    ctx = TaskContext.get()
    part, attempt = ctx.partitionId(), ctx.attemptNumber()
    schema = samples_schema()
    gpu, cpus = D.start_task()
    loads_before = D.engine_loads()[0]
    mine = {"prompts": 0, "rows": 0, "sample_seconds": 0.0, "tasks": 1}
    setup: list = []  # (engine, builder), on the first chunk: an empty partition loads nothing

    def run(chunk: pd.DataFrame) -> pa.Table:
        if not setup:
            engine = D.engine_for(spec.engine, cpus)
            setup.extend([engine, PromptBuilder(engine.tokenizer, load_scheme(spec.labels), spec.prompt)])
        start = time.perf_counter()
        out = sample_batch(chunk, setup[0], setup[1], n=spec.n, temperature=spec.temperature,
                           max_new_tokens=spec.max_new_tokens, seed=spec.seed, fmt=spec.fmt, draw=spec.draw)
        mine["sample_seconds"] += time.perf_counter() - start
        mine["prompts"] += len(chunk)
        mine["rows"] += len(out)
        return pa.Table.from_pandas(out, schema=schema, preserve_index=False)

    name = f"part-{part:05d}.parquet"
    tmp = Path(folder) / f".{name}.{attempt}.tmp"
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            pending: list[pd.DataFrame] = []
            size = 0
            for batch in batches:
                pending.append(batch.to_pandas())
                size += batch.num_rows
                while size >= spec.batch_rows:  # chunks of batch_rows prompts, in the partition's order
                    rows = pd.concat(pending, ignore_index=True)
                    writer.write_table(run(rows.iloc[: spec.batch_rows]))
                    pending, size = [rows.iloc[spec.batch_rows:]], len(rows) - spec.batch_rows
            if size:
                writer.write_table(run(pd.concat(pending, ignore_index=True)))
        os.replace(tmp, Path(folder) / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if stats is not None:
        loads, last_load = D.engine_loads()
        loaded = loads - loads_before
        stats.add({D.worker_id(): {**mine, "loads": loaded, "load_seconds": last_load if loaded else 0.0,
                                    "gpu": gpu or "", "threads": cpus}})
    result = pa.schema([("partition", pa.int32()), ("prompts", pa.int64()), ("rows", pa.int64())])
    yield pa.RecordBatch.from_pylist([{"partition": part, "prompts": mine["prompts"], "rows": mine["rows"]}],
                                     schema=result)


def samples_schema():
    """The Arrow schema of SAMPLE_COLUMNS with pandas' metadata, so samples.parquet reads back
    with the dtypes of `taosr1 sample`'s file."""
    import pyarrow as pa

    from taosr1.training.sampling import empty_samples

    return pa.Schema.from_pandas(empty_samples(), preserve_index=False)


# ---------------------------------------------------------------- driver

def run_job(spark, cfg, *, partitions: int = 0, values_hash: str = "", log=None,
            inputs: Inputs | None = None) -> dict[str, Any]:
    """Sample every prompt of cfg.data on the executors; write cfg.output_dir; return the stage summary.
    `inputs`: check_inputs(cfg) when the caller ran it already (before starting Spark)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

    from taosr1.core.names import STAGE_FILE
    from taosr1.spark import dispatch as D

    log = log or (lambda msg: print(msg, file=sys.stderr))
    inputs = inputs or check_inputs(cfg)
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / STAGE_FILE).unlink(missing_ok=True)  # a run that dies leaves no complete marker over its files
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    spec = SampleSpec(engine=dataclasses.replace(cfg.engine, model=inputs.model), labels=inputs.labels,
                      prompt=inputs.prompt, n=cfg.n, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                      seed=cfg.seed, fmt=cfg.format, batch_rows=cfg.batch_rows, draw=cfg.draw)

    # read; the first max_examples rows in file order, as `taosr1 sample`
    df = (spark.read.parquet(str(inputs.cot_file)).select(*[F.col(c) for c in inputs.columns])
          .withColumn(POS, F.monotonically_increasing_id()))
    if cfg.max_examples:
        df = df.orderBy(POS).limit(cfg.max_examples)
    partitions = partitions or spark.sparkContext.defaultParallelism
    df = df.repartition(partitions, "pair_id")
    df = df.withColumn(DUP, F.row_number().over(Window.partitionBy("pair_id").orderBy(POS)) > 1)
    prepared_schema = StructType([*df.schema.fields, StructField(REASON, StringType()),
                                  StructField(NTOK, IntegerType())])
    prepared = df.mapInArrow(prepare_fn(spec), prepared_schema).persist()
    stats = spark.sparkContext.accumulator({}, D.WorkerStats())
    try:
        prompts_in = prepared.count()
        quarantine = (prepared.filter(F.col(REASON).isNotNull()).orderBy(POS)
                      .select(*inputs.columns, F.col(REASON).alias("reason")).toPandas())
        log(f"sample job: {prompts_in} prompts read, {len(quarantine)} quarantined; sampling n={cfg.n} on "
            f"{partitions} partition(s)")
        to_sample = prepared.filter(F.col(REASON).isNull()).sortWithinPartitions(F.desc(NTOK), "pair_id")
        result = StructType([StructField("partition", IntegerType()), StructField("prompts", LongType()),
                             StructField("rows", LongType())])
        parts = to_sample.mapInArrow(sample_fn(spec, str(staging), stats), result).collect()
    finally:
        prepared.unpersist()
    sampled = sum(r["prompts"] for r in parts)
    samples, diff = _write_outputs(out, staging, parts, quarantine, cfg.n, prompts_in, sampled)
    shutil.rmtree(staging, ignore_errors=True)
    summary = _summary(cfg, inputs, samples, diff, prompts_in, len(quarantine), partitions, stats.value, spark,
                       time.perf_counter() - t0)
    _write_stage(out, summary, values_hash)
    return summary


def _write_outputs(out: Path, staging: Path, parts, quarantine, n: int, prompts_in: int, sampled: int):
    """Check the counts, then write samples.parquet (the staged files merged), difficulty.parquet and
    quarantine.parquet. Returns (samples without responses, difficulty) for the summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taosr1.training.common import DIFFICULTY_FILE, SAMPLES_FILE
    from taosr1.training.sampling import empty_samples, pass_rates

    files = [staging / f"part-{r['partition']:05d}.parquet" for r in sorted(parts, key=lambda r: r["partition"])]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise RuntimeError(f"staged samples missing: {missing}; nothing was written")
    columns = ["pair_id", "sample", "gold", "label", "correct"]  # all the summary needs: no responses in memory
    light = pa.concat_tables([pq.read_table(f, columns=columns) for f in files]).to_pandas() if files \
        else empty_samples()[columns]
    per_prompt = light.groupby("pair_id").size()
    problems = []
    if prompts_in != sampled + len(quarantine):
        problems.append(f"{prompts_in} prompts in, {sampled} sampled + {len(quarantine)} quarantined")
    if len(per_prompt) != sampled:
        problems.append(f"{sampled} prompts sampled but {len(per_prompt)} distinct pair_ids in the samples")
    if (per_prompt != n).any():
        bad = per_prompt[per_prompt != n]
        problems.append(f"{len(bad)} prompt(s) without exactly {n} samples, e.g. pair_id {bad.index[0]}: {bad.iloc[0]}")
    if problems:
        raise RuntimeError("counts do not add up: " + "; ".join(problems) + f"; staged files kept in {staging}")
    tmp = out / f".{SAMPLES_FILE}.tmp"
    with pq.ParquetWriter(tmp, samples_schema()) as writer:
        for f in files:
            writer.write_table(pq.read_table(f, schema=samples_schema()))
    os.replace(tmp, out / SAMPLES_FILE)
    diff = pass_rates(light)
    diff.to_parquet(out / DIFFICULTY_FILE, index=False)
    quarantine.to_parquet(out / QUARANTINE_FILE, index=False)
    return light, diff


def _summary(cfg, inputs: Inputs, samples, diff, prompts_in: int, quarantined: int, partitions: int,
             workers: dict, spark, seconds: float) -> dict[str, Any]:
    """`taosr1 sample`'s summary, plus the job's counts and workers."""
    from taosr1.training.sampling import pass_at_k

    return {"model": inputs.model, "format": cfg.format, "draw": cfg.draw, "prompts": len(diff), "n": cfg.n,
            "temperature": cfg.temperature, "samples": len(samples),
            "unparseable": int(samples["label"].isna().sum()), **pass_at_k(samples),
            "all_right": int((diff["pass_rate"] == 1).sum()), "none_right": int((diff["pass_rate"] == 0).sum()),
            "mixed": int(((diff["pass_rate"] > 0) & (diff["pass_rate"] < 1)).sum()),
            "runner": "spark", "prompts_in": prompts_in, "quarantined": quarantined, "partitions": partitions,
            "workers": sum(1 for w in workers.values() if w.get("prompts", 0) > 0),
            "engine_loads": sum(w.get("loads", 0) for w in workers.values()),
            "gpus": ",".join(sorted({w["gpu"] for w in workers.values() if w.get("gpu")})),
            "sample_seconds": round(sum(w.get("sample_seconds", 0.0) for w in workers.values()), 3),
            "seconds": round(seconds, 3), "spark_master": spark.sparkContext.master,
            "spark_app_id": spark.sparkContext.applicationId}


def _write_stage(out: Path, summary: dict[str, Any], values_hash: str) -> None:
    from taosr1.training.common import write_stage

    write_stage(out, "sample", summary, values_hash)
