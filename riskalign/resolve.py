"""From config to things on disk: the embedded world, the model to load, the prompts.

Shared by every entry point (train, pairs, evaluate) so that `model=...` and
`data=...` mean the same everywhere.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from riskalign.config_checks import ConfigError

WORLD_MODEL = "world"


def ensure_world(cfg: DictConfig):
    """The embedded world of `data=reviews` (built once, then cached), else None."""
    if cfg.data.source != "world":
        return None
    from riskalign.worlds.reviews import ensure_reviews_world

    return ensure_reviews_world(
        OmegaConf.to_container(cfg.data.world, resolve=True), cfg.paths.cache_dir
    )


def check_world_model(cfg: DictConfig) -> None:
    """`model.name_or_path: world` only exists alongside the embedded world's data."""
    uses_world = (cfg.model.init_from or cfg.model.name_or_path) == WORLD_MODEL
    if uses_world and cfg.data.source != "world":
        raise ConfigError(
            f"model.name_or_path={WORLD_MODEL!r} (model={cfg.model.name}) needs the embedded "
            f"world's data (data=reviews), not data={cfg.data.name}: set model.name_or_path "
            "or model.init_from to a model"
        )


def load_configured_data(cfg: DictConfig, world, tokenizer):
    """The checked standard-column splits of `cfg.data` and their kind; the embedded world
    supplies its dataset directory as the path. Generates nothing (see data.generated)."""
    from riskalign.data.loading import load_data

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    return load_data(data_cfg, tokenizer, path=str(world.dataset_dir) if world else None)


def model_source(cfg: DictConfig, world) -> str:
    """What policy and reference load from: `model.init_from` (an SFT checkpoint) if set,
    else `model.name_or_path`; `world` is the embedded world's model; a .gguf file is
    converted once to a cached HF directory."""
    from riskalign.models.loading import resolve_model_source

    check_world_model(cfg)
    name = cfg.model.init_from or cfg.model.name_or_path
    if name == WORLD_MODEL:
        return str(world.model_dir)
    return resolve_model_source(str(name), cfg.paths.cache_dir)


def distinct_prompts(split) -> list[str]:
    """A split's prompts, each once, in dataset order."""
    return list(dict.fromkeys(split["prompt"]))


def held_out_prompts(split, count: int) -> list[str]:
    """The first `count` distinct prompts of the held-out split, refused if there are fewer."""
    distinct = distinct_prompts(split)
    if len(distinct) < count:
        raise ConfigError(
            f"eval.num_prompts={count} exceeds the {len(distinct)} distinct prompts of the "
            f"held-out split: must be <= {len(distinct)}"
        )
    return distinct[:count]
