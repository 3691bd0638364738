"""`taosr1 pipeline`: the training stages in order from one config, resumable stage by stage.

split (by query) -> cot -> sft -> sample -> dpo -> grpo -> calibrate -> eval -> export.
Each stage writes into OUTPUT/<stage>; the pipeline wires each stage's inputs to the earlier
stages' folders. The split holds out test queries (graded after each stage) and, from the
training queries, a calibration slice no stage trains on: each trained model's CumPT beta is
fitted there and written beside it, never on the test queries (or, with `calib_folds`, on
out-of-fold scores over the whole training split: taosr1/training/crossfit.py). `export` factors the last
model into a LoRA adapter over the start model (taosr1/training/export.py), and `ship_to`
copies it where the embedded default model is read from.
A stage whose folder holds a complete marker written with the same settings is skipped;
a stage that runs again makes every later stage run again. The summary
(OUTPUT/pipeline_summary.json) holds each stage's data counts and metrics.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from taosr1.core.config import ConfigError
from taosr1.core.cumpt import MIN_SUPPORT
from taosr1.training.calibrate import calibrate_model, eval_forward, scheme_of
from taosr1.training.launch import TRAINED, launch_stage

STAGES = ("cot", "sft", "sample", "dpo", "grpo")
# Keys the pipeline sets in each stage section (a section may not set them itself).
WIRED = {
    "cot": {"input", "gold", "output_dir", "label_config", "labels", "limit"},
    "sft": {"model", "data", "output_dir", "label_config", "labels", "format"},
    "sample": {"data", "output_dir", "label_config", "labels", "format", "training_forward"},
    "dpo": {"model", "data", "samples", "output_dir", "label_config", "labels", "format"},
    "grpo": {"model", "data", "samples", "output_dir", "label_config", "labels", "format"},
}


@dataclass
class PipelineConfig:
    """One config for every stage (conf/train/smoke.yaml).

    Parameters:
        input: labelled pairs ("" = the bundled ESCI sample); gold: their gold label column.
        test_size: fraction of queries held out for evaluation (split by query); 0 = no split, no eval.
        test_folds, test_fold: instead of test_size, K-fold by query: the test side is fold `test_fold`
            of `test_folds` (0 = off). Runs of folds 0..K-1 test every pair once, so their graded test
            files pool into one held-out set of every pair (bench/quality.py --folds).
        train_rows, test_rows: use at most this many training / test pairs (0 = all).
        calib_size: fraction of the training queries held out of training to calibrate beta (0 = none:
            each model keeps beta 0.5).
        calib_folds: instead of a slice, cross-fit beta over this many query folds of the training
            split (taosr1/training/crossfit.py): every training pair is scored once by a model that
            did not train on it, and the models train on every training query (0 = off; needs calib_size 0).
        calib_min_support: beta maximises macro-F1 over the grades with at least this many calibration
            pairs (taosr1.core.cumpt.MIN_SUPPORT): a grade seen once or twice there is noise, not signal.
        seed: split seed.
        model: the model SFT starts from ("base" = the untrained embedded base); also the zero-shot baseline.
        label_config, labels, format: the serving setup every stage trains for (see TrainStage).
        stages: the stages to run, in pipeline order.
        evaluate: grade the test split with the start model and each trained model.
        eval_forward: grade (and calibrate) with the training forward (taosr1/training/forward_engine.py:
            the same rows, prompts and CumPT as the served engine, the base's lower blocks run once
            per prompt for every model, in the stages' bf16 autocast) instead of the transformers engine.
        evaluate_base: grade the start model too (zero-shot); the trained models are always graded.
        eval_threads: torch CPU threads for evaluation (0 = torch's default).
        eval_max_new_tokens: response budget when a think-first model is graded by generation.
        cot, sft, sample, dpo, grpo: each stage's own settings (keys of CoTConfig, SFTStageConfig,
            SampleConfig, DPOStageConfig, GRPOStageConfig), less the ones the pipeline wires (WIRED).
        export_rank: rank of the exported LoRA adapter (0 = no export).
        export_tolerance: the largest P(label) gap allowed between the trained model and base + adapter
            on the checked prompts; a wider gap (a rank too low for the stages' summed updates) stops the
            export before anything ships.
        ship_to: copy the exported adapter and its card into this folder ("" = no copy;
            conf/train/default_model.yaml ships to taosr1/data/default_model).
    """

    input: str = ""
    gold: str = "esci_label"
    test_size: float = 0.3
    test_folds: int = 0
    test_fold: int = 0
    calib_size: float = 0.15
    calib_folds: int = 0
    calib_min_support: int = MIN_SUPPORT
    train_rows: int = 0
    test_rows: int = 0
    seed: int = 0
    model: str = "base"
    label_config: str = ""
    labels: str = ""
    format: str = "post_cot"
    stages: list = field(default_factory=lambda: list(STAGES))
    evaluate: bool = True
    eval_forward: bool = False
    evaluate_base: bool = True
    eval_threads: int = 0
    eval_max_new_tokens: int = 160
    cot: dict = field(default_factory=dict)
    sft: dict = field(default_factory=dict)
    sample: dict = field(default_factory=dict)
    dpo: dict = field(default_factory=dict)
    grpo: dict = field(default_factory=dict)
    export_rank: int = 0
    export_tolerance: float = 0.02
    ship_to: str = ""

    def __post_init__(self) -> None:
        from taosr1.training.common import check_format

        check_format(self.format)
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ConfigError(f"stages: unknown stage(s) {bad}; the stages are {list(STAGES)}")
        if list(self.stages) != [s for s in STAGES if s in self.stages]:
            raise ConfigError(f"stages must be in pipeline order {list(STAGES)}, got {list(self.stages)}")
        if not 0 <= self.test_size < 1 or not 0 <= self.calib_size < 1:
            raise ConfigError(f"test_size and calib_size must be in [0, 1), got {self.test_size}, {self.calib_size}")
        if self.test_folds and not (self.test_folds >= 2 and 0 <= self.test_fold < self.test_folds):
            raise ConfigError(f"test_folds must be 0 or >= 2 and test_fold in [0, test_folds), got test_folds "
                              f"{self.test_folds}, test_fold {self.test_fold}")
        if self.calib_folds and (self.calib_folds < 2 or self.calib_size):
            raise ConfigError(f"calib_folds must be 0 or >= 2, with calib_size 0 (one way to calibrate), got "
                              f"calib_folds {self.calib_folds}, calib_size {self.calib_size}")
        if self.export_rank < 0 or not 0 <= self.export_tolerance <= 1:
            raise ConfigError(f"export_rank must be >= 0 and export_tolerance in [0, 1], got {self.export_rank}, "
                              f"{self.export_tolerance}")
        if self.ship_to and not self.export_rank:
            raise ConfigError("ship_to needs an adapter: set export_rank above 0")
        for name in STAGES:
            section = getattr(self, name)
            if not isinstance(section, dict):
                raise ConfigError(f"{name} must be a mapping of that stage's keys, got {section!r}")
            clash = sorted(set(section) & WIRED[name])
            if name == "sample" and "model" in (section.get("engine") or {}):
                clash.append("engine.model")
            if clash:
                raise ConfigError(f"{name}: key(s) {clash} are set by the pipeline (from input, gold, model, "
                                  "label_config, labels, format, train_rows and the stage folders); remove them")


def values_hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def hashed(value: Any, out: Path, inputs: dict[str, str]) -> Any:
    """A stage value as its hash sees it: an input by its content (`inputs`: path -> content
    fingerprint), a path in the output folder relative to it. So a moved checkout, a moved output
    folder or a fresh local copy of a remote input resumes instead of training everything again."""
    if isinstance(value, dict):
        return {k: hashed(v, out, inputs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hashed(v, out, inputs) for v in value]
    if isinstance(value, str):
        if value in inputs:
            return inputs[value]
        root = str(out)
        if value == root or value.startswith(root + "/"):
            return "<output>" + value[len(root):]
    return value


def _stage_values(cfg: PipelineConfig, name: str, out: Path, train_input: str) -> dict[str, Any]:
    """A stage's config values: its section plus the wiring to the earlier stages' folders."""
    from taosr1.training.common import read_stage

    d = dict(getattr(cfg, name))
    common = {"label_config": cfg.label_config, "labels": cfg.labels}
    if name == "cot":
        d.update(common, input=train_input, gold=cfg.gold, limit=cfg.train_rows)
        d.setdefault("teacher", {})
    elif name == "sft":
        d.update(common, format=cfg.format, model=cfg.model, data=str(out / "cot"))
    elif name == "sample":
        d.update(common, format=cfg.format, data=str(out / "cot"))
        if cfg.eval_forward:
            d["training_forward"] = eval_forward(cfg)[0]
        d["engine"] = {**d.get("engine", {}), "model": str(out / "sft")}
    elif name == "dpo":
        d.update(common, format=cfg.format, model=str(out / "sft"), data=str(out / "cot"), samples=str(out / "sample"))
    elif name == "grpo":
        after_dpo = "dpo" in cfg.stages or read_stage(out / "dpo") is not None
        has_samples = "sample" in cfg.stages or read_stage(out / "sample") is not None
        d.update(common, format=cfg.format, model=str(out / ("dpo" if after_dpo else "sft")), data=str(out / "cot"),
                 samples=str(out / "sample") if has_samples else "")
    d["output_dir"] = str(out / name)
    return d


def stage_config(name: str, values: dict[str, Any], source: str = "pipeline"):
    """Build stage `name`'s config dataclass from values (unknown keys rejected)."""
    from taosr1.core import config as cfgmod

    if name == "cot":
        from taosr1.training.cot import CoTConfig as cls
    elif name == "sample":
        from taosr1.training.sampling import SampleConfig as cls  # type: ignore[no-redef]
    elif name == "sft":
        from taosr1.training.sft import SFTStageConfig as cls  # type: ignore[no-redef]
    elif name == "dpo":
        from taosr1.training.dpo import DPOStageConfig as cls  # type: ignore[no-redef]
    elif name == "grpo":
        from taosr1.training.grpo import GRPOStageConfig as cls  # type: ignore[no-redef]
    else:
        raise ConfigError(f"unknown stage {name!r}")
    return cfgmod.build(cls, values, source=f"{source}: {name}")


def run_stage(name: str, cfg: Any, h: str = "") -> dict[str, Any]:
    if name == "cot":
        from taosr1.training.cot import run_cot as fn
    elif name == "sample":
        from taosr1.training.sampling import run_sampling as fn  # type: ignore[no-redef]
    elif name == "sft":
        from taosr1.training.sft import run_sft as fn  # type: ignore[no-redef]
    elif name == "dpo":
        from taosr1.training.dpo import run_dpo as fn  # type: ignore[no-redef]
    else:
        from taosr1.training.grpo import run_grpo as fn  # type: ignore[no-redef]
    return fn(cfg, h)


def _split(cfg: PipelineConfig, out: Path, log: Callable[[str], None]) -> tuple[str, str | None, dict[str, Any]]:
    """The training input, and the test file (None without a split); OUTPUT/split/calib.parquet
    holds the calibration slice when `calib_size` > 0."""
    from taosr1.core.resources import sample_path
    from taosr1.core.split import held_out, held_out_slice, query_keys
    from taosr1.labeling.fingerprint import content_fingerprint
    from taosr1.storage.bundled import read_pairs
    from taosr1.training.common import read_stage, write_stage

    src = cfg.input or str(sample_path())
    tested = bool(cfg.test_size or cfg.test_folds)
    if not tested and not cfg.calib_size:
        return src, None, {"input": src}
    d = out / "split"
    folds = {"test_folds": cfg.test_folds, "test_fold": cfg.test_fold, "test_size": None} if cfg.test_folds else {}
    h = values_hash({"input": content_fingerprint(src), "test_size": cfg.test_size, "seed": cfg.seed,
                     "test_rows": cfg.test_rows, "label_config": cfg.label_config, "calib_size": cfg.calib_size,
                     **folds})
    marker = read_stage(d)
    if marker is None or marker.get("config_hash") != h:
        from taosr1.training.common import serving_setup

        qcol = serving_setup(cfg.label_config, cfg.labels).label_config.columns.query
        df = read_pairs(src)
        train, test = held_out(df, qcol, cfg.test_size, cfg.test_folds, cfg.test_fold, cfg.seed)
        if cfg.test_rows:
            test = test.head(cfg.test_rows)
        d.mkdir(parents=True, exist_ok=True)
        calib = train.head(0)
        if cfg.calib_size:  # the training split's own queries: never the test queries
            train, calib = held_out_slice(train, qcol, cfg.gold, cfg.calib_size, cfg.seed)
            calib.to_parquet(d / "calib.parquet", index=False)
        train.to_parquet(d / "train.parquet", index=False)
        test.to_parquet(d / "test.parquet", index=False)
        key = lambda f: set(query_keys(f, qcol))  # noqa: E731
        marker = write_stage(d, "split", {"input": src, "train_rows": len(train), "calib_rows": len(calib),
                                          "test_rows": len(test), "train_queries": int(train[qcol].nunique()),
                                          "test_queries": int(test[qcol].nunique()),
                                          "queries_in_both": len(key(train) & key(test)) + len(key(calib) & key(test))
                                          + len(key(train) & key(calib))}, h)
        marker = read_stage(d)
        fold = f" (test: query fold {cfg.test_fold} of {cfg.test_folds})" if cfg.test_folds else ""
        log(f"split: {marker['train_rows']} train / {marker['calib_rows']} calibration / {marker['test_rows']} test rows, "
            f"no query in two{fold}")
    return str(d / "train.parquet"), str(d / "test.parquet") if tested else None, marker or {}


def evaluate_models(cfg: PipelineConfig, out: Path, test_file: str, models: dict[str, str],
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Grade the test split with each model, caching each result in OUTPUT/eval/<name>.json.

    Post-CoT models are graded as served (CumPT at the model's calibrated beta, eval/<name>.parquet)
    and by argmax of the same probabilities (eval/<name>_argmax.parquet).
    """
    import pandas as pd

    from taosr1.training.evaluate import classification_metrics, evaluate_generation, evaluate_scoring

    test = pd.read_parquet(test_file)
    ev = out / "eval"
    ev.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, model in models.items():
        f = ev / f"{name}.json"
        # the start model is graded zero-shot with the post-CoT prompt; trained models in their format
        fmt = cfg.format if name != "zero_shot" else "post_cot"
        key = values_hash({"model": model, "marker": _marker_time(model), "rows": len(test), "fmt": fmt,
                           "max_new_tokens": cfg.eval_max_new_tokens, "calibration": _calibration_record(model),
                           "forward": eval_forward(cfg)})
        if f.is_file() and json.loads(f.read_text()).get("key") == key:
            results.update(json.loads(f.read_text())["metrics"])
            continue
        found = {}
        if fmt == "post_cot":
            m, pred = evaluate_scoring(model, test, gold_col=cfg.gold, label_config=cfg.label_config,
                                       forward=eval_forward(cfg),
                                       labels=cfg.labels, threads=cfg.eval_threads)
            scheme = scheme_of(cfg)
            arg = pred.assign(label=[scheme.labels[i].name for i in pred[scheme.prob_columns].to_numpy().argmax(1)])
            gold = [scheme.parse(v).name for v in arg[cfg.gold]]
            found[f"{name}_argmax"] = ({**classification_metrics(gold, arg["label"].tolist(), scheme), "mode": "argmax"}, arg)
        else:
            m, pred = evaluate_generation(model, test, gold_col=cfg.gold, fmt=fmt, label_config=cfg.label_config,
                                          labels=cfg.labels, threads=cfg.eval_threads,
                                          max_new_tokens=cfg.eval_max_new_tokens)
        found = {name: (m, pred), **found}
        for n, (mm, frame) in found.items():
            frame.to_parquet(ev / f"{n}.parquet", index=False)
            log(f"eval {n}: macro-F1 {mm['macro_f1']:.4f}, accuracy {mm['accuracy']:.4f} on {mm['n']} rows")
        metrics = {n: mm for n, (mm, _) in found.items()}
        f.write_text(json.dumps({"key": key, "model": model, "metrics": metrics}, indent=2, default=str))
        results.update(metrics)
    return results


def _calibration_record(model: str) -> str:
    """The model's calibration file as text: a new beta changes the eval cache key."""
    from taosr1.core.names import CALIBRATION_FILE

    f = Path(model) / CALIBRATION_FILE
    return f.read_text() if f.is_file() else ""


def _marker_time(model: str) -> str:
    from taosr1.training.common import read_stage

    return (read_stage(model) or {}).get("finished", "")


def run_pipeline(cfg: PipelineConfig, output: str | Path, log: Callable[[str], None] = print,
                 source: str = "pipeline", output_name: str = "", processes: int = 1,
                 accelerate_config: str = "") -> dict[str, Any]:
    """Run the configured stages into `output`, skipping the ones already complete; return the summary.

    `output_name`: the output as the user named it, when `output` is a local copy of it (an object store).
    `processes` > 1 runs each training stage (sft, dpo, grpo) on that many processes (taosr1/training/launch.py)."""
    from taosr1.labeling.fingerprint import content_fingerprint
    from taosr1.labeling.models import resolve_model
    from taosr1.training.common import read_stage

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    train_input, test_file, split_info = _split(cfg, out, log)
    inputs = {} if split_info.get("config_hash") else {train_input: content_fingerprint(train_input)}  # no split
    # Build every stage config first: a bad key fails before hours of training.
    plan = []
    for name in cfg.stages:
        values = _stage_values(cfg, name, out, train_input)
        # the split's own hash too: another seed or test_size rewrites split/train.parquet in place,
        # and a stage built from the old file must not be skipped (it may hold test queries now)
        plan.append((name, values, stage_config(name, values, source),
                     values_hash({**hashed(values, out, inputs), "split": split_info.get("config_hash", "")})))
    summary: dict[str, Any] = {"output": output_name or str(out), "split": split_info, "stages": {}}
    rerun = False
    for name, values, scfg, h in plan:
        marker = read_stage(out / name)
        if not rerun and marker is not None and marker.get("config_hash") == h and marker.get("stage") == name:
            log(f"{name}: complete in {out / name}, skipped")
            summary["stages"][name] = {**marker, "skipped": True}
            continue
        why = "settings changed" if marker is not None else "no complete output"
        log(f"{name}: running ({why if not rerun else 'an earlier stage ran again'}) -> {out / name}")
        if processes > 1 and name in TRAINED:
            summary["stages"][name] = launch_stage(name, values, h, str(out / name), processes, accelerate_config, log)
        else:
            summary["stages"][name] = run_stage(name, scfg, h)
        rerun = True
    trained = {s: str(out / s) for s in ("sft", "dpo", "grpo") if read_stage(out / s) is not None}
    calib = out / "split" / "calib.parquet"
    if cfg.calib_folds and trained and cfg.format == "post_cot":
        from taosr1.training.crossfit import crossfit_calibration

        summary["calibration"] = crossfit_calibration(cfg, out, train_input, trained, log, run=run_pipeline)
    elif cfg.calib_size and calib.is_file() and cfg.format == "post_cot":
        summary["calibration"] = {s: calibrate_model(cfg, m, str(calib), log) for s, m in trained.items()}
    if cfg.evaluate and test_file:
        models = {**({"zero_shot": resolve_model(cfg.model)} if cfg.evaluate_base else {}), **trained}
        summary["eval"] = evaluate_models(cfg, out, test_file, models, log)

    def save() -> None:
        (out / "pipeline_summary.json").write_text(json.dumps(summary, indent=2, default=str))

    save()  # before the export, which may refuse to ship: the run's numbers stay
    if cfg.export_rank and trained:
        summary["export"] = export_last(cfg, out, list(trained.values())[-1], summary, log)
        save()
    return summary


def export_last(cfg: PipelineConfig, out: Path, model: str, summary: dict[str, Any],
                log: Callable[[str], None]) -> dict[str, Any]:
    """The last trained model as a LoRA adapter over the start model (OUTPUT/adapter), checked, and shipped."""
    import shutil

    import pandas as pd
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from taosr1.core.prompts import PromptBuilder
    from taosr1.labeling.calibration import read_calibration
    from taosr1.labeling.models import ADAPTER_CARD, ADAPTER_CONFIG, ADAPTER_FILE, load_tokenizer, resolve_model
    from taosr1.training.common import COT_FILE, field_rows, serving_setup
    from taosr1.training.export import agreement, export_adapter, write_card

    base = resolve_model(cfg.model)
    report = export_adapter(model, base, out / "adapter", rank=cfg.export_rank)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                       str(out / "adapter")).merge_and_unload().eval()
    serving = serving_setup(cfg.label_config, cfg.labels)
    tok = load_tokenizer(model)
    cot = pd.read_parquet(out / "cot" / COT_FILE).head(256)
    ids = PromptBuilder(tok, serving.scheme, serving.prompt).build(field_rows(cot)).ids
    label_ids = [tok.convert_tokens_to_ids(lab.token) for lab in serving.scheme.labels]
    report["agreement"] = agree = agreement(model, merged, tok, ids, label_ids)
    if agree["max_abs_prob_diff"] > cfg.export_tolerance:
        raise ConfigError(f"export: the rank-{report['rank']} adapter in {out / 'adapter'} moves P(label) by up to "
                          f"{agree['max_abs_prob_diff']} against {model} (export_tolerance {cfg.export_tolerance}; top "
                          f"label agrees on {agree['top_label_agreement']:.1%} of {agree['rows']} prompts); nothing "
                          f"shipped. Raise export_rank (max relative error per matrix {report['max_relative_error']})")
    scheme = serving.scheme.name
    beta = read_calibration(model, scheme)
    write_card(out / "adapter", report, base=cfg.model, stage=Path(model).name, labels=scheme,
               prompt_version=serving.prompt.version, beta={scheme: beta} if beta is not None else {},
               split=summary.get("split"), eval=summary.get("eval"), calibration=summary.get("calibration"))
    log(f"export: {report['matrices']} matrices at rank {report['rank']}, {report['bytes'] / 1e6:.1f} MB, "
        f"top label agrees on {report['agreement']['top_label_agreement']:.1%} of {report['agreement']['rows']} prompts")
    if cfg.ship_to:
        dest = Path(cfg.ship_to)
        dest.mkdir(parents=True, exist_ok=True)
        for name in (ADAPTER_FILE, ADAPTER_CONFIG, ADAPTER_CARD):  # not peft's README template
            shutil.copyfile(out / "adapter" / name, dest / name)
        log(f"export: shipped to {dest}")
    return report
