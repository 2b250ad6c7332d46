"""The model's position limit against the sequences a run feeds it.

A GPT-2 style model has learned positions up to `n_positions` (others:
`max_position_embeddings`); a longer sequence fails deep inside the forward pass,
after the models loaded or mid-training. So the lengths a run can reach are checked
against the model's config alone (config.json, no weights) before anything loads:

    data.max_length                                training's pairs (prompt + response)
    data.max_prompt_length + eval.max_new_tokens   the evaluation's samples, after the prompt
    data.max_prompt_length + <sampler>.max_new_tokens   pair generation, PPO's rollouts

A prompt never exceeds data.max_prompt_length: longer records are refused or dropped
(riskalign.data.records).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from riskalign.errors import ConfigError

POSITION_KEYS = ("n_positions", "max_position_embeddings")  # GPT-2's; most others'

Length = tuple[str, int]  # (how the length is made up, e.g. "data.max_length=64", tokens)


def check_lengths(lengths: list[Length], limit: Length | None, model: str) -> None:
    """Refuse the first length above the model's `limit` ((config key, value); None: the
    config has none); `model` names the model in the message, e.g. model.name_or_path='gpt2'."""
    if limit is None:
        return
    key, positions = limit
    for text, tokens in lengths:
        if tokens > positions:
            raise ConfigError(f"{text} exceeds the model's position limit: {key}={positions} "
                              f"({model}); must be <= {positions}")


def position_limit(source: str) -> Length | None:
    """The position limit in the config of the model at `source` (an HF directory or hub ID;
    a LoRA adapter directory: its base model's), or None when the config has none or cannot
    be read (loading the model reports that itself)."""
    from transformers import AutoConfig

    adapter = Path(source) / "adapter_config.json"
    if adapter.is_file():
        import json

        source = json.loads(adapter.read_text()).get("base_model_name_or_path") or source
    try:
        values = AutoConfig.from_pretrained(source).to_dict()
    except (OSError, ValueError, KeyError):
        return None
    for key in POSITION_KEYS:
        if isinstance(values.get(key), int):
            return key, values[key]
    return None


def sampled_length(cfg: Any, new_tokens_key: str) -> Length:
    """A prompt of data.max_prompt_length tokens and `new_tokens_key` tokens sampled after it."""
    prompt = OmegaConf.select(cfg, "data.max_prompt_length")
    new = OmegaConf.select(cfg, new_tokens_key)
    return (f"data.max_prompt_length={prompt} + {new_tokens_key}={new} = {prompt + new}",
            prompt + new)


def training_lengths(cfg: Any) -> list[Length]:
    """The lengths a training run reaches: its pairs (or PPO's rollouts), the evaluation's
    samples and, with data.source=generated, the generated pairs' samples."""
    from riskalign.objectives.online import online_names

    if cfg.objective.name in online_names():
        lengths = [sampled_length(cfg, "objective.max_new_tokens")]
    else:
        lengths = [(f"data.max_length={cfg.data.max_length}", cfg.data.max_length)]
    lengths.append(sampled_length(cfg, "eval.max_new_tokens"))
    if cfg.data.source == "generated":
        lengths.append(sampled_length(cfg, "data.generate.max_new_tokens"))
    return lengths


def source_name(cfg: Any) -> str:
    """The model key a run's model comes from, as the message names it."""
    key = "init_from" if cfg.model.init_from else "name_or_path"
    return f"model.{key}={str(cfg.model[key])!r}"


def check_training_lengths(cfg: Any, source: str) -> None:
    """A training run's lengths against the position limit of the model at `source` (what
    policy and reference load from): after the world or a GGUF conversion exists, before
    any weights load."""
    check_lengths(training_lengths(cfg), position_limit(source), source_name(cfg))


def check_sampled_length(cfg: Any, source: str, new_tokens_key: str,
                         model: str | None = None) -> None:
    """A sampler's prompt + `new_tokens_key` tokens against the model at `source` (evaluate:
    eval.max_new_tokens; pairs: pairs.max_new_tokens); `model` names it (default: the
    config's model key)."""
    check_lengths([sampled_length(cfg, new_tokens_key)], position_limit(source),
                  model or source_name(cfg))
