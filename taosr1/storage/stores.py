"""Object-store locations (s3://, gs://, abfss://, ...) through fsspec and delta-rs's object stores.

One set of options serves both: delta-rs's keys (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_REGION`, `AWS_ALLOW_HTTP`, `AZURE_STORAGE_ACCOUNT_NAME`, ...), from the environment
or a `storage_options` config section; they are mapped to the fsspec filesystem's own
arguments (s3fs, gcsfs, adlfs). Values are never logged. S3 commits need an atomic
"create if absent": unless a locking provider is configured, delta-rs is told to use
S3's conditional put (`If-None-Match`, on AWS since 2024 and on MinIO, R2, moto).
"""

from __future__ import annotations

import os
from typing import Any

# fsspec protocol -> (pip extra, package) for the error that names what to install
PACKAGES = {"s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"), "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
            "abfs": ("azure", "adlfs"), "abfss": ("azure", "adlfs"), "az": ("azure", "adlfs")}
# delta-rs key -> s3fs argument
_S3 = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
_S3_CLIENT = {"AWS_ENDPOINT_URL": "endpoint_url", "AWS_REGION": "region_name"}
_AZURE = {"AZURE_STORAGE_ACCOUNT_NAME": "account_name", "AZURE_STORAGE_ACCOUNT_KEY": "account_key",
          "AZURE_STORAGE_SAS_TOKEN": "sas_token", "AZURE_STORAGE_CONNECTION_STRING": "connection_string"}
_GCS = {"GOOGLE_SERVICE_ACCOUNT": "token", "GOOGLE_APPLICATION_CREDENTIALS": "token"}
# settings (not secrets) read from the environment so executors get them with the options. Emulators:
# Azurite (AZURE_STORAGE_USE_EMULATOR, at AZURITE_BLOB_STORAGE_URL, as delta-rs reads them) and a GCS
# emulator at STORAGE_EMULATOR_HOST (as the Google clients read it).
_ENV = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ALLOW_HTTP", "AWS_S3_LOCKING_PROVIDER", "AWS_CONDITIONAL_PUT",
        "AZURE_STORAGE_USE_EMULATOR", "AZURITE_BLOB_STORAGE_URL", "STORAGE_EMULATOR_HOST")
# Azurite's documented development account (public, not a secret)
_AZURITE_ACCOUNT = "devstoreaccount1"
_AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class StorageError(ValueError):
    """A location the job cannot use: missing credentials, unknown bucket, unreachable endpoint."""


def is_remote(uri: str | os.PathLike) -> bool:
    uri = str(uri)
    return "://" in uri and not uri.startswith("file://")


def protocol(uri: str) -> str:
    return str(uri).split("://", 1)[0].lower() if "://" in str(uri) else "file"


def join(uri: str, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *(p.strip("/") for p in parts)])


def options_for(uri: str, options: dict[str, Any] | None = None) -> dict[str, str]:
    """delta-rs storage_options for `uri`: the environment's settings, then `options` (which win)."""
    if not is_remote(uri):
        return {}
    out = {k: os.environ[k] for k in _ENV if os.environ.get(k)}
    out.update({str(k).upper() if str(k).upper() in (*_S3, *_S3_CLIENT, *_AZURE, *_GCS, *_ENV) else str(k): str(v)
                for k, v in (options or {}).items() if v is not None})
    if protocol(uri) in ("s3", "s3a"):
        endpoint = out.get("AWS_ENDPOINT_URL", "")
        if endpoint.startswith("http://"):
            out.setdefault("AWS_ALLOW_HTTP", "true")
        locking = {"AWS_S3_LOCKING_PROVIDER", "AWS_S3_ALLOW_UNSAFE_RENAME", "AWS_CONDITIONAL_PUT",
                   "AWS_COPY_IF_NOT_EXISTS"} & {k.upper() for k in out}
        if not locking:
            out["AWS_CONDITIONAL_PUT"] = "etag"  # atomic commit files without a DynamoDB lock
    return out


def fsspec_options(uri: str, options: dict[str, str]) -> dict[str, Any]:
    """The fsspec filesystem's arguments for delta-rs-style `options`."""
    proto = protocol(uri)
    if proto in ("s3", "s3a"):
        kw: dict[str, Any] = {_S3[k]: v for k, v in options.items() if k in _S3}
        client = {_S3_CLIENT[k]: v for k, v in options.items() if k in _S3_CLIENT}
        if client:
            kw["client_kwargs"] = client
        return kw
    if proto in ("abfs", "abfss", "az"):
        kw = {_AZURE[k]: v for k, v in options.items() if k in _AZURE}
        return _azurite(kw, options) if _true(options.get("AZURE_STORAGE_USE_EMULATOR")) else kw
    if proto in ("gs", "gcs"):
        kw = {_GCS[k]: v for k, v in options.items() if k in _GCS}
        if options.get("STORAGE_EMULATOR_HOST"):
            kw = {"token": "anon", **kw, "endpoint_url": options["STORAGE_EMULATOR_HOST"]}
        return kw
    return {}


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def _azurite(kw: dict[str, Any], options: dict[str, str]) -> dict[str, Any]:
    """adlfs's arguments for Azurite: the connection string delta-rs builds from the same settings."""
    account = kw.get("account_name", _AZURITE_ACCOUNT)
    key = kw.get("account_key", _AZURITE_KEY)
    url = options.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000").rstrip("/")
    return {"connection_string": f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
                                 f"BlobEndpoint={url}/{account};"}


