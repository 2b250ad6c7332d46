"""The embedded world's settings (`data.world`, conf/data/reviews.yaml): their schema.

Every key the world builder (riskalign.worlds.reviews) reads, typed with its range in
WORLD_FIELDS; a key outside it, a missing one or a bad value is refused in one line
before anything is built:

    data.world.num_reviews=-5 is not a known key: allowed keys are corpus_size, model, ...
    data.world.corpus_size=-5 is out of range: must be >= 1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from riskalign.config.fields import Choice, Integer, Pair, Real, unknown_key
from riskalign.errors import ConfigError

# model.name_or_path of the embedded world's own model (built with its data)
WORLD_MODEL = "world"

PREFIX = "data.world"
POSITIVE = Integer(minimum=1)


def _activation(key: str, value: Any) -> str:
    from transformers.activations import ACT2FN  # the names GPT-2's MLP looks up

    return Choice(tuple(ACT2FN))(key, value)


# key below data.world -> its check; every one is required
WORLD_FIELDS: dict[str, Any] = {
    "seed": Integer(minimum=0, maximum=2**32 - 1),
    "corpus_size": POSITIVE,  # grammar reviews the SFT base trains on
    # the SFT base: GPT2Config's arguments
    "model.n_layer": POSITIVE,
    "model.n_embd": POSITIVE,
    "model.n_head": POSITIVE,
    "model.n_positions": POSITIVE,
    "model.activation_function": _activation,
    "sft.steps": POSITIVE,
    "sft.batch_size": POSITIVE,
    "sft.lr": Real(low=0.0),
    "pairs.train_prompts": POSITIVE,
    "pairs.test_prompts": POSITIVE,
    "pairs.prompt_words": Pair(Integer(minimum=1)),
    "pairs.max_new_tokens": POSITIVE,
    "pairs.temperature": Real(low=0.0),  # two draws per prompt: greedy would tie them all
    "pairs.bt_temperature": Real(low=0.0),
    "pairs.batch_size": POSITIVE,
}
BLOCKS = sorted({key.rsplit(".", 1)[0] for key in WORLD_FIELDS if "." in key})


def check_world_settings(world: Any, prefix: str = PREFIX) -> dict[str, Any]:
    """Refuse world settings (a plain mapping, e.g. OmegaConf.to_container of data.world)
    that the builder cannot use; returns them."""
    if not isinstance(world, Mapping):
        raise ConfigError(f"{prefix}={world!r} is not a block: must hold "
                          f"{', '.join(_children(''))}")
    _refuse_unknown(world, "", prefix)
    for key, check in WORLD_FIELDS.items():
        node: Any = world
        for part in key.split("."):
            if part not in node:
                raise ConfigError(f"{prefix}.{key} is missing: the world builder needs it")
            node = node[part]
        check(f"{prefix}.{key}", node)
    model, pairs = world["model"], world["pairs"]
    if model["n_embd"] % model["n_head"]:
        raise ConfigError(f"{prefix}.model.n_embd={model['n_embd']} is invalid: must be a "
                          f"multiple of {prefix}.model.n_head={model['n_head']}")
    low, high = pairs["prompt_words"]
    if low > high:
        raise ConfigError(f"{prefix}.pairs.prompt_words={[low, high]} is invalid: must be "
                          "[fewest, most] words, fewest <= most")
    longest = high + 1 + pairs["max_new_tokens"]  # a word is a token; +1 for <bos>
    if longest > model["n_positions"]:
        raise ConfigError(
            f"{prefix}.model.n_positions={model['n_positions']} cannot hold a prompt of {high} "
            f"words (+1 for <bos>) plus {prefix}.pairs.max_new_tokens={pairs['max_new_tokens']} "
            f"sampled tokens: must be >= {longest}"
        )
    return dict(world)


def _children(block: str) -> list[str]:
    """The names a block (""  for the top) may hold."""
    depth = block.count(".") + 1 if block else 0
    return sorted({key.split(".")[depth] for key in WORLD_FIELDS
                   if not block or key.startswith(block + ".")})


def _refuse_unknown(node: Mapping[str, Any], block: str, prefix: str) -> None:
    allowed = _children(block)
    for name, value in node.items():
        path = f"{block}.{name}" if block else str(name)
        if name not in allowed:
            raise unknown_key(f"{prefix}.{path}", value, allowed)
        if path in BLOCKS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}.{path}={value!r} is not a block: must hold "
                                  f"{', '.join(_children(path))}")
            _refuse_unknown(value, path, prefix)


def check_world_model(cfg: Any) -> None:
    """`model.name_or_path: world` only exists alongside the embedded world's data."""
    uses_world = (cfg.model.init_from or cfg.model.name_or_path) == WORLD_MODEL
    if uses_world and cfg.data.source != "world":
        raise ConfigError(
            f"model.name_or_path={WORLD_MODEL!r} (model={cfg.model.name}) needs the embedded "
            f"world's data (data=reviews), not data={cfg.data.name}: set model.name_or_path "
            "or model.init_from to a model"
        )
