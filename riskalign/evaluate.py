"""`python -m riskalign.evaluate`: a trained policy scored on held-out prompts.

Evaluation sets of instructions with reference answers (alpacaeval) give a win
rate against the references; prompt or pair datasets give reward mean, reward
tail and KL to the reference model, as in training's evaluation. Results go to
`evaluation.json` and `samples.jsonl` (every completion, scored) in the run directory.

A policy saved by a run (`<run>/policy`) is evaluated with that run's config (model, data,
reward, eval, paths; riskalign.config.run_config), on the device and in the dtypes the run's own
evaluation used, so that `policy=<run>/policy` alone repeats the run's final evaluation
exactly; overrides on the command line still win.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from riskalign.config.launch import exit_on_resource_error
from riskalign.errors import ConfigError

log = logging.getLogger("riskalign.evaluate")


def evaluate(cfg: DictConfig, run_dir: Path, run_config: Path | None = None) -> dict[str, Any]:
    """Evaluate `cfg.policy` into `run_dir`; `run_config` is the trained run's record that
    `cfg` was read from (None: evaluate.yaml and the command line alone)."""
    import transformers

    from riskalign.config.checks import check_fields
    from riskalign.config.fields import check_local_path
    from riskalign.config.keys import refuse_unknown_keys
    from riskalign.evaluation.alignment import EvalSettings, evaluate_samples
    from riskalign.evaluation.samples import sample_rows
    from riskalign.evaluation.win_rate import win_rate
    from riskalign.models.loading import load_causal_lm, load_tokenizer
    from riskalign.recipes.sources import (
        ensure_world,
        eval_sizes,
        load_configured_data,
        model_source,
    )
    from riskalign.runs.artifacts import check_policy, write_json_atomic, write_jsonl_atomic

    refuse_unknown_keys(cfg)
    check_fields(cfg)  # the model, data and eval keys it shares with training
    check_local_path(str(cfg.policy), "policy")
    from riskalign.models.limits import check_sampled_length

    check_sampled_length(cfg, str(cfg.policy), "eval.max_new_tokens", f"policy={cfg.policy!r}")
    check_policy(cfg.policy, "policy")  # a run's policy/ is verified against its marker
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
    # the prompts training evaluates on: the same shared selection (and cap)
    prompts = None if kind == "references" else eval_sizes(cfg.eval, held_out, pairs=False)[0]
    policy_dtype, reference_dtype = evaluated_dtypes(cfg)
    device = evaluation_device(cfg)
    reward = instantiate(cfg.reward)
    attention = policy_attention(cfg)
    policy = load_causal_lm(str(cfg.policy), policy_dtype, attention).to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"policy": str(cfg.policy), "data": cfg.data.name, "kind": kind,
                              "reward": OmegaConf.to_container(cfg.reward, resolve=True),
                              "run_config": str(run_config) if run_config else None,
                              "device": str(device), "dtype": policy_dtype,
                              "attention": attention,
                              "config": OmegaConf.to_container(cfg, resolve=True)}
    if kind == "references":
        rows = held_out.select(range(count))
        summary, samples = win_rate(policy, tokenizer, rows["prompt"], rows["reference"], reward,
                                    settings)
        write_jsonl_atomic(run_dir / "samples.jsonl", samples)
    else:
        source = model_source(cfg, world)
        reference = None  # eval.kl=false: no KL, as in training (NaN)
        if cfg.eval.kl:
            reference = load_causal_lm(source, reference_dtype,
                                       cfg.model.attn_implementation).to(device)
        summary, samples = evaluate_samples(policy, reference, tokenizer, prompts, reward,
                                            settings)
        write_jsonl_atomic(run_dir / "samples.jsonl", sample_rows(None, samples))
        result.update(reference_model=source, reference_dtype=reference_dtype)
    result.update(summary)
    write_json_atomic(run_dir / "evaluation.json", result)
    log.info("%s", summary)
    log.info("Evaluation written to %s", run_dir / "evaluation.json")
    return result


# Lightning's "-true" precisions convert the LightningModule's weights: a run trained so
# evaluated its policy, and any reference the module holds, in that dtype.
TRUE_PRECISIONS = {"bf16-true": "bfloat16", "16-true": "float16"}


def evaluated_dtypes(cfg: DictConfig) -> tuple[str, str]:
    """The (policy, reference) dtypes of the run's own evaluation: model.dtype, but under a
    "-true" trainer precision the policy's, and the reference's if the module held it."""
    precision = TRUE_PRECISIONS.get(str(OmegaConf.select(cfg, "trainer.precision")))
    if precision is None:  # also a policy outside a run: no trainer
        return cfg.model.dtype, cfg.model.dtype
    return precision, precision if _module_holds_reference(cfg) else cfg.model.dtype


def _module_holds_reference(cfg: DictConfig) -> bool:
    """Whether training's module held the reference its evaluation used (as train wires it):
    not for objectives that never read it (sft, simpo) or with reference.cache, where the
    evaluation loads its own."""
    if "objective" not in cfg:  # no run: a precision given for the policy is for both
        return True
    objective = _offline_objective(cfg)
    if objective is None or OmegaConf.select(cfg, "model.lora.enabled"):
        return True  # PPO's module holds it; LoRA's is the policy with adapters off
    from riskalign.config.checks import reference_cache_enabled

    cached = reference_cache_enabled(OmegaConf.select(cfg, "reference.cache") or False,
                                     cfg.objective.name, False, objective)
    return objective.requires_reference and not cached


def policy_attention(cfg: DictConfig) -> str:
    """The policy's attention in the run's evaluation: eager where training switched to it
    (a Wasserstein penalty's double backprop), else model.attn_implementation."""
    objective = _offline_objective(cfg) if "objective" in cfg else None
    if objective is not None and objective.requires_input_embeddings:
        return "eager"
    return cfg.model.attn_implementation


def _offline_objective(cfg: DictConfig):
    """The run's objective as training builds it (None for PPO and RA-RLHF)."""
    from riskalign import objectives
    from riskalign.objectives.online import online_names

    if cfg.objective.name in online_names():
        return None
    return objectives.build(**OmegaConf.to_container(cfg.objective, resolve=True))


def evaluation_device(cfg: DictConfig):
    """Where the run's own evaluation ran: its first GPU if its trainer used one (the
    samples come from that device's generator), else the CPU, as for a policy outside a
    run."""
    import torch

    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="cpu")
    if accelerator not in ("gpu", "cuda", "auto"):
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if accelerator != "auto":
        log.warning("the run trained with trainer.accelerator=%s and evaluated there; this "
                    "machine has no GPU: evaluating on the CPU (its samples differ)", accelerator)
    return torch.device("cpu")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from riskalign.config.run_config import with_run_config

    hydra_cfg = HydraConfig.get()
    try:
        if OmegaConf.is_missing(cfg, "policy"):
            raise ConfigError("policy is missing: must be the trained policy's directory "
                              "(a run's policy/) or an HF model")
        cfg, run_config = with_run_config(cfg, hydra_cfg.overrides.task)
        evaluate(cfg, Path(hydra_cfg.runtime.output_dir), run_config)
    except ConfigError as error:
        print(f"riskalign.evaluate: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        exit_on_resource_error("riskalign.evaluate", error)


if __name__ == "__main__":
    from riskalign.config.command_line import refuse_unknown_choices
    from riskalign.config.launch import refuse_before_launch
    from riskalign.config.run_config import with_run_choices

    refuse_unknown_choices("riskalign.evaluate")  # one line and exit 2, before Hydra composes
    sys.argv[1:] = with_run_choices(sys.argv[1:])  # a run's policy: compose as the run did
    refuse_before_launch("riskalign.evaluate", "evaluate")  # keys without +, unwritable paths
    main()
