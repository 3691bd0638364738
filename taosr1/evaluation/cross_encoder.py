"""The BERT-class anchor: all-MiniLM-L6-v2 fine-tuned as a four-way cross-encoder on the training pairs.

(query, item) -> one of the scheme's grades, the item being the title and, with `texts`, the
brand, colour, bullet points and description after it: what the model's prompt holds, so both
see the same evidence. 15% of the training queries (`val_size`) are held out: training runs epoch
by epoch until the validation loss has not fallen for `patience` epochs (at most `max_epochs`),
and the epoch with the lowest validation loss is kept (`curve` records every epoch). Like the
served model, it grades by CumPT at the beta of best macro-F1 on its own validation queries
(`decision: argmax` for the top label); `score` is the expected grade. Class-weighted
cross-entropy (inverse frequency to the power 0.5, as the model's label phase), AdamW with a short
warm-up, bf16 autocast where the CPU has native bf16; seeded, so a rerun gives the same grades.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from taosr1.core.cumpt import MIN_SUPPORT, best_beta, beta_curve, cumpt_index
from taosr1.evaluation.baselines import Baseline, _graded, item_texts
from taosr1.labeling.sentence import minilm_path


@dataclass
class CrossEncoder(Baseline):
    name: str = "minilm_ft"
    max_epochs: int = 12
    patience: int = 1
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 192
    texts: int = 1  # 1: the item's texts after the title; 0: the title alone
    val_size: float = 0.15
    class_weight_power: float = 0.5
    negatives_per_query: int = 0
    decision: str = "cumpt"
    seed: int = 0
    curve: list = field(default_factory=list)
    best_epoch: int = 0
    beta: float = 0.5
    _built: int = field(default=0, repr=False)
    _model: object = field(default=None, repr=False)
    _tok: object = field(default=None, repr=False)

    def _items(self, df: pd.DataFrame) -> list[str]:
        if self.texts:
            return item_texts(df, self.title_col)
        return [v if isinstance(v, str) else "" for v in df[self.title_col]]

    def _encode(self, queries: list[str], items: list[str]):
        return self._tok(queries, items, truncation="only_second", max_length=self.max_length, padding=True,
                         return_tensors="pt")

    def fit(self, train: pd.DataFrame, gold_col: str) -> "CrossEncoder":
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from taosr1.core.split import held_out_slice

        self._columns(train, f"baseline {self.name}: training frame")
        self._gold_ranks(train, gold_col)  # a bad gold value is named by its row of `train`, before any work
        fit_part, val = held_out_slice(train, self.query_col, gold_col, self.val_size, self.seed)
        k = len(self.scheme.labels)
        data = self._examples(fit_part, gold_col, negatives=True)
        held = self._examples(val, gold_col, negatives=False)
        torch.manual_seed(self.seed)
        path = str(minilm_path())
        self._tok = AutoTokenizer.from_pretrained(path)
        self._model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=k)
        counts = np.maximum(np.bincount(data[2], minlength=k), 1)
        weight = torch.tensor((counts.sum() / counts) ** self.class_weight_power, dtype=torch.float32)
        self._train(data, held, weight / weight[data[2]].mean())
        self._fit_beta(held)
        return self

    def _examples(self, df: pd.DataFrame, gold_col: str, negatives: bool) -> tuple[list[str], list[str], np.ndarray]:
        """(queries, item texts, label indices, best first), with built negatives when asked."""
        y = len(self.scheme.labels) - 1 - self._gold_ranks(df, gold_col)
        queries, items = df[self.query_col].astype(str).tolist(), self._items(df)
        if negatives and self.negatives_per_query > 0:
            from taosr1.core.negatives import negative_items

            pairs = pd.DataFrame({"query": queries, "title": items})
            neg = [(q, it["title"]) for q, _, it in negative_items(pairs, self.negatives_per_query, self.seed)]
            self._built = len(neg)
            queries += [q for q, _ in neg]
            items += [t for _, t in neg]
            y = np.concatenate([y, np.full(len(neg), len(self.scheme.labels) - 1, dtype=y.dtype)])
        return queries, items, y

    def _train(self, data, held, weight) -> None:
        import torch

        from taosr1.labeling.engines.hf import native_bf16

        opt = torch.optim.AdamW(self._model.parameters(), lr=self.lr, weight_decay=0.01)
        per_epoch = -(-len(data[2]) // self.batch_size)
        warm = max(1, per_epoch // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        rng = np.random.default_rng(self.seed)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16())
        best, best_state, stale = float("inf"), None, 0
        self.curve = []
        for epoch in range(1, self.max_epochs + 1):
            self._model.train()
            total = 0.0
            for idx in np.array_split(rng.permutation(len(data[2])), per_epoch):
                with autocast:
                    logits = self._model(**self._encode([data[0][i] for i in idx], [data[1][i] for i in idx])).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), torch.from_numpy(data[2][idx]), weight=weight)
                loss.backward()
                opt.step()
                sched.step()
                opt.zero_grad()
                total += loss.item() * len(idx)
            val_loss = self._loss(held, weight)
            self.curve.append({"epoch": epoch, "train_loss": round(total / len(data[2]), 4), "val_loss": round(val_loss, 4)})
            if val_loss < best:
                best, best_state, stale, self.best_epoch = val_loss, copy.deepcopy(self._model.state_dict()), 0, epoch
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self._model.load_state_dict(best_state)
        self._model.eval()

    def _loss(self, held, weight) -> float:
        import torch

        p = torch.from_numpy(self._probs(held[0], held[1])).clamp_min(1e-12)
        return float(torch.nn.functional.nll_loss(p.log(), torch.from_numpy(held[2]), weight=weight))

    def _fit_beta(self, held) -> None:
        if self.decision != "cumpt":
            return
        curve = beta_curve(self._probs(held[0], held[1]), held[2], self.scheme, min_support=MIN_SUPPORT)
        self.beta = best_beta(curve)

    def _probs(self, queries: list[str], items: list[str]) -> np.ndarray:
        """P(label) per pair, in the scheme's order (best first)."""
        import torch

        from taosr1.labeling.engines.hf import native_bf16

        was = self._model.training
        self._model.eval()
        out = [np.zeros((0, len(self.scheme.labels)), dtype=np.float32)]
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16())
        with torch.no_grad(), autocast:
            for i in range(0, len(queries), 64):
                logits = self._model(**self._encode(queries[i:i + 64], items[i:i + 64])).logits
                out.append(torch.softmax(logits.float(), -1).numpy())
        self._model.train(was)
        return np.concatenate(out)

    def probs(self, df: pd.DataFrame) -> np.ndarray:
        return self._probs(df[self.query_col].astype(str).tolist(), self._items(df))

    def predict(self, test: pd.DataFrame) -> pd.DataFrame:
        if self._model is None:
            raise RuntimeError(f"baseline {self.name}: call fit() before predict()")
        self._columns(test, f"baseline {self.name}: test frame")
        p = self.probs(test)
        idx = cumpt_index(p, self.beta) if self.decision == "cumpt" else p.argmax(1)
        names = [self.scheme.labels[i].name for i in idx]
        return _graded(test, names, self, p @ np.asarray(self.scheme.grades, dtype=float))

    def info(self) -> dict:
        return {"baseline": self.name, "max_epochs": self.max_epochs, "patience": self.patience, "lr": self.lr,
                "batch_size": self.batch_size, "max_length": self.max_length, "texts": bool(self.texts),
                "decision": self.decision, "beta": self.beta, "best_epoch": self.best_epoch, "curve": self.curve,
                "negatives_per_query": self.negatives_per_query, "built_negatives": self._built, "seed": self.seed}
