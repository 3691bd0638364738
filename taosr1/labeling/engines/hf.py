"""The transformers engine: post-CoT scoring in one forward pass, and HF `generate`.

Scoring runs the decoder body only, gathers the hidden state at each prompt's last
position and multiplies it by the label tokens' rows of the output embedding: no
logits for the whole vocabulary, no logits at other positions. The prefix every prompt
shares (system prompt) runs once per call and its KV cache is reused by every batch.
Prompts are right-padded in length-sorted batches, or, on a GPU, packed into sequences of
`max_batch_tokens` with flex attention keeping them apart (taosr1.labeling.engines.packing); either
way a row's result does not depend on its batch. Sampling draws each row's tokens with its
own seed (from the call's seed and the prompt, as the vLLM engine does), so a prompt's
samples do not depend on its batch either.
"""

from __future__ import annotations

import contextlib
import os
from typing import Sequence

import numpy as np

from taosr1.labeling.engines.base import EngineConfig, EngineStats, Progress, length_batches, prompt_seed, softmax_rows


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        local = os.environ.get("LOCAL_RANK")  # one GPU per process under a launcher (accelerate, torchrun)
        return f"cuda:{local}" if local is not None else "cuda"
    return requested


def native_bf16() -> bool:
    """bf16 autocast pays off: CUDA with bf16, or a CPU with native bf16 (AMX / AVX512-bf16)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


MIN_SHARED_PREFIX = 16  # below this, a separate prefix pass is not worth its overhead


class TransformersEngine:
    name = "transformers"

    def __init__(self, model_path: str, cfg: EngineConfig):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        from taosr1.labeling.models import check_model_dir, load_tokenizer

        hf_logging.disable_progress_bar()  # keep the job's own progress and summary readable

        check_model_dir(model_path)
        self.cfg = cfg
        self.model_path = str(model_path)
        self.device = pick_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.dtype = _torch_dtype(cfg.dtype, self.device)
        self.tokenizer = load_tokenizer(model_path)
        try:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype, attn_implementation="sdpa")
        except Exception as e:  # a truncated or foreign weights file: say which folder
            raise RuntimeError(
                f"could not load the model in {model_path}: {type(e).__name__}: {e}. "
                "Check that the folder holds a complete Hugging Face causal LM (config.json and weights)."
            ) from e
        self._attach(model)

    @classmethod
    def from_model(cls, model, tokenizer, cfg: EngineConfig, name: str = "(in memory)") -> "TransformersEngine":
        """An engine around a model already in memory (benchmarks of random-weight shapes).
        `tokenizer` may be None when only `score` is used: padding then uses token id 0."""
        self = cls.__new__(cls)
        self.cfg, self.model_path, self.tokenizer = cfg, name, tokenizer
        self.device = str(next(model.parameters()).device)
        self.dtype = next(model.parameters()).dtype
        self._attach(model)
        return self

    def _attach(self, model) -> None:
        self.model = model.to(self.device).eval()
        self.body = getattr(self.model, self.model.base_model_prefix)
        self.head = self.model.get_output_embeddings()
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok is not None else None
        if self.pad_id is None:
            self.pad_id = (tok.eos_token_id if tok is not None else None) or 0
        self.stats = EngineStats()

    def _label_head(self, label_ids: Sequence[int]):
        import torch

        idx = torch.tensor(list(label_ids), device=self.device)
        w = self.head.weight.index_select(0, idx).float()
        b = self.head.bias.index_select(0, idx).float() if getattr(self.head, "bias", None) is not None else None
        return w, b

    def _prefix_len(self, prompts: Sequence[Sequence[int]]) -> int:
        """Length of the prefix every prompt shares (system prompt, template), or 0 when it is
        shorter than MIN_SHARED_PREFIX. Each prompt keeps at least one token of its own,
        whose hidden state gives its answer."""
        if not self.cfg.reuse_prefix or len(prompts) < 2:
            return 0
        first = prompts[0]
        n = min(len(p) for p in prompts) - 1
        for p in prompts[1:]:
            k = 0
            while k < n and p[k] == first[k]:
                k += 1
            n = k
            if n < MIN_SHARED_PREFIX:
                return 0
        return n

    def _shared_prefix(self, prompts: Sequence[Sequence[int]]):
        """KV cache of the shared prefix, run once per call and reused by every padded batch:
        on short pairs it is most of the work saved."""
        import torch

        n = self._prefix_len(prompts)
        if not n:
            return 0, None
        with torch.inference_mode():
            out = self.body(input_ids=torch.tensor([list(prompts[0][:n])], device=self.device), use_cache=True)
        self.stats.computed_tokens += n
        return n, out.past_key_values

    @property
    def packed(self) -> bool:
        """Whether `score` packs prompts (`batching`; auto packs on a GPU, pads on a CPU)."""
        return self.cfg.batching == "packed" or (self.cfg.batching == "auto" and self.device.startswith("cuda"))

    def score(self, prompts: Sequence[Sequence[int]], label_ids: Sequence[int], progress: Progress | None = None) -> np.ndarray:
        out = np.zeros((len(prompts), len(label_ids)), dtype=np.float64)
        if not len(prompts):
            return out
        if min(len(p) for p in prompts) == 0:
            raise ValueError("an empty prompt cannot be scored")
        w, b = self._label_head(label_ids)

        def head(h) -> np.ndarray:  # hidden states at the answer positions -> P(label)
            logits = h.float() @ w.T
            return softmax_rows((logits if b is None else logits + b).cpu().numpy())

        (self._score_packed if self.packed else self._score_padded)(prompts, head, out, progress)
        return out

    def _score_padded(self, prompts, head, out: np.ndarray, progress: Progress | None) -> None:
        """Right-padded, length-sorted batches after the shared prefix's reused KV cache."""
        import copy

        import torch

        shared, cache = self._shared_prefix(prompts)
        lengths = [len(p) - shared for p in prompts]  # the tokens each row still needs to run
        for batch in length_batches(lengths, self.cfg.max_batch_tokens, self.cfg.max_batch_size):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), shared + width), dtype=torch.long)
            mask[:, :shared] = 1
            for r, i in enumerate(batch):  # right padding: a row never attends to its padding
                ids[r, : lengths[i]] = torch.tensor(prompts[i][shared:])
                mask[r, shared : shared + lengths[i]] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            last = torch.tensor([lengths[i] - 1 for i in batch], device=self.device)
            past = None
            if cache is not None:
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(batch))
            with torch.inference_mode():
                hidden = self.body(input_ids=ids, attention_mask=mask, past_key_values=past, use_cache=past is not None).last_hidden_state
                out[batch] = head(hidden[torch.arange(len(batch), device=self.device), last])
            real = sum(lengths[i] for i in batch)
            self._count(real + shared * len(batch), width * len(batch), width * len(batch) - real, progress, len(batch))

    def _score_packed(self, prompts, head, out: np.ndarray, progress: Progress | None) -> None:
        """Packs of `max_batch_tokens` tokens, the shared prefix once at the head of each
        (taosr1.labeling.engines.packing); no row cap, no padding but the last block's."""
        import torch

        from taosr1.labeling.engines.packing import block_mask, pack_rows, register_attention

        shared = self._prefix_len(prompts)
        with self._attention(register_attention()), torch.inference_mode():
            for pack in pack_rows(prompts, shared, self.cfg.max_batch_tokens):
                hidden = self.body(
                    input_ids=torch.tensor([pack.ids], device=self.device),
                    position_ids=torch.tensor([pack.pos], device=self.device),
                    attention_mask=block_mask(pack.doc, self.device),
                    use_cache=False,
                ).last_hidden_state[0]
                out[pack.rows] = head(hidden[torch.tensor(pack.last, device=self.device)])
                real = sum(len(prompts[i]) for i in pack.rows)
                self._count(real, len(pack.ids), pack.padding, progress, len(pack.rows))

    @contextlib.contextmanager
    def _attention(self, implementation: str):
        """The model's attention kernel for the duration of a call (generate keeps SDPA)."""
        before = self.model.config._attn_implementation
        if before != implementation:
            self.model.set_attn_implementation(implementation)
        try:
            yield
        finally:
            if before != implementation:
                self.model.set_attn_implementation(before)

    def _count(self, real: int, computed: int, padding: int, progress: Progress | None, rows: int) -> None:
        self.stats.real_tokens += real
        self.stats.computed_tokens += computed
        self.stats.padding_tokens += padding
        self.stats.forward_passes += 1
        if progress:
            progress(rows)

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
        import torch
        from transformers import LogitsProcessorList

        results: list[list[str]] = [[] for _ in prompts]
        if not len(prompts):
            return results
        lengths = [len(p) for p in prompts]
        # generate() grows each row by max_new_tokens; budget the batch for that.
        budget = max(self.cfg.max_batch_tokens // max(n, 1), 1)
        grown = [x + max_new_tokens for x in lengths]
        eos = [t for t in {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int) and t >= 0]
        for batch in length_batches(grown, budget, self.cfg.max_batch_size):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):  # left padding, as generate() expects
                ids[r, width - lengths[i] :] = torch.tensor(prompts[i])
                mask[r, width - lengths[i] :] = 1
            if temperature > 0:  # n rows per prompt, each sampled with its own seed
                ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
                seeds = [prompt_seed(seed, prompts[i]) * 1_000_003 + k for i in batch for k in range(n)]
                opts = {"logits_processor": LogitsProcessorList([_SeededSampler(seeds, temperature)]),
                        "num_return_sequences": 1}
            else:
                opts = {"num_return_sequences": n}
            with torch.inference_mode():
                gen = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    do_sample=False,  # sampling, when asked, is _SeededSampler's Gumbel-max
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.pad_id,
                    eos_token_id=eos or None,
                    **opts,
                )
            new = gen[:, width:].cpu()
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for r, i in enumerate(batch):
                results[i] = texts[r * n : (r + 1) * n]
            self.stats.forward_passes += 1
            if progress:
                progress(len(batch))
        return results


