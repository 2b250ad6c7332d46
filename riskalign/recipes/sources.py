"""From config to things on disk: the embedded world, the model to load, the prompts.

Shared by every entry point (train, pairs, evaluate) so that `model=...` and
`data=...` mean the same everywhere.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from riskalign.worlds.settings import WORLD_MODEL, check_world_model

log = logging.getLogger(__name__)



def ensure_world(cfg: DictConfig):
    """The embedded world of `data=reviews` (built once, then cached), else None."""
    if cfg.data.source != "world":
        return None
    from riskalign.worlds.reviews import ensure_reviews_world

    return ensure_reviews_world(
        OmegaConf.to_container(cfg.data.world, resolve=True), cfg.paths.cache_dir
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
    from riskalign.runs.artifacts import check_policy

    check_world_model(cfg)
    key = "model.init_from" if cfg.model.init_from else "model.name_or_path"
    name = cfg.model.init_from or cfg.model.name_or_path
    if name == WORLD_MODEL:
        return str(world.model_dir)
    check_policy(str(name), key)  # another run's policy/ is verified before it loads
    return resolve_model_source(str(name), cfg.paths.cache_dir)


def distinct_prompts(split) -> list[str]:
    """A split's prompts, each once, in dataset order."""
    return list(dict.fromkeys(split["prompt"]))


def eval_sizes(eval_cfg, split, pairs: bool = True) -> tuple[list[str], int]:
    """The evaluation's prompts and number of held-out pairs: eval.num_prompts and
    eval.num_pairs, each capped at what the held-out split has, with one warning
    naming both when either is (a small dataset runs with the defaults)."""
    distinct = distinct_prompts(split)
    prompts = distinct[: eval_cfg.num_prompts]
    num_pairs = min(eval_cfg.num_pairs, len(split)) if pairs else eval_cfg.num_pairs
    capped = [f"eval.{key}={asked} to {got}" for key, asked, got in (
        ("num_prompts", eval_cfg.num_prompts, len(prompts)),
        ("num_pairs", eval_cfg.num_pairs, num_pairs)) if got < asked]
    if capped:
        log.warning("the held-out split has %d distinct prompts and %d rows: capping %s "
                    "(hold out more with data.eval_fraction)", len(distinct), len(split),
                    " and ".join(capped))
    return prompts, num_pairs
