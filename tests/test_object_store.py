"""Object-store tables end to end against a real S3 API on loopback (moto's server, real HTTP).

`taosr1 label` and the evaluation commands read and write s3:// paths; the nightly job
reads its input from a bucket, stages there from the executors through fsspec and commits
with delta-rs's S3 store (conditional put); results are read back with delta-rs and DuckDB.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from store_servers import free_port, serve

from taosr1.cli.main import main
from taosr1.core import config as cfgmod
from taosr1.core.resources import conf_dir, sample_path
from taosr1.nightly.job import NightlyConfig, run
from taosr1.storage.stores import StorageError

KEYS = ["query_id", "product_id"]
D1, D2, D3 = "2025-06-01", "2025-06-02", "2025-06-03"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (a real HTTP endpoint) with a bucket `lake` holding the sample.

    moto's `moto_server` (what ThreadedMotoServer runs in a thread) in a process of its own."""
    import sys

    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    with serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
               tmp_path_factory.mktemp("moto") / "moto.log", lambda: client.create_bucket(Bucket="lake")):
        client.upload_file(str(sample_path()), "lake", "in/pairs.csv")
        yield {"AWS_ENDPOINT_URL": endpoint, **CREDS}


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The endpoint and credentials in the environment, as a job on a cluster node would have them."""
    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3


def s3_frame(uri: str, s3: dict) -> pd.DataFrame:
    so = {"key": s3["AWS_ACCESS_KEY_ID"], "secret": s3["AWS_SECRET_ACCESS_KEY"],
          "client_kwargs": {"endpoint_url": s3["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}}
    return pd.read_parquet(uri, storage_options=so)


def delta(uri: str, s3: dict, run_date: str | None = None) -> pd.DataFrame:
    from deltalake import DeltaTable

    opts = {**s3, "AWS_ALLOW_HTTP": "true"}
    df = DeltaTable(uri, storage_options=opts).to_pandas()
    if run_date:
        df = df[df["run_date"].astype(str) == run_date]
    return df.sort_values(KEYS).reset_index(drop=True)


def test_label_reads_and_writes_s3_paths(s3_env, tiny_model, sample_df):
    res = CliRunner().invoke(main, ["label", "s3://lake/in/pairs.csv", "s3://lake/label/grades.parquet",
                                    "--model", tiny_model, "--limit", "40", "--beta", "0.5"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["quarantine"] == "s3://lake/label/grades.quarantine.parquet"
    graded = s3_frame("s3://lake/label/grades.parquet", s3_env)
    quarantined = s3_frame(summary["quarantine"], s3_env)
    assert len(graded) + len(quarantined) == 40 and len(graded) > 30
    assert list(graded["product_id"][:3]) == list(sample_df["product_id"][:3])
    # a Delta table on the bucket as output (delta-rs's S3 store), its quarantine beside it
    res = CliRunner().invoke(main, ["label", "s3://lake/in/pairs.csv", "s3://lake/label/grades_delta",
                                    "--model", tiny_model, "--limit", "40", "--output-format", "delta", "--beta", "0.5"])
    assert res.exit_code == 0, res.output
    again = delta("s3://lake/label/grades_delta", s3_env)
    assert len(again) == len(graded)
    assert len(delta("s3://lake/label/grades_delta_quarantine", s3_env)) == len(quarantined)


def test_eval_compare_and_calibrate_read_and_report_on_s3(s3_env, tmp_path):
    import s3fs
    from eval_data import predictions

    fs = s3fs.S3FileSystem()
    with fs.open("lake/eval/pred.parquet", "wb") as f:
        predictions().to_parquet(f, index=False)
    with fs.open("lake/eval/pred_b.parquet", "wb") as f:
        predictions(seed=1).to_parquet(f, index=False)
    res = CliRunner().invoke(main, ["eval", "s3://lake/eval/pred.parquet", "--gold-col", "esci_label",
                                    "--out", str(tmp_path / "rep"), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["n"] == len(predictions())
    # report folders in the bucket too
    res = CliRunner().invoke(main, ["eval", "s3://lake/eval/pred.parquet", "--gold-col", "esci_label",
                                    "--out", "s3://lake/reports/eval", "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["report"] == "s3://lake/reports/eval/report.html"
    assert json.loads(fs.cat("lake/reports/eval/metrics.json"))["n"] == len(predictions())
    res = CliRunner().invoke(main, ["compare", "s3://lake/eval/pred.parquet", "s3://lake/eval/pred_b.parquet",
                                    "--gold-col", "esci_label", "--out", "s3://lake/reports/compare", "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    assert json.loads(fs.cat("lake/reports/compare/metrics.json"))["n"] == len(predictions())
    res = CliRunner().invoke(main, ["calibrate", "s3://lake/eval/pred.parquet", "--gold-col", "esci_label",
                                    "--no-write", "--out", "s3://lake/reports/calibration"])
    assert res.exit_code == 0, res.output
    assert fs.exists("lake/reports/calibration/report.html")


def job(tiny_model, s3, **overrides) -> NightlyConfig:
    """Endpoint and credentials from the storage_options config section (shipped to executors)."""
    values = {"label.engine.model": tiny_model, "partitions": 2, "label.beta": 0.5, "storage_options": dict(s3),
              **overrides}
    return cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml", values)


@pytest.fixture(scope="module")
def nightly_s3(spark, tiny_model, s3):
    out = "s3://lake/tables/grades"
    first = run(spark, job(tiny_model, s3), input="s3://lake/in/pairs.csv", output=out, run_date=D1)
    return out, first


def test_nightly_reads_stages_and_commits_on_s3(nightly_s3, s3, sample_df):
    import duckdb
    from deltalake import DeltaTable

    out, record = nightly_s3
    assert record["rows_in"] == len(sample_df) == record["graded"] + record["quarantined"]
    graded, quarantined = delta(out, s3), delta(f"{out}_quarantine", s3)
    assert len(graded) == record["graded"] and len(quarantined) == record["quarantined"]
    both = pd.concat([graded[KEYS], quarantined[KEYS]])
    assert not both.duplicated().any() and len(both) == len(sample_df)
    runs = DeltaTable(f"{out}_runs", storage_options={**s3, "AWS_ALLOW_HTTP": "true"}).to_pandas()
    assert list(runs["run_id"]) == [record["run_id"]] and runs.iloc[0]["rows_in"] == len(sample_df)
    table = DeltaTable(out, storage_options={**s3, "AWS_ALLOW_HTTP": "true"})
    assert table.metadata().partition_columns == ["run_date"]
    assert all(u.startswith(f"{out}/run_date={D1}/{record['run_id']}-") for u in table.file_uris())
    dataset = table.to_pyarrow_dataset()  # noqa: F841 (read by DuckDB)
    n, dates = duckdb.connect().execute("select count(*), list(distinct run_date::varchar) from dataset").fetchone()
    assert n == record["graded"] and dates == [D1]
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3["AWS_ENDPOINT_URL"]})
    assert not fs.exists("lake/tables/grades/_staging/" + record["run_id"])


def test_nightly_rerun_and_two_dates_at_once_on_s3(nightly_s3, spark, tiny_model, s3):
    from deltalake import DeltaTable

    out, first = nightly_s3
    cfg = job(tiny_model, s3)
    before = delta(out, s3, D1)
    v0 = DeltaTable(out, storage_options={**s3, "AWS_ALLOW_HTTP": "true"}).version()
    again = run(spark, cfg, input="s3://lake/in/pairs.csv", output=out, run_date=D1)
    assert again["grades_version"] == v0 + 1  # one commit, the date replaced
    after = delta(out, s3, D1)
    same = [c for c in before.columns if c not in ("run_id", "graded_run_id")]  # both name the run
    pd.testing.assert_frame_equal(after[same], before[same])
    assert (after["run_id"] == again["run_id"]).all()

    records, errors = {}, []

    def night(date):
        try:
            records[date] = run(spark, cfg, input="s3://lake/in/pairs.csv", output=out, run_date=date)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=night, args=(d,)) for d in (D2, D3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted({records[D2]["grades_version"], records[D3]["grades_version"]}) == [v0 + 2, v0 + 3]
    grades = delta(out, s3)
    assert grades.groupby(grades["run_date"].astype(str)).size().to_dict() == {
        D1: first["graded"], D2: first["graded"], D3: first["graded"]}
    pd.testing.assert_frame_equal(delta(out, s3, D1), after)  # the other dates untouched
    runs = DeltaTable(f"{out}_runs", storage_options={**s3, "AWS_ALLOW_HTTP": "true"}).to_pandas()
    assert len(runs) == 4
    # `taosr1 drift` on the bucket's table, its report in the bucket
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3.items():
            mp.setenv(k, v)
        res = CliRunner().invoke(main, ["drift", "--table", out, "--run-date", D3, "--out", "s3://lake/reports/drift"])
        assert res.exit_code == 0, res.output
        assert f"no drift in {out}: run {D3} against {D2}" in res.output
        import s3fs

        assert s3fs.S3FileSystem().exists("lake/reports/drift/report.html")


def test_nightly_reads_delta_and_parquet_inputs_from_s3(spark, tiny_model, s3, sample_df):
    """A partitioned Delta table and a folder of Parquet files on the bucket, read by the executors."""
    import s3fs
    from deltalake import write_deltalake

    rows = sample_df.head(80)
    opts = {**s3, "AWS_ALLOW_HTTP": "true", "AWS_CONDITIONAL_PUT": "etag"}
    write_deltalake("s3://lake/in/pairs_delta", rows, partition_by=["source"], storage_options=opts)
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3["AWS_ENDPOINT_URL"]})
    for i, part in enumerate((rows.iloc[:50], rows.iloc[50:])):
        with fs.open(f"lake/in/pairs_parquet/part-{i}.parquet", "wb") as f:
            part.to_parquet(f, index=False)
    cfg = job(tiny_model, s3)
    for name in ("pairs_delta", "pairs_parquet"):
        out = f"s3://lake/tables/from_{name}"
        rec = run(spark, cfg, input=f"s3://lake/in/{name}", output=out, run_date=D1)
        assert rec["rows_in"] == 80 == rec["graded"] + rec["quarantined"]
        got = delta(out, s3)
        assert set(got["source"]) <= set(rows["source"]) and len(got) == rec["graded"]
        expected = rows.set_index(KEYS).loc[list(map(tuple, got[KEYS].to_numpy()))]
        assert list(got["query"]) == list(expected["query"])  # every column read back as written


def test_storage_problems_stop_before_model_work(spark, s3, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    endpoint = {"AWS_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"], "AWS_REGION": "us-east-1"}
    bad_model = "/nonexistent/model"  # would fail later: the storage check must come first
    cases = [
        (endpoint, "s3://lake/in/pairs.csv", "no credentials", "AWS_ACCESS_KEY_ID"),
        (s3, "s3://no-such-bucket/in.csv", "bucket 'no-such-bucket' does not exist", "no-such-bucket"),
        ({**s3, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "s3://lake/in/pairs.csv", "cannot reach http://127.0.0.1:9",
         "AWS_ENDPOINT_URL"),
    ]
    for options, source, message, hint in cases:
        cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                          {"label.engine.model": bad_model, "storage_options": dict(options)})
        with pytest.raises(StorageError) as err:
            run(spark, cfg, input=source, output="s3://lake/tables/never", run_date=D1)
        assert message in str(err.value) and hint in str(err.value) and source.split("/")[2] in str(err.value)
        assert "testing" not in str(err.value)  # no secret in the message


def test_outputs_in_a_bucket_that_does_not_exist_stop_before_model_work(s3_env, spark, tmp_path):
    """`taosr1 label`, `eval --out` and the nightly job name the output and the missing bucket in one
    line, before any model work (the model given does not exist: it would fail next)."""
    from taosr1.storage.location import NotWritable

    missing = "bucket 'no-such-bucket' does not exist"
    t0 = time.monotonic()
    res = CliRunner().invoke(main, ["label", "s3://lake/in/pairs.csv", "s3://no-such-bucket/grades.parquet",
                                    "--model", str(tmp_path / "no-model")])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        f"error: cannot write s3://no-such-bucket/grades.parquet: {missing} (or is not visible to these "
        "credentials); create it or fix the path"], res.output
    res = CliRunner().invoke(main, ["label", "s3://lake/in/pairs.csv", "s3://lake/label/g.parquet",
                                    "--quarantine", "s3://no-such-bucket/q.parquet", "--model", str(tmp_path / "no")])
    assert res.exit_code == 2 and "cannot write s3://no-such-bucket/q.parquet (quarantine): " + missing in res.stderr
    res = CliRunner().invoke(main, ["eval", "s3://lake/no/pred.parquet", "--gold-col", "g",
                                    "--out", "s3://no-such-bucket/reports/eval"])
    assert res.exit_code == 2 and "cannot write s3://no-such-bucket/reports/eval (report folder): " + missing in res.stderr
    assert time.monotonic() - t0 < 30
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                      {"label.engine.model": "/nonexistent/model", "storage_options": dict(s3_env)})
    with pytest.raises(NotWritable) as err:
        run(spark, cfg, input="s3://lake/in/pairs.csv", output="s3://no-such-bucket/tables/grades", run_date=D1)
    assert str(err.value).startswith("cannot write s3://no-such-bucket/tables/grades (grades table): " + missing)


def test_incremental_nightly_on_s3_equals_a_full_run(spark, tiny_model, s3, sample_df):
    """reuse: previous with every table in the bucket: the fingerprint table read by the executors,
    reused rows staged beside the graded ones, the new fingerprints appended in one commit."""
    import s3fs
    from deltalake import DeltaTable

    cols = ["query_id", "query", "product_id", "product_title"]
    a = sample_df[cols].head(60).reset_index(drop=True)
    b = pd.concat([a.head(50), sample_df[cols].iloc[60:70]], ignore_index=True)
    b.loc[5, "product_title"] += " (new edition)"
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3["AWS_ENDPOINT_URL"]})
    for name, frame in (("a", a), ("b", b)):
        with fs.open(f"lake/inc/{name}.parquet", "wb") as f:
            frame.to_parquet(f, index=False)
    out, full_out = "s3://lake/tables/inc", "s3://lake/tables/inc_full"
    logs: list[str] = []
    first = run(spark, job(tiny_model, s3, reuse="previous"), input="s3://lake/inc/a.parquet", output=out,
                run_date=D1, log=logs.append)
    second = run(spark, job(tiny_model, s3, reuse="previous"), input="s3://lake/inc/b.parquet", output=out,
                 run_date=D2, log=logs.append)
    full = run(spark, job(tiny_model, s3), input="s3://lake/inc/b.parquet", output=full_out, run_date=D2)
    assert first["reuse"].startswith("full run: no fingerprint table") and first["fingerprints_added"] == first["graded"]
    assert second["reuse"].startswith(f"reused from {out}/_fingerprints version 0")
    got, want = delta(out, s3, D2), delta(full_out, s3, D2)
    same = [c for c in want.columns if c not in ("run_id", "graded_run_id", "score", *[c for c in want if c.startswith("p_")])]
    pd.testing.assert_frame_equal(got[same], want[same])
    carried = got[got["graded_run_id"] == first["run_id"]]
    assert len(carried) == second["reused"] >= 45 and (got["run_id"] == second["run_id"]).all()
    changed = got[got["product_title"] == b.loc[5, "product_title"]]
    assert len(changed) == 1 and changed["graded_run_id"].iloc[0] == second["run_id"]  # a new title: graded again
    assert second["graded"] == full["graded"] and second["quarantined"] == full["quarantined"]
    assert second["fingerprints_added"] == second["graded"] - second["reused"]
    fps = DeltaTable(f"{out}/_fingerprints", storage_options={**s3, "AWS_ALLOW_HTTP": "true"})
    assert fps.metadata().name == "taosr1_fingerprints" and fps.version() == 1  # created, then one append
    assert len(fps.to_pandas()) == first["graded"] + second["fingerprints_added"]
    assert not fs.exists(f"lake/tables/inc/_fingerprints/_staging/{second['run_id']}")
    assert not any("warning" in line for line in logs[1:] if "no fingerprint table" not in line)


def test_resume_on_s3_grades_only_what_the_dead_run_did_not_stage(spark, tiny_model, s3, sample_df):
    """A run that dies with two of three partitions staged in the bucket is resumed: the staged
    partitions are not graded again, the date commits once, and it equals a full run."""
    import s3fs

    from taosr1.core.config import ConfigError
    from taosr1.spark.remote import staged_partitions
    from taosr1.storage.location import resolve

    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3["AWS_ENDPOINT_URL"]})
    with fs.open("lake/resume/in.parquet", "wb") as f:
        sample_df.head(60).to_parquet(f, index=False)
    src, out, full_out = "s3://lake/resume/in.parquet", "s3://lake/tables/resumed", "s3://lake/tables/resumed_full"
    with pytest.raises(Exception, match="injected fault: partition 1 fails"):
        run(spark, job(tiny_model, s3, partitions=3, **{"fault.fail_partition": 1}), input=src, output=out,
            run_date=D2, run_id="dies")
    assert not fs.exists("lake/tables/resumed/_delta_log")  # nothing committed
    done = staged_partitions(resolve(f"{out}/_staging/dies", s3))
    assert sorted(done) == [0, 2] and sum(done.values()) > 0

    with pytest.raises(ConfigError, match="cannot resume run dies"):  # another config: refused, nothing graded
        run(spark, job(tiny_model, s3, partitions=3, **{"label.beta": 0.4}), input=src, output=out, run_date=D2,
            run_id="dies", resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        run(spark, job(tiny_model, s3, partitions=3), input=src, output=out, run_date=D2, run_id="never-ran",
            resume=True)

    record = run(spark, job(tiny_model, s3, partitions=3), input=src, output=out, run_date=D2, run_id="dies",
                 resume=True)
    assert record["resumed_rows"] == sum(done.values()) and 0 < record["resumed_rows"] < record["graded"]
    assert record["rows_in"] == 60 == record["graded"] + record["quarantined"] and record["grades_version"] == 0
    full = run(spark, job(tiny_model, s3, partitions=3), input=src, output=full_out, run_date=D2)
    got, want = delta(out, s3, D2), delta(full_out, s3, D2)
    same = [c for c in want.columns if c not in ("run_id", "graded_run_id")]
    pd.testing.assert_frame_equal(got[same], want[same])
    assert (got["run_id"] == "dies").all() and record["quarantined"] == full["quarantined"]
    assert not fs.exists("lake/tables/resumed/_staging/dies")


def test_training_stages_read_and_write_s3(s3_env, tiny_model):
    """The pipeline's input and every stage's output in the bucket; a rerun resumes from it; a stage alone
    takes its model and data from the bucket."""
    import s3fs

    fs = s3fs.S3FileSystem()
    args = ["pipeline", "--config", str(conf_dir() / "train" / "smoke.yaml"), "--output", "s3://lake/train/run"]
    for s in ["input=s3://lake/in/pairs.csv", f"model={tiny_model}", f"cot.teacher.model={tiny_model}", "train_rows=16",
              "test_rows=12", "stages=[cot, sft]", "cot.max_new_tokens=8", "sft.max_steps=2"]:
        args += ["--set", s]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["output"] == "s3://lake/train/run"
    for f in ("split/train.parquet", "cot/taosr1_stage.json", "sft/taosr1_stage.json", "sft/model.safetensors",
              "eval/sft.json", "pipeline_summary.json"):
        assert fs.exists(f"lake/train/run/{f}"), f
    assert json.loads(fs.cat("lake/train/run/pipeline_summary.json"))["output"] == "s3://lake/train/run"
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "cot: complete in" in res.stderr and "sft: complete in" in res.stderr  # resumed from the bucket
    res = CliRunner().invoke(main, ["sample", "--output", "s3://lake/train/sample", "--set", "data=s3://lake/train/run/cot",
                                    "--set", "engine.model=s3://lake/train/run/sft", "--set", "n=2"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["samples"] == 2 * 16
    assert fs.exists("lake/train/sample/taosr1_stage.json")


def test_local_copies_keep_what_a_failed_command_wrote_and_name_missing_inputs(s3_env):
    """A stage that dies still uploads what it finished (its marker only if it completed); a missing
    remote input is named."""
    import s3fs

    from taosr1.storage.local_copy import fetched, published

    fs = s3fs.S3FileSystem()
    with pytest.raises(RuntimeError, match="died"):
        with published("s3://lake/failed/run") as local:
            (Path(local) / "cot").mkdir()
            (Path(local) / "cot" / "cot.parquet").write_bytes(b"rows")
            raise RuntimeError("died")
    assert fs.cat("lake/failed/run/cot/cot.parquet") == b"rows"
    before = fs.info("lake/failed/run/cot/cot.parquet")["LastModified"]
    time.sleep(1.1)  # S3 times are in seconds
    with published("s3://lake/failed/run", resume=True) as local:  # a rerun starts from what is there
        assert (Path(local) / "cot" / "cot.parquet").read_bytes() == b"rows"
        (Path(local) / "sft").mkdir()
        (Path(local) / "sft" / "model.bin").write_bytes(b"weights")
    assert fs.cat("lake/failed/run/sft/model.bin") == b"weights"
    fs.invalidate_cache()
    assert fs.info("lake/failed/run/cot/cot.parquet")["LastModified"] == before  # not uploaded again
    with pytest.raises(FileNotFoundError, match="s3://lake/no/such/model"):
        with fetched("s3://lake/no/such/model"):
            pass


def test_a_model_in_the_bucket_serves_label_calibrate_and_the_nightly_job(s3_env, spark, tiny_model, nightly_s3,
                                                                          tmp_path, monkeypatch):
    """`--model s3://...`: one local copy, fetched again only when the folder in the bucket changes;
    calibrate records beta beside it in the bucket; the nightly job's executors copy it themselves."""
    import s3fs

    from taosr1.core.names import CALIBRATION_FILE

    fs = s3fs.S3FileSystem()
    uri = f"s3://lake/models/{Path(tiny_model).name}"  # the same folder name: the `model` column names it
    fs.put(f"{tiny_model}/", uri[len("s3://"):], recursive=True)
    monkeypatch.setenv("TAOSR1_CACHE", str(tmp_path / "cache"))
    copies = tmp_path / "cache" / "remote" / "models"
    frames = {}
    for name, model in (("local", tiny_model), ("bucket", uri), ("again", uri)):
        res = CliRunner().invoke(main, ["label", "s3://lake/in/pairs.csv", str(tmp_path / f"{name}.parquet"),
                                        "--model", model, "--limit", "30", "--beta", "0.5"])
        assert res.exit_code == 0, res.output
        frames[name] = pd.read_parquet(tmp_path / f"{name}.parquet")
    pd.testing.assert_frame_equal(frames["bucket"], frames["local"])
    pd.testing.assert_frame_equal(frames["again"], frames["local"])
    [uri_folder] = copies.iterdir()
    assert len(list(uri_folder.iterdir())) == 1  # the second label reused the first copy

    res = CliRunner().invoke(main, ["calibrate", str(tmp_path / "bucket.parquet"), "--gold-col", "esci_label",
                                    "--model", uri])
    assert res.exit_code == 0, res.output
    assert f"written to {uri}/{CALIBRATION_FILE}" in res.output
    beta = json.loads(res.stdout.strip().splitlines()[-1])["beta"]
    res = CliRunner().invoke(main, ["label", "s3://lake/in/pairs.csv", str(tmp_path / "cal.parquet"),
                                    "--model", uri, "--limit", "5"])
    assert res.exit_code == 0, res.output
    assert (pd.read_parquet(tmp_path / "cal.parquet")["beta"] == beta).all()  # the new copy has the beta
    assert len(list(uri_folder.iterdir())) == 1  # and replaced the old one

    out, first = nightly_s3
    rec = run(spark, job(uri, s3_env), input="s3://lake/in/pairs.csv",
              output=str(tmp_path / "grades"), run_date=D1)
    assert rec["graded"] == first["graded"]
    from_bucket = delta(str(tmp_path / "grades"), s3_env)
    same = [c for c in from_bucket.columns if c.startswith("p_") or c in ("grade", *KEYS)]
    pd.testing.assert_frame_equal(from_bucket[same], delta(out, s3_env, D1)[same])
