"""`data.source: generated`: preference pairs sampled from the model being aligned.

The prompts come from the data config (a prompt dataset such as imdb or the
packaged movie-review openings); the pairs are the model's own samples scored by
the configured reward, generated once and cached under paths.cache_dir/pairs/,
keyed by everything that determines them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from datasets import DatasetDict
from omegaconf import DictConfig, OmegaConf

from riskalign.artifacts import is_complete
from riskalign.data.pair_generation import DATASET_MARKER, PairSettings, generate_pairs
from riskalign.resolve import distinct_prompts

log = logging.getLogger(__name__)


def _model_identity(source: str) -> dict[str, object]:
    """A local model directory is identified by its files' sizes and times, a hub ID by name."""
    path = Path(source)
    if not path.is_dir():
        return {"source": source}
    files = sorted(p for p in path.iterdir() if p.is_file())
    return {"source": str(path.resolve()),
            "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def pairs_dir(cfg: DictConfig, source: str) -> Path:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    identity = {
        "model": _model_identity(source),
        "data": {key: data.get(key) for key in
                 ("path", "subset", "format", "prompt_tokens", "train_split", "eval_split")},
        "reward": OmegaConf.to_container(cfg.reward, resolve=True),
        "generate": data["generate"],
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return Path(cfg.paths.cache_dir) / "pairs" / f"{cfg.data.name}-{key[:12]}"


def ensure_generated_pairs(
    cfg: DictConfig, source: str, prompt_splits: DatasetDict, tokenizer, reward
) -> Path:
    """The `dataset/` directory of the pairs for this config, generating them if needed."""
    settings = PairSettings.from_config(cfg.data.generate, key="data.generate")
    out_dir = pairs_dir(cfg, source)
    if is_complete(out_dir / "dataset", DATASET_MARKER):
        log.info("Generated pairs: reusing %s", out_dir)
        return out_dir / "dataset"
    from riskalign.models.loading import load_causal_lm

    log.info("Generated pairs: sampling %d per prompt from %s into %s",
             settings.samples_per_prompt, source, out_dir)
    model = load_causal_lm(source, cfg.model.dtype, cfg.model.attn_implementation)
    prompts = {"train": distinct_prompts(prompt_splits["train"]),
               "test": distinct_prompts(prompt_splits["eval"])}
    return generate_pairs(model, tokenizer, prompts, reward, settings, out_dir)
