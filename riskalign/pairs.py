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

from riskalign.config.checks import check_fields
from riskalign.config.keys import refuse_unknown_keys
from riskalign.config.launch import exit_on_resource_error
from riskalign.errors import ConfigError

log = logging.getLogger("riskalign.pairs")


def make_pairs(cfg: DictConfig) -> Path:
    """Generate (or resume, or reuse) the pairs `cfg` describes; return the dataset directory."""
    from riskalign.data.pair_settings import PairSettings
    from riskalign.recipes.generated_pairs import pair_sources
    from riskalign.recipes.pair_generation import claim_output, generate_pairs, pairs_identity

    refuse_unknown_keys(cfg)
    check_fields(cfg)  # the model, data and eval keys it shares with training
    settings = PairSettings.from_config(OmegaConf.to_container(cfg.pairs, resolve=True))
    import transformers

    from riskalign.models.loading import load_causal_lm, load_tokenizer
    from riskalign.recipes.sources import (
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
    sources = pair_sources(cfg, source)
    # refuses, before the model loads, an output holding pairs made otherwise
    claim_output(Path(cfg.output), pairs_identity(settings, prompts, sources))
    reward = instantiate(cfg.reward)
    model = load_causal_lm(source, cfg.model.dtype, cfg.model.attn_implementation)
    dataset = generate_pairs(model, tokenizer, prompts, reward, settings, cfg.output, sources)
    log.info("Pairs written to %s (load with data=local data.path=%s)", dataset, dataset)
    return dataset


@hydra.main(version_base="1.3", config_path="../conf", config_name="pairs")
def main(cfg: DictConfig) -> None:
    try:
        make_pairs(cfg)
    except ConfigError as error:
        print(f"riskalign.pairs: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        exit_on_resource_error("riskalign.pairs", error)


if __name__ == "__main__":
    from riskalign.config.command_line import refuse_unknown_choices
    from riskalign.config.launch import refuse_before_launch

    refuse_unknown_choices("riskalign.pairs")  # one line and exit 2, before Hydra composes
    refuse_before_launch("riskalign.pairs", "pairs")  # keys without +, unwritable paths
    main()
