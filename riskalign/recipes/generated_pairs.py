"""`data.source: generated`: preference pairs sampled from the model being aligned.

The prompts come from the data config (a prompt dataset such as imdb or the
packaged movie-review openings); the pairs are the model's own samples scored by
the configured reward, generated once and cached under paths.cache_dir/pairs/,
keyed by everything that determines them: settings, prompts, the model's content and
the reward.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from datasets import DatasetDict
from omegaconf import DictConfig, OmegaConf

from riskalign.data.pair_settings import PairSettings
from riskalign.recipes.pair_generation import DATASET_MARKER, generate_pairs, pairs_identity
from riskalign.recipes.sources import distinct_prompts
from riskalign.runs.artifacts import content_digest, is_complete

log = logging.getLogger(__name__)


def pair_sources(cfg: DictConfig, source: str) -> dict[str, object]:
    """The model (its content, wherever it lies, or a hub ID) and the reward the pairs
    come from: with the settings and the prompts, what keys them."""
    path = Path(source).expanduser()
    model = {"content": content_digest(path)} if path.exists() else {"hub_id": source}
    return {"model": {**model, "dtype": cfg.model.dtype},
            "reward": OmegaConf.to_container(cfg.reward, resolve=True)}


def ensure_generated_pairs(
    cfg: DictConfig, source: str, prompt_splits: DatasetDict, tokenizer, reward
) -> Path:
    """The `dataset/` directory of the pairs for this config, generating them if needed."""
    settings = PairSettings.from_config(cfg.data.generate, key="data.generate")
    prompts = {"train": distinct_prompts(prompt_splits["train"]),
               "test": distinct_prompts(prompt_splits["eval"])}
    sources = pair_sources(cfg, source)
    identity = pairs_identity(settings, prompts, sources)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    out_dir = Path(cfg.paths.cache_dir) / "pairs" / f"{cfg.data.name}-{key[:12]}"
    if is_complete(out_dir / "dataset", DATASET_MARKER):
        log.info("Generated pairs: reusing %s", out_dir)
        return out_dir / "dataset"
    from riskalign.models.loading import load_causal_lm

    log.info("Generated pairs: sampling %d per prompt from %s into %s",
             settings.samples_per_prompt, source, out_dir)
    model = load_causal_lm(source, cfg.model.dtype, cfg.model.attn_implementation)
    return generate_pairs(model, tokenizer, prompts, reward, settings, out_dir, sources)
