"""model.compile: the policy and the reference compiled in place; refused where the
objective differentiates a gradient."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from riskalign.config.checks import check_config
from riskalign.errors import ConfigError
from riskalign.models.loading import compiled
from tests.conftest import compose_config


def _model() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1,
                                      n_head=2))


@pytest.mark.parametrize("setting", [True, False])
def test_compiled_follows_the_setting_and_keeps_the_module(setting):
    model = _model()
    result = compiled(model, OmegaConf.create({"compile": setting}))
    assert result is model, "compiling is in place: the type, state dict and save_pretrained stay"
    assert (getattr(model, "_compiled_call_impl", None) is not None) == setting


def test_every_model_config_states_compile_off_by_default():
    for name in ("tiny", "gpt2", "smollm2-135m", "llama-3.2-1b"):
        assert compose_config(f"model={name}").model.compile is False


def test_compile_with_the_wasserstein_penalty_is_refused_in_one_line():
    with pytest.raises(ConfigError) as caught:
        check_config(compose_config("objective=wdpo", "model.compile=true"))
    message = str(caught.value)
    assert "model.compile=true" in message and "wasserstein" in message
    assert "\n" not in message


def test_compile_must_be_a_boolean():
    with pytest.raises(ConfigError, match="model.compile"):
        check_config(compose_config("model.compile=sometimes"))
