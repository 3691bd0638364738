"""Azure Blob and GCS paths against real servers on loopback: Azurite (npm) and gcp-storage-emulator.

Azure goes end to end like S3 (tests/test_object_store.py): `taosr1 label` and `eval` through
adlfs, and the nightly job reading, staging from the executors and committing with delta-rs's
Azure store. The GCS emulator serves the JSON API that gcsfs speaks but not the XML listing
delta-rs's GCS store needs, so on GCS the CLI and the nightly job's input are tested, with the
Delta tables local.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from click.testing import CliRunner
from store_servers import azurite_command, free_port, serve

from taosr1.cli.main import main
from taosr1.core import config as cfgmod
from taosr1.core.resources import conf_dir, sample_path
from taosr1.nightly.job import NightlyConfig, run
from taosr1.storage.stores import StorageError, filesystem

KEYS = ["query_id", "product_id"]
D1 = "2025-06-01"
SCHEME = {"azure": "az", "gcs": "gs"}  # fixture name -> URI scheme


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    """Azurite's blob server with a container `lake` holding the sample; the settings as storage_options.

    delta-rs reads Azurite's address only from the environment (AZURITE_BLOB_STORAGE_URL), so
    it is set there too, as it would be on a node that uses the emulator."""
    command = azurite_command()
    port, data = free_port(), tmp_path_factory.mktemp("azurite")
    options = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{port}"}
    fs, _ = filesystem("az://lake", options)
    cmd = [command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data / "db"),
           "--silent", "--skipApiVersionCheck", "--loose"]
    with pytest.MonkeyPatch.context() as mp, serve(cmd, data / "azurite.log", lambda: fs.mkdir("lake")):
        mp.setenv("AZURITE_BLOB_STORAGE_URL", options["AZURITE_BLOB_STORAGE_URL"])
        fs.put_file(str(sample_path()), "lake/in/pairs.csv")
        yield options


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """gcp-storage-emulator with a bucket `lake` holding the sample; its address as storage_options."""
    port, logs = free_port(), tmp_path_factory.mktemp("gcs")
    options = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
    fs, _ = filesystem("gs://lake", options)
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
           "--in-memory", "--quiet"]
    with serve(cmd, logs / "gcs.log", lambda: fs.mkdir("lake")):
        fs.put_file(str(sample_path()), "lake/in/pairs.csv")
        yield options


@pytest.fixture(params=["azure", "gcs"])
def store(request, monkeypatch):
    """(scheme, options) of each store, its settings in the environment as a node would have them."""
    options = request.getfixturevalue(request.param)
    for k, v in options.items():
        monkeypatch.setenv(k, v)
    return SCHEME[request.param], options


def read_parquet(uri: str, options: dict[str, str]) -> pd.DataFrame:
    fs, path = filesystem(uri, options)
    with fs.open(path, "rb") as f:
        return pd.read_parquet(f)


def delta(uri: str, run_date: str | None = None) -> pd.DataFrame:
    from deltalake import DeltaTable

    opts = {"AZURE_STORAGE_USE_EMULATOR": "true"} if uri.startswith("az://") else None
    df = DeltaTable(uri, storage_options=opts).to_pandas()
    if run_date:
        df = df[df["run_date"].astype(str) == run_date]
    return df.sort_values(KEYS).reset_index(drop=True)


def test_label_eval_and_calibrate_read_and_write_the_store(store, tiny_model, sample_df, tmp_path):
    scheme, options = store
    out = f"{scheme}://lake/label/grades.parquet"
    res = CliRunner().invoke(main, ["label", f"{scheme}://lake/in/pairs.csv", out, "--model", tiny_model,
                                    "--limit", "40", "--beta", "0.5"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["quarantine"] == f"{scheme}://lake/label/grades.quarantine.parquet"
    graded, quarantined = read_parquet(out, options), read_parquet(summary["quarantine"], options)
    assert len(graded) + len(quarantined) == 40 and len(graded) > 30
    assert list(graded["product_id"][:3]) == list(sample_df["product_id"][:3])
    # the graded file back from the store, with its gold labels, through `taosr1 eval`
    res = CliRunner().invoke(main, ["eval", out, "--gold-col", "esci_label", "--out", str(tmp_path / "rep"),
                                    "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["n"] == len(graded)
    res = CliRunner().invoke(main, ["calibrate", out, "--gold-col", "esci_label", "--no-write",
                                    "--out", str(tmp_path / "cal")])
    assert res.exit_code == 0, res.output
    assert any((tmp_path / "cal").iterdir())


def job(tiny_model, options, **overrides) -> NightlyConfig:
    values = {"label.engine.model": tiny_model, "partitions": 2, "label.beta": 0.5, "storage_options": dict(options),
              **overrides}
    return cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml", values)


def test_nightly_on_azure_commits_there_and_reruns_exactly_once(spark, tiny_model, azure, sample_df):
    from deltalake import DeltaTable

    out = "az://lake/tables/grades"
    cfg = job(tiny_model, azure)
    first = run(spark, cfg, input="az://lake/in/pairs.csv", output=out, run_date=D1)
    assert first["rows_in"] == len(sample_df) == first["graded"] + first["quarantined"]
    graded, quarantined = delta(out), delta(f"{out}_quarantine")
    both = pd.concat([graded[KEYS], quarantined[KEYS]])
    assert len(graded) == first["graded"] and not both.duplicated().any() and len(both) == len(sample_df)
    table = DeltaTable(out, storage_options={"AZURE_STORAGE_USE_EMULATOR": "true"})
    assert all(u.startswith(f"{out}/run_date={D1}/{first['run_id']}-") for u in table.file_uris())
    fs, _ = filesystem(out, azure)
    assert not fs.exists(f"lake/tables/grades/_staging/{first['run_id']}")

    again = run(spark, cfg, input="az://lake/in/pairs.csv", output=out, run_date=D1)
    assert again["grades_version"] == table.version() + 1  # one commit: the date replaced, not appended
    after = delta(out, D1)
    same = [c for c in graded.columns if c not in ("run_id", "graded_run_id")]
    pd.testing.assert_frame_equal(after[same], graded[same])
    runs = DeltaTable(f"{out}_runs", storage_options={"AZURE_STORAGE_USE_EMULATOR": "true"}).to_pandas()
    assert sorted(runs["run_id"]) == sorted([first["run_id"], again["run_id"]])


def test_nightly_reads_its_input_from_gcs(spark, tiny_model, gcs, sample_df, tmp_path):
    """The executors list and read the CSV in the bucket through gcsfs; the tables are local."""
    out = str(tmp_path / "grades")
    rec = run(spark, job(tiny_model, gcs), input="gs://lake/in/pairs.csv", output=out, run_date=D1)
    assert rec["rows_in"] == len(sample_df) == rec["graded"] + rec["quarantined"]
    got = delta(out)
    expected = sample_df.set_index(KEYS).loc[list(map(tuple, got[KEYS].to_numpy()))]
    assert list(got["product_title"]) == list(expected["product_title"])  # every row read back as written


@pytest.mark.parametrize("name", ["azure", "gcs"])
def test_unknown_bucket_stops_before_model_work(request, spark, name, monkeypatch):
    options = request.getfixturevalue(name)
    scheme = SCHEME[name]
    cfg = cfgmod.load(NightlyConfig, conf_dir() / "nightly.yaml",
                      {"label.engine.model": "/nonexistent/model", "storage_options": dict(options)})
    source = f"{scheme}://no-such-bucket/in.csv"
    with pytest.raises(StorageError) as err:
        run(spark, cfg, input=source, output=f"{scheme}://lake/tables/never", run_date=D1)
    assert "bucket 'no-such-bucket' does not exist" in str(err.value) and source in str(err.value)
    fs, _ = filesystem(f"{scheme}://lake", options)
    assert not fs.exists("lake/tables/never")


def test_emulator_settings_map_to_the_fsspec_clients(monkeypatch):
    """Settings from the environment travel with the options (to the executors) and become the
    clients' arguments; the development account's key is Azurite's public one, never a real secret."""
    from taosr1.storage.stores import fsspec_options, options_for

    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10123")
    monkeypatch.setenv("AZURE_STORAGE_USE_EMULATOR", "true")
    opts = options_for("az://lake/t")
    kw = fsspec_options("az://lake/t", opts)
    assert set(kw) == {"connection_string"}
    assert "BlobEndpoint=http://127.0.0.1:10123/devstoreaccount1;" in kw["connection_string"]
    named = fsspec_options("az://lake/t", {**opts, "AZURE_STORAGE_ACCOUNT_NAME": "acct"})
    assert "AccountName=acct;" in named["connection_string"]
    assert "BlobEndpoint=http://127.0.0.1:10123/acct;" in named["connection_string"]
    assert fsspec_options("az://lake/t", {"AZURE_STORAGE_ACCOUNT_NAME": "acct"}) == {"account_name": "acct"}
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9099")
    assert fsspec_options("gs://lake/t", options_for("gs://lake/t")) == {
        "token": "anon", "endpoint_url": "http://127.0.0.1:9099"}
    assert fsspec_options("gs://lake/t", {"GOOGLE_SERVICE_ACCOUNT": "/k.json"}) == {"token": "/k.json"}


@pytest.mark.parametrize("uri, options, setting", [
    ("az://lake/in.csv", {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": "http://127.0.0.1:{port}"},
     "AZURITE_BLOB_STORAGE_URL"),
    ("gs://lake/in.csv", {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:{port}"}, "STORAGE_EMULATOR_HOST"),
], ids=["azure", "gcs"])
def test_unreachable_endpoint_is_named_before_the_clients_retry(uri, options, setting, monkeypatch):
    """Nothing listens on the port: the check names the endpoint and the setting, without the
    clients' own retries (adlfs ~85 s, gcsfs ~35 s; timed in docs/storage.md, not here)."""
    from taosr1.storage import stores

    monkeypatch.setattr(stores, "filesystem", lambda *a, **k: pytest.fail("a client was built: its retries run first"))
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    port = free_port()  # bound and released: nothing listens there
    opts = {k: v.format(port=port) for k, v in options.items()}
    with pytest.raises(StorageError) as err:
        stores.check_location(uri, opts, what="input")
    msg = str(err.value)
    assert f"input {uri}: cannot reach http://127.0.0.1:{port}" in msg and f"storage_options.{setting}" in msg
