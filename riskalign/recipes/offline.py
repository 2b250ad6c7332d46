"""The offline recipe: preference pairs (or SFT rows) from a dataset, a frozen reference
(or its cached log-probabilities), and an `AlignmentModule` training the objective."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from riskalign.recipes.run import (
    Inputs,
    Run,
    build_evaluation,
    load_trained_policy,
    trainer_arguments,
)

if TYPE_CHECKING:  # the plan is built by riskalign.config.plan, which imports no recipe
    from riskalign.config.plan import RunPlan


def build(cfg: DictConfig, plan: RunPlan, inputs: Inputs, run_dir: Path) -> Run:
    from riskalign.data.preference import PreferenceDataModule
    from riskalign.modules.alignment import AlignmentModule
    from riskalign.recipes.sources import eval_sizes

    splits = training_data(cfg, inputs)
    datamodule = PreferenceDataModule(
        splits,
        inputs.tokenizer,
        max_length=cfg.data.max_length,
        max_prompt_length=cfg.data.max_prompt_length,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
        kind=plan.kind,
    )
    prompts, num_pairs = eval_sizes(cfg.eval, splits["eval"])
    datamodule.setup("fit")
    inputs.reward_model()  # built before the policy, as the evaluation needs it
    policy = load_trained_policy(cfg, inputs)
    train_reference, eval_reference, cache = references(cfg, inputs.source, policy,
                                                        plan, datamodule)
    module = AlignmentModule(policy, train_reference, plan.objective,
                             OmegaConf.to_container(cfg.optim, resolve=True))
    evaluation = build_evaluation(cfg, inputs, eval_reference, prompts, num_pairs, run_dir,
                                  pair_batches=datamodule.eval_dataloader())  # cached log-probs
    return Run(inputs, module, datamodule, evaluation, trainer_arguments(cfg), cache)


def training_data(cfg: DictConfig, inputs: Inputs):
    """Train/eval splits in the standard columns, loaded (and generated) as the config says."""
    from riskalign.data.loading import load_data
    from riskalign.recipes.generated_pairs import ensure_generated_pairs
    from riskalign.recipes.sources import load_configured_data

    splits, _ = load_configured_data(cfg, inputs.world, inputs.tokenizer)
    if cfg.data.source != "generated":
        return splits
    pairs = ensure_generated_pairs(cfg, inputs.source, splits, inputs.tokenizer,
                                   inputs.reward_model())
    generated = {**OmegaConf.to_container(cfg.data, resolve=True), "format": "preference",
                 "subset": None, "train_split": "train", "eval_split": "test"}
    splits, _ = load_data(generated, inputs.tokenizer, path=str(pairs))
    return splits


def references(cfg: DictConfig, source: str, policy, plan: RunPlan, datamodule):
    """(training's reference or None, the evaluation's reference, the cache's record or None).

    With reference.cache the training reads cached log-probabilities: the reference is
    built only to fill a missing cache, and the evaluation gets one that loads at its
    first KL measurement (LoRA: the adapter-disabled policy, which costs nothing).
    """
    from riskalign.models.references import LazyReference, load_reference
    from riskalign.training.reference_cache import attach_reference_logps

    objective = plan.objective
    if not (plan.cache_reference and objective.requires_reference):
        reference = load_reference(source, cfg.model, policy)
        return (reference if objective.requires_reference else None), reference, None
    cache = attach_reference_logps(
        datamodule, source, cfg.model, Path(cfg.paths.reference_cache),
        lambda: load_reference(source, cfg.model, policy), compute_device(cfg.trainer),
    )
    return None, LazyReference(lambda: load_reference(source, cfg.model, policy)), cache


def compute_device(trainer_cfg: DictConfig):
    """Where a pass before training (the reference cache) runs: this process's GPU if the
    trainer uses one, else the CPU."""
    import torch

    if trainer_cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
