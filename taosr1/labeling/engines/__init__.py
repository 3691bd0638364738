"""Engines: `transformers` (CPU/GPU, default) and `vllm` (GPU production, CPU build for tests)."""

from __future__ import annotations

from taosr1.labeling.engines.base import Engine, EngineConfig, EngineStats, length_batches

__all__ = ["Engine", "EngineConfig", "EngineStats", "length_batches", "make_engine"]


def make_engine(cfg: EngineConfig) -> Engine:
    """Create the engine `cfg.engine` names, resolving an empty `model` to the default model."""
    from taosr1.labeling.models import resolve_model

    model = resolve_model(cfg.model)
    if cfg.engine == "transformers":
        from taosr1.labeling.engines.hf import TransformersEngine

        return TransformersEngine(model, cfg)
    if cfg.engine == "vllm":
        from taosr1.labeling.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, cfg)
    raise ValueError(f"unknown engine {cfg.engine!r}")
