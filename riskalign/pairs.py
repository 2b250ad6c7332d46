"""`python -m riskalign.pairs`: a preference dataset from a model's own scored samples.

K completions per prompt of the data config's train and eval splits, scored by
the reward config, one (chosen, rejected) pair kept per prompt; written to
`<output>/dataset` for `data=local data.path=<output>/dataset`. Interrupted runs
resume where they stopped.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from riskalign.config_checks import ConfigError, check_fields
from riskalign.config_keys import refuse_unknown_keys

log = logging.getLogger("riskalign.pairs")


def make_pairs(cfg: DictConfig) -> Path:
    """Generate (or resume, or reuse) the pairs `cfg` describes; return the dataset directory."""
    from riskalign.data.pair_generation import PairSettings, generate_pairs

    refuse_unknown_keys(cfg)
    check_fields(cfg)  # the model, data and eval keys it shares with training
    settings = PairSettings.from_config(OmegaConf.to_container(cfg.pairs, resolve=True))
    import transformers

    from riskalign.models.loading import load_causal_lm, load_tokenizer
    from riskalign.resolve import (
        distinct_prompts,
        ensure_world,
        load_configured_data,
        model_source,
    )

    transformers.logging.set_verbosity_error()
    world = ensure_world(cfg)
    source = model_source(cfg, world)
    from riskalign.models.limits import check_sampled_length

    check_sampled_length(cfg, source, "pairs.max_new_tokens")  # before any weights load
    tokenizer = load_tokenizer(source)
    splits, _ = load_configured_data(cfg, world, tokenizer)
    prompts = {"train": distinct_prompts(splits["train"]), "test": distinct_prompts(splits["eval"])}
    reward = instantiate(cfg.reward)
    model = load_causal_lm(source, cfg.model.dtype, cfg.model.attn_implementation)
    dataset = generate_pairs(model, tokenizer, prompts, reward, settings, cfg.output)
    log.info("Pairs written to %s (load with data=local data.path=%s)", dataset, dataset)
    return dataset


@hydra.main(version_base="1.3", config_path="../conf", config_name="pairs")
def main(cfg: DictConfig) -> None:
    try:
        make_pairs(cfg)
    except ConfigError as error:
        print(f"riskalign.pairs: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    from riskalign.cli_checks import refuse_unknown_choices

    refuse_unknown_choices("riskalign.pairs")  # one line and exit 2, before Hydra composes
    main()
