"""The night's input, read and checked against its contract (schemas/query_product.json).

A local path is read by Spark's own readers (CSV, Parquet, JSON, Delta through delta-spark or,
without its jars, the table's current Parquet files); an object-store one by the executors with
pyarrow (taosr1/spark/remote.py); a name that is no path is a catalog table. CSV and JSON inputs
are text in `label.encoding` (utf-8 unless set): the driver checks that before Spark reads them,
since Spark's readers put U+FFFD in place of bytes they cannot decode and say nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from taosr1.storage.location import Location, resolve

ENCODING_HINT = "set its encoding, e.g. --set label.encoding=latin-1 (config key label.encoding)"
# Python codec names Java spells otherwise (Spark's `encoding` option takes Java charset names)
_JAVA_CHARSETS = {"iso8859-1": "ISO-8859-1", "cp1252": "windows-1252", "ascii": "US-ASCII", "utf-8": "UTF-8",
                  "utf-16": "UTF-16", "utf-16-le": "UTF-16LE", "utf-16-be": "UTF-16BE", "latin-1": "ISO-8859-1"}


def checked_input(spark, cfg, night):
    """Step 1: the input as a Spark DataFrame, its columns checked against the contract (ContractError,
    naming every column that is missing or mistyped: nothing is loaded or written on a mismatch)."""
    from taosr1.nightly import incremental as I
    from taosr1.spark import dispatch as D
    from taosr1.storage import contracts

    df = read_input(spark, night.input, cfg.input_format, encoding=cfg.label.encoding)
    contracts.check_input([(f.name, f.dataType.typeName()) for f in df.schema.fields], cfg.label.columns,
                          source=night.input.uri,
                          reserved=[*contracts.reserved_names(night.scheme.names), *D.HIDDEN, *I.HIDDEN])
    return df


def detect_format(source: Location, spark) -> str:
    """An existing path's format as the object-store reader tells it (a folder named *.delta is one
    too, before its first commit); a name that is no path, a catalog table."""
    from taosr1.spark import remote

    if Path(source.path).exists():
        return "delta" if source.uri.rstrip("/").endswith(".delta") else remote.detect_format(source)
    if spark.catalog.tableExists(source.uri):
        return "table"
    raise FileNotFoundError(f"input {source.uri} is neither an existing path nor a table in the Spark catalog")


def read_input(spark, source: str | Location, fmt: str = "auto", storage_options: dict[str, str] | None = None,
               encoding: str | None = None):
    """The input as a Spark DataFrame. CSV cells are text, unchanged (as `taosr1 label` reads them)."""
    from taosr1.storage.tables import check_text

    loc = resolve(source, storage_options)
    encoding = encoding or "utf-8"
    if loc.is_remote:  # listed with fsspec, read by the executors (no S3A jars needed)
        from taosr1.spark import remote

        kind = remote.detect_format(loc) if fmt == "auto" else fmt
        if kind in ("csv", "json"):
            check_text(loc, encoding, ENCODING_HINT)
        return remote.read_input(spark, loc, kind, encoding)
    fmt = detect_format(loc, spark) if fmt == "auto" else fmt
    if fmt in ("csv", "json"):
        check_text(loc, encoding, ENCODING_HINT)
    if fmt == "csv":
        return _read_csv(spark, loc.uri, encoding)
    if fmt == "parquet":
        return spark.read.parquet(loc.uri)
    if fmt == "json":
        charset = java_charset(encoding)
        reader = spark.read if charset == "UTF-8" else spark.read.option("encoding", charset).option("lineSep", "\n")
        return reader.json(loc.uri)
    if fmt == "table":
        return spark.table(loc.uri)
    from taosr1.spark.delta_spark import has_delta_spark

    if has_delta_spark(spark):
        return spark.read.format("delta").load(loc.uri)
    return _read_delta_files(spark, loc.uri)


def java_charset(encoding: str) -> str:
    """Spark's (Java's) name of the Python codec `encoding`."""
    import codecs

    name = codecs.lookup(encoding).name
    return _JAVA_CHARSETS.get(name, name)


def _read_csv(spark, source: str, encoding: str):
    from pyspark.sql import functions as F

    # RFC 4180 quoting ("" inside quotes). Spark reads an empty cell as null; a CSV has no
    # nulls, so it becomes the empty string, as `taosr1 label` reads it (empty_<field>).
    df = (spark.read.option("header", True).option("multiLine", True).option("escape", '"')
          .option("encoding", java_charset(encoding)).csv(source))
    return df.select(*[F.coalesce(F.col(f"`{c}`"), F.lit("")).alias(c) for c in df.columns])


def _read_delta_files(spark, source: str):
    """A Delta table's current files through Spark's Parquet reader (no delta-spark jars)."""
    from deltalake import DeltaTable
    from pyspark.sql.types import StructType

    table = DeltaTable(source)
    proto = table.protocol()
    if proto.min_reader_version > 1:
        raise ValueError(f"{source}: Delta reader version {proto.min_reader_version} (features "
                         f"{proto.reader_features}) needs the delta-spark jars; this session has none")
    schema = StructType.fromJson(json.loads(table.schema().to_json()))
    files = table.file_uris()
    if not files:
        return spark.createDataFrame([], schema)
    # basePath: partition values come from the folder names, typed by the table's schema.
    df = spark.read.schema(schema).option("basePath", str(Path(source).absolute())).parquet(*files)
    return df.select(*schema.fieldNames())