class _SeededSampler:
    """Temperature sampling with one seed per row, as a logits processor for greedy decoding.

    Gumbel-max: argmax(logits / T + Gumbel noise) is a draw from softmax(logits / T). The noise
    of row r at step t comes from a generator seeded with (seeds[r], t) alone, so a row draws
    the same tokens in any batch (HF's own sampling shares one random stream across the batch).
    Batches of other shapes can still change a logit in its last float bits, which flips a
    token only where two candidates tie to that precision. The noise comes from the device's
    own generator, so a CPU and a GPU draw different (equally valid) samples for one seed.
    """

    def __init__(self, seeds: Sequence[int], temperature: float):
        self.seeds = list(seeds)
        self.temperature = temperature
        self.step = 0

    def __call__(self, input_ids, scores):
        import torch

        # noise drawn where the scores are: on a GPU, no vocabulary-sized host-to-device copy per step
        gen = torch.Generator(device=scores.device)
        u = torch.empty(scores.shape, dtype=torch.float32, device=scores.device)
        for r, s in enumerate(self.seeds):
            gen.manual_seed((s * 1_000_003 + self.step) % (2**63 - 1))
            u[r].uniform_(generator=gen)
        self.step += 1
        gumbel = -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))
        return scores.float() / self.temperature + gumbel
