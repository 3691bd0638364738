"""Locations (taosr1/storage/location.py): a path resolved once; every command that writes checks its
output before any model work, and a text input not in its encoding is named with how to pass one.

Run as root, a read-only folder is writable: unwritable locals here are under /proc (no new folder
can be made there) or below a file. Object stores: tests/test_object_store.py.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from taosr1.cli.main import main
from taosr1.core import config as cfgmod
from taosr1.core.resources import conf_dir, sample_path
from taosr1.storage.location import NotWritable, check_writable, resolve
from taosr1.storage.tables import EncodingError, read_table

REPO = Path(__file__).resolve().parent.parent
D1 = "2025-06-01"
NOPE = "/proc/nope"  # /proc takes no new folder, even from root
# a CSV that is not utf-8: a NUL and a UTF-16 byte-order mark in a title, a latin-1 é in a query
LATIN1 = (b"query_id,product_id,query,product_title\n"
          b"1,a,mug,Mug \x00\xff\xfe grey\n"
          b"2,b,caf\xe9 au lait,French press\n")


def invoke(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def one_error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: "), lines
    return lines[0]


# ---------------------------------------------------------------- the Location

def test_resolve_once_local_and_remote(tmp_path):
    loc = resolve(tmp_path / "grades.parquet")
    assert (loc.uri, loc.path, loc.protocol, loc.fmt, loc.is_remote) == (
        str(tmp_path / "grades.parquet"), str(tmp_path / "grades.parquet"), "file", "parquet", False)
    assert resolve("rel/out.csv").path == os.path.abspath("rel/out.csv") and resolve("rel/out.csv").uri == "rel/out.csv"
    assert resolve(loc) is loc and resolve(loc, fmt="csv").fmt == "csv"
    (tmp_path / "t.parquet" / "_delta_log").mkdir(parents=True)
    assert resolve(tmp_path / "t.parquet").fmt == "delta"  # a Delta folder is one whatever its name
    with pytest.raises(ValueError, match="format 'xls' is not one of"):
        resolve("x.xls", fmt="xls")
    s3 = resolve("s3://lake/t", {"aws_access_key_id": "KEY", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert s3.is_remote and s3.protocol == "s3" and s3.fmt is None
    assert s3.storage_options["AWS_ACCESS_KEY_ID"] == "KEY" and s3.storage_options["AWS_ALLOW_HTTP"] == "true"
    assert s3.fsspec_options == {"key": "KEY", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    assert "KEY" not in repr(s3)  # options may hold credentials: never shown
    child = s3.join("_staging", "run1")
    assert child.uri == "s3://lake/t/_staging/run1" and child.storage_options == s3.storage_options
    assert resolve("out/grades").sibling("grades_runs").uri == "out/grades_runs"


def test_a_location_pickles_without_its_filesystem(tmp_path):
    loc = resolve(tmp_path / "x.csv")
    assert loc.fs is loc.fs and loc.fs_path == str(tmp_path / "x.csv")  # built once
    back = pickle.loads(pickle.dumps(loc))
    assert back == loc and "_fs" not in back.__dict__ and back.fs_path == loc.fs_path


def test_check_writable_says_why_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (f"{NOPE}/x.parquet", None, f"cannot write {NOPE}/x.parquet: cannot create the folder {NOPE}"),
        (str(tmp_path / "file.txt" / "x.parquet"), None, f"{tmp_path / 'file.txt'} is a file, not a folder"),
        (str(tmp_path / "file.txt"), "delta", "it is a file; this output is a folder (a Delta table)"),
        (str(tmp_path), "parquet", "it is a folder; a parquet output is a file"),
    ]
    for uri, fmt, says in cases:
        with pytest.raises(NotWritable) as err:
            check_writable(resolve(uri, fmt=fmt))
        assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(NotWritable, match=r"\(quarantine\): "):
        check_writable(resolve(f"{NOPE}/q.csv"), "quarantine")
    check_writable(resolve(tmp_path / "new" / "deeper" / "x.parquet"))  # folders it needs: made, then removed
    check_writable(resolve(tmp_path / "file.txt", fmt="csv"))  # an existing file is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_read_only_folder_is_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(NotWritable, match="cannot create files in"):
            check_writable(resolve(ro / "x.parquet"))
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------- outputs checked first

def test_label_to_an_unwritable_output_stops_at_once_as_a_new_user_sees_it():
    """The issue's command, in a fresh process with the embedded default model: one line, exit 2,
    nothing graded (grading the sample takes minutes; no progress bar starts)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "taosr1.cli.main", "label", "taosr1/data/esci_us_sample.csv",
                           f"{NOPE}/x.parquet"], cwd=REPO, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: cannot write {NOPE}/x.parquet: cannot create the folder {NOPE} "
                                        "(No such file or directory)"]
    assert proc.stdout == "" and "grading" not in proc.stderr and "Traceback" not in proc.stderr
    assert seconds < 60, seconds  # the process's start; no model is loaded


def test_label_outputs_are_checked_before_the_input_and_the_model(tmp_path, sample_df):
    """A missing model would fail later ("does not exist"): each output is named first."""
    (tmp_path / "file.txt").write_text("x")
    src = tmp_path / "in.csv"
    sample_df.head(5).to_csv(src, index=False)
    no_model = ["--model", str(tmp_path / "no-model")]
    line = one_error_line(invoke(["label", str(src), str(tmp_path / "file.txt" / "g.parquet"), *no_model]))
    assert line == f"error: cannot write {tmp_path}/file.txt/g.parquet: {tmp_path}/file.txt is a file, not a folder"
    line = one_error_line(invoke(["label", str(src), str(tmp_path / "g.parquet"), "--quarantine", f"{NOPE}/q.parquet",
                                  *no_model]))
    assert line.startswith(f"error: cannot write {NOPE}/q.parquet (quarantine): cannot create the folder")
    line = one_error_line(invoke(["label", str(tmp_path / "missing.csv"), str(tmp_path / "file.txt"),
                                  "--output-format", "delta", *no_model]))
    assert "it is a file; this output is a folder (a Delta table)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "in.csv"]


