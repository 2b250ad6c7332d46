"""`python -m riskalign.evaluate`: a trained policy scored on held-out prompts.

Evaluation sets of instructions with reference answers (alpacaeval) give a win
rate against the references; prompt or pair datasets give reward mean, reward
tail and KL to the reference model, as in training's evaluation. Results go to
`evaluation.json` (and `samples.jsonl` for win rates) in the run directory.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from riskalign.config_checks import ConfigError

log = logging.getLogger("riskalign.evaluate")


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    import transformers

    from riskalign.artifacts import write_json_atomic, write_text_atomic
    from riskalign.config_checks import check_fields, check_local_path
    from riskalign.evaluation.alignment import EvalSettings, evaluate_samples
    from riskalign.evaluation.win_rate import win_rate
    from riskalign.models.loading import load_causal_lm, load_tokenizer
    from riskalign.resolve import ensure_world, held_out_prompts, load_configured_data, model_source

    check_fields(cfg)  # the model, data and eval keys it shares with training
    check_local_path(str(cfg.policy), "policy")
    settings = EvalSettings.from_config(cfg.eval)
    transformers.logging.set_verbosity_error()
    world = ensure_world(cfg)
    tokenizer = load_tokenizer(str(cfg.policy))
    splits, kind = load_configured_data(cfg, world, tokenizer)
    held_out, count = splits["eval"], cfg.eval.num_prompts
    if kind == "references" and count > len(held_out):  # every row counts, as in AlpacaEval
        raise ConfigError(
            f"eval.num_prompts={count} exceeds the {len(held_out)} prompts of the held-out split: "
            f"must be <= {len(held_out)}"
        )
    prompts = None if kind == "references" else held_out_prompts(held_out, count)
    reward = instantiate(cfg.reward)
    policy = load_causal_lm(str(cfg.policy), cfg.model.dtype, cfg.model.attn_implementation)
    run_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"policy": str(cfg.policy), "data": cfg.data.name, "kind": kind,
                              "reward": OmegaConf.to_container(cfg.reward, resolve=True)}
    if kind == "references":
        rows = held_out.select(range(count))
        summary, samples = win_rate(policy, tokenizer, rows["prompt"], rows["reference"], reward,
                                    settings)
        write_text_atomic(run_dir / "samples.jsonl",
                          "".join(json.dumps(sample) + "\n" for sample in samples))
    else:
        source = model_source(cfg, world)
        reference = load_causal_lm(source, cfg.model.dtype, cfg.model.attn_implementation)
        summary = evaluate_samples(policy, reference, tokenizer, prompts, reward, settings)
        result["reference_model"] = source
    result.update(summary)
    write_json_atomic(run_dir / "evaluation.json", result)
    log.info("%s", summary)
    log.info("Evaluation written to %s", run_dir / "evaluation.json")
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        print(f"riskalign.evaluate: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    from riskalign.cli_checks import refuse_unknown_choices

    refuse_unknown_choices("riskalign.evaluate")  # one line and exit 2, before Hydra composes
    main()
