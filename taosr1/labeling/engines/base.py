"""The engine interface: score prompts (one forward pass) and generate reasoning text."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from taosr1.core.config import ConfigError

ENGINES = ("transformers", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BATCHING = ("auto", "padded", "packed")


@dataclass
class EngineConfig:
    """Options of every engine; each engine reads the ones that apply to it.

    Parameters:
        engine: `transformers` (CPU and GPU, the light default) or `vllm`.
        model: a local Hugging Face model folder; empty means the embedded default model.
        dtype: `auto` is bfloat16 on CUDA, float32 on CPU.
        device: `auto`, `cpu`, `cuda` or `cuda:N`.
        threads: CPU threads for torch; 0 leaves torch's default.
        max_batch_tokens: tokens per forward pass: rows x longest prompt when padded, the pack's
            length when packed.
        max_batch_size: rows per padded forward pass, whatever their length (packs have no row cap).
        batching: transformers engine: `padded` (length-sorted batches after the shared prefix's
            KV cache), `packed` (prompts packed into one sequence, flex attention keeping them
            apart: large matrices for a GPU), or `auto` (packed on CUDA, padded on a CPU).
        max_model_len, gpu_memory_utilization, enable_prefix_caching, tensor_parallel_size:
            vLLM engine options.
        reuse_prefix: transformers engine: run the prefix shared by all prompts of a call once
            and reuse its KV cache (the counterpart of vLLM's prefix caching).
    """

    engine: str = "transformers"
    model: str = ""
    dtype: str = "auto"
    device: str = "auto"
    threads: int = 0
    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.85
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = 1
    reuse_prefix: bool = True
    batching: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.batching not in BATCHING:
            raise ConfigError(f"batching must be one of {BATCHING}, got {self.batching!r}")
        if self.max_batch_tokens < 1 or self.max_batch_size < 1:
            raise ConfigError(
                f"max_batch_tokens and max_batch_size must be >= 1, got {self.max_batch_tokens}, {self.max_batch_size}"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")


@dataclass
class EngineStats:
    """Token counters. real: prompt tokens scored; computed: positions run through the model
    (a reused shared prefix counts once); padding: computed positions that were padding."""

    real_tokens: int = 0
    computed_tokens: int = 0
    padding_tokens: int = 0
    forward_passes: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def padding_efficiency(self) -> float:
        """Share of computed positions that were real tokens, not padding."""
        return 1.0 - self.padding_tokens / self.computed_tokens if self.computed_tokens else 1.0


Progress = Callable[[int], None]


class Engine(Protocol):
    name: str
    model_path: str
    tokenizer: object
    stats: EngineStats

    def score(self, prompts: Sequence[Sequence[int]], label_ids: Sequence[int], progress: Progress | None = None) -> np.ndarray:
        """P(label) for each prompt: softmax over the label tokens' logits at the first answer position.

        Returns float64 array [len(prompts), len(label_ids)], rows summing to 1.
        """
        ...

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
        """`n` completions per prompt (greedy when temperature is 0)."""
        ...


def length_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first.

    A batch grows while rows x longest length stays within `max_batch_tokens`; a prompt
    longer than the budget runs alone. Sorting keeps padding (computed minus real tokens) small.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * longest > max_batch_tokens or len(cur) >= max_batch_size):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def prompt_seed(seed: int, prompt: Sequence[int]) -> int:
    """A sampling seed from the run's seed and the prompt itself: a row's samples do not
    depend on which batch, chunk or Spark partition it lands in."""
    return (seed * 1_000_003 + zlib.crc32(np.asarray(prompt, dtype=np.int64).tobytes())) % (2**31 - 1)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