def filesystem(uri: str, options: dict[str, str] | None = None, **extra):
    """(fsspec filesystem, path inside it) for `uri`; a clear error when its package is missing."""
    import fsspec

    uri = str(uri)
    if uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://"):]
    kw = {**fsspec_options(uri, options or {}), **extra} if is_remote(uri) else {}
    try:
        return fsspec.core.url_to_fs(uri, **kw)
    except ImportError as e:
        extra_name, pkg = PACKAGES.get(protocol(uri), ("", "the fsspec implementation"))
        hint = f'pip install "taosr1[{extra_name}]"' if extra_name else f"install {pkg}"
        raise StorageError(f"{uri}: reading {protocol(uri)}:// paths needs {pkg}; {hint}") from e


def pyarrow_fs(uri: str, options: dict[str, str] | None = None):
    """(pyarrow FileSystem, path) over the fsspec filesystem: for pyarrow readers and writers."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = filesystem(uri, options)
    return PyFileSystem(FSSpecHandler(fs)), path


def _endpoint(uri: str, opts: dict[str, str]) -> tuple[str, str]:
    """(the setting that names the endpoint, its value) for the unreachable-store message."""
    proto = protocol(uri)
    if proto in ("abfs", "abfss", "az"):
        if _true(opts.get("AZURE_STORAGE_USE_EMULATOR")):
            return "AZURITE_BLOB_STORAGE_URL", opts.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000")
        return "AZURE_STORAGE_ACCOUNT_NAME", "the storage account's endpoint"
    if proto in ("gs", "gcs"):
        return "STORAGE_EMULATOR_HOST", opts.get("STORAGE_EMULATOR_HOST", "the GCS endpoint")
    return "AWS_ENDPOINT_URL", opts.get("AWS_ENDPOINT_URL", "the store's default endpoint")


def _store_url(uri: str, opts: dict[str, str]) -> str | None:
    """The Azure or GCS endpoint `uri` goes to, where the settings or the URI name it."""
    proto = protocol(uri)
    if proto in ("abfs", "abfss", "az"):
        if _true(opts.get("AZURE_STORAGE_USE_EMULATOR")):
            return opts.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000")
        if opts.get("AZURE_STORAGE_CONNECTION_STRING"):
            return None  # the endpoint is inside the (secret) connection string
        netloc = uri.split("://", 1)[1].split("/", 1)[0]
        account = opts.get("AZURE_STORAGE_ACCOUNT_NAME") or (netloc.split("@", 1)[1].split(".")[0] if "@" in netloc else "")
        return f"https://{account}.blob.core.windows.net" if account else None
    if proto in ("gs", "gcs"):
        return opts.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com")
    return None  # S3: its client is told to try once (check_location)


def _unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why a TCP connection to `url` fails within `timeout`, or None. adlfs and gcsfs retry for
    ~85 s and ~35 s before they say so; a refused or unresolvable endpoint is known at once.
    Behind a proxy the clients connect through it, so no direct probe is made."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _what_to_set(uri: str) -> str:
    proto = protocol(uri)
    if proto in ("s3", "s3a"):
        return ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile / instance role), and "
                "AWS_ENDPOINT_URL for a non-AWS endpoint, in the environment or the storage_options config section")
    if proto in ("abfs", "abfss", "az"):
        return "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token) in storage_options"
    return "set GOOGLE_SERVICE_ACCOUNT (a key file) or application default credentials"


def check_location(uri: str, options: dict[str, Any] | None = None, what: str = "location") -> None:
    """Fail now, naming `uri` and what to set, when its store cannot be reached or its bucket is unknown.

    Called before any model work; a table that does not exist yet is fine (its bucket must).
    (taosr1.storage.location.check_readable / check_writable: the same check for a resolved Location.)
    """
    if not is_remote(uri):
        return
    why = store_problem(uri, options_for(uri, options))
    if why:
        raise StorageError(f"{what} {uri}: {why}")


def store_problem(uri: str, opts: dict[str, str]) -> str | None:
    """Why the store of `uri` cannot be used with the resolved options `opts` (options_for), or None."""
    url = _store_url(uri, opts)
    why = _unreachable(url) if url else None
    if why:
        setting, _ = _endpoint(uri, opts)
        return f"cannot reach {url} ({why}); check {setting} / the network, or set storage_options.{setting}"
    extra = {}
    if protocol(uri) in ("s3", "s3a"):  # one quick attempt, not botocore's minutes of retries
        extra = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 30, "retries": {"max_attempts": 1}}}
    fs, path = filesystem(uri, opts, skip_instance_cache=True, **extra)  # fresh credentials, not a cached client's
    bucket = path.split("/", 1)[0]
    try:
        fs.ls(bucket, detail=False, refresh=True)
    except FileNotFoundError:
        return (f"bucket {bucket!r} does not exist (or is not visible to these credentials); create it or fix "
                "the path")
    except PermissionError as e:
        return f"access denied to bucket {bucket!r} ({e}); {_what_to_set(uri)}"
    except Exception as e:  # noqa: BLE001 - botocore/aiohttp/azure errors have no common base
        return _client_problem(uri, opts, f"{type(e).__name__}: {e}")
    return None


def _client_problem(uri: str, opts: dict[str, str], text: str) -> str:
    if "credential" in text.lower() or "NoCredentials" in text:
        return f"no credentials for {protocol(uri)}://; {_what_to_set(uri)}"
    if any(s in text.lower() for s in ("connect", "endpoint", "timeout", "resolve", "unreachable")):
        setting, endpoint = _endpoint(uri, opts)
        return f"cannot reach {endpoint} ({text}); check {setting} / the network, or set storage_options.{setting}"
    return f"{text}; {_what_to_set(uri)}"
