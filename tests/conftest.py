"""Shared fixtures: a tiny real model built on the spot, and the bundled sample."""

from __future__ import annotations

import os

import pandas as pd
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# gcsfs asks a bucket for its type over gRPC before use; the GCS emulator has no gRPC endpoint and each
# ask would wait out a 60 s timeout. Set before Spark starts, so its Python workers inherit it.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from taosr1.labeling.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="session")
def sample_df() -> pd.DataFrame:
    from taosr1.core.resources import sample_path

    return pd.read_csv(sample_path(), dtype=str, keep_default_na=False)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    from taosr1.labeling.engines import EngineConfig, make_engine

    return make_engine(EngineConfig(model=tiny_model, threads=2))


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (2 cores) for every Spark test: sessions take seconds to start."""
    from taosr1.spark.session import get_session, load_profile

    profile = load_profile("local")
    profile.master = "local[2,2]"  # 2 cores; a failed task is retried once (fault-injection tests)
    session = get_session(profile)
    yield session
    session.stop()
