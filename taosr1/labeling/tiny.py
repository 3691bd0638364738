"""A tiny causal LM built on the spot: random weights and a byte-level BPE tokenizer trained
on the bundled sample. For tests and smoke runs where no real model may be downloaded.

Head size 32, so that vLLM's CPU attention backend can run it too.
"""

from __future__ import annotations

from pathlib import Path

from taosr1.core.prompts import CHATML
from taosr1.core.resources import sample_path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    import pandas as pd

    df = pd.read_csv(sample_path(), dtype=str, keep_default_na=False)
    extra = ["system", "user", "assistant", "Query: Title: Grades: Answer:", "Excellent Related Mismatch Irrelevant"]
    return df["query"].tolist() + df["product_title"].tolist() + extra


def build_tiny_model(out_dir: str | Path, *, vocab_size: int = 1024, hidden: int = 64, layers: int = 2,
                     heads: int = 2, seed: int = 0) -> Path:
    """Write a random-weight Llama-shaped model and its tokenizer to `out_dir`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHATML
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(out)
    return out