WRITERS = [  # every command that writes, its output unwritable, its inputs missing (they would fail next)
    ("calibrate", ["calibrate", "missing.parquet", "--gold-col", "g", "--out", f"{NOPE}/rep"]),
    ("eval", ["eval", "missing.parquet", "--gold-col", "g", "--out", f"{NOPE}/rep"]),
    ("compare", ["compare", "a.parquet", "b.parquet", "--gold-col", "g", "--out", f"{NOPE}/rep"]),
    ("drift", ["drift", "--table", "missing", "--run-date", D1, "--out", f"{NOPE}/rep"]),
    ("sbs_make", ["sbs", "make", "a.parquet", "b.parquet", "--raters", "ann", "--out", f"{NOPE}/sbs"]),
    ("sbs_report", ["sbs", "report", "missing/tasks.json", "--out", f"{NOPE}/rep"]),
    ("cot", ["cot", "--output", f"{NOPE}/cot", "--set", "input=missing.csv"]),
    ("sample", ["sample", "--output", f"{NOPE}/sample", "--set", "data=missing"]),
    ("sft", ["train", "sft", "--output", f"{NOPE}/sft", "--set", "data=missing"]),
    ("dpo", ["train", "dpo", "--output", f"{NOPE}/dpo", "--set", "data=missing"]),
    ("grpo", ["train", "grpo", "--output", f"{NOPE}/grpo", "--set", "data=missing"]),
    ("pipeline", ["pipeline", "--config", str(conf_dir() / "train" / "smoke.yaml"), "--output", f"{NOPE}/run",
                  "--set", "input=missing.csv"]),
    ("nightly", ["nightly", "--input", str(sample_path()), "--output", f"{NOPE}/grades", "--run-date", D1,
                 "--model", "/nonexistent/model"]),
]


@pytest.mark.parametrize("args", [w[1] for w in WRITERS], ids=[w[0] for w in WRITERS])
def test_every_command_that_writes_checks_its_output_first(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the missing inputs are missing here
    t0 = time.monotonic()
    line = one_error_line(CliRunner().invoke(main, args))
    out = args[args.index("--out" if "--out" in args else "--output") + 1]
    assert line.startswith(f"error: cannot write {out}") and "cannot create the folder /proc/nope" in line, line
    assert time.monotonic() - t0 < 30  # no model, no Spark session


# ---------------------------------------------------------------- inputs not in their encoding

def test_label_names_a_csv_not_in_its_encoding_and_reads_it_with_one(tiny_model, tmp_path):
    src = tmp_path / "latin1.csv"
    src.write_bytes(LATIN1)
    out = tmp_path / "grades.parquet"
    line = one_error_line(invoke(["label", str(src), str(out), "--model", tiny_model]))
    assert line == (f"error: {src} is not utf-8 text: byte(s) 0xff at offset 53 cannot be decoded; pass its "
                    "encoding, e.g. --encoding latin-1 or cp1252 (taosr1 label; config key `encoding`), or save it "
                    "as UTF-8")
    assert not out.exists()
    res = invoke(["label", str(src), str(out), "--model", tiny_model, "--encoding", "latin-1", "--beta", "0.5"])
    assert res.exit_code == 0, res.output
    graded = pd.read_parquet(out)
    assert len(graded) == 2 and "café au lait" in set(graded["query"])
    # the config key says the same
    assert read_table(src, encoding="cp1252")["query"].tolist() == ["mug", "café au lait"]
    line = one_error_line(invoke(["label", str(src), str(out), "--model", tiny_model, "--encoding", "klingon"]))
    assert "encoding 'klingon' is not a text encoding Python knows" in line


def test_jsonl_not_in_its_encoding_is_named(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_bytes(b'{"query": "caf\xe9"}\n')
    with pytest.raises(EncodingError, match=f"{src} is not utf-8 text: byte\\(s\\) 0xe9 at offset 14"):
        read_table(src)
    assert read_table(src, encoding="latin-1")["query"].tolist() == ["café"]


def test_nightly_names_a_csv_not_in_its_encoding_before_work(spark, tmp_path):
    """Spark's CSV reader puts U+FFFD for bytes it cannot decode: the driver checks the text first."""
    from taosr1.nightly.job import NightlyConfig, read_input, run

    src = tmp_path / "latin1.csv"
    src.write_bytes(LATIN1)
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml", {"label.engine.model": "/nonexistent/model"})
    out = tmp_path / "grades"
    with pytest.raises(EncodingError) as err:
        run(spark, cfg, input=str(src), output=str(out), run_date=D1)
    assert f"{src} is not utf-8 text" in str(err.value) and "label.encoding=latin-1" in str(err.value)
    assert not out.exists() and not Path(f"{out}_quarantine").exists()
    rows = read_input(spark, str(src), encoding="latin-1").toPandas()
    assert rows["query"].tolist() == ["mug", "café au lait"] and rows["product_title"][0] == "Mug \x00ÿþ grey"


def test_nightly_output_checked_before_spark_work(spark, tmp_path):
    from taosr1.nightly.job import NightlyConfig, run

    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml", {"label.engine.model": "/nonexistent/model"})
    (tmp_path / "grades_runs").write_text("not a table")
    with pytest.raises(NotWritable, match="cannot write .*grades_runs \\(runs table\\): it is a file"):
        run(spark, cfg, input=str(sample_path()), output=str(tmp_path / "grades"), run_date=D1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades_runs"]
