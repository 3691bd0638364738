"""An engine for `Labeler` that scores with the training forward (taosr1/training/label_forward.py).

The pipeline grades every trained model on the calibration slice and the held-out queries. With
`eval_forward` it grades through this engine instead of the transformers engine: the same rows,
prompts, validation, CumPT and output columns (`Labeler` does all of that), but P(label) comes
from `LabelForward`, whose frozen lower blocks (the base's, below the trained ones) run once per
prompt for every model of the run, under the bf16 autocast the stages train in. On a CPU that
makes grading three models of a fold cost about one forward pass instead of three.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from taosr1.labeling.engines.base import EngineStats


class ForwardEngine:
    """Scores prompts like the transformers engine's `score`; `frozen` leading blocks are kept."""

    name = "training-forward"

    def __init__(self, model_path: str, *, frozen: int, bf16: bool, batch_rows: int = 32):
        import torch
        from transformers import AutoModelForCausalLM

        from taosr1.labeling.engines.hf import pick_device
        from taosr1.labeling.models import load_tokenizer

        self.model_path = model_path
        self.tokenizer = load_tokenizer(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(pick_device("auto")).eval()
        self.frozen, self.bf16, self.batch_rows = frozen, bf16, batch_rows
        self.stats = EngineStats()

    def score(self, prompts: Sequence[Sequence[int]], label_ids: Sequence[int],
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        import torch

        from taosr1.training.label_forward import LabelForward

        if not len(prompts):
            return np.zeros((0, len(label_ids)))
        forward = LabelForward(self.model, prompts, label_ids, self.tokenizer.pad_token_id, bf16=self.bf16,
                               frozen=self.frozen)
        out = np.zeros((len(prompts), len(label_ids)))
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        autocast = torch.autocast(forward.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        with torch.no_grad(), autocast:
            for s in range(0, len(order), self.batch_rows):
                rows = order[s:s + self.batch_rows]
                out[rows] = torch.softmax(forward(rows).float(), -1).cpu().numpy()
                if progress:
                    progress(len(rows))
        self.stats.real_tokens += sum(len(p) for p in prompts)
        return out

    def close(self) -> None:
        self.model = None
