"""The online recipe (PPO, RA-RLHF): prompts only, episodes sampled and scored during
training, and an `OnlineRLModule` whose one training step is one PPO iteration."""

from __future__ import annotations

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
    from riskalign.data.prompt_batches import PromptDataModule
    from riskalign.models.references import load_reference
    from riskalign.modules.online import OnlineRLModule
    from riskalign.recipes.sources import distinct_prompts, eval_sizes, load_configured_data

    # the prompts only: an online run samples its own episodes, even from a data config
    # whose source is `generated`
    splits, _ = load_configured_data(cfg, inputs.world, inputs.tokenizer)
    prompts, num_pairs = eval_sizes(cfg.eval, splits["eval"], pairs=False)
    trainer_kwargs = trainer_arguments(cfg)
    iterations = int(trainer_kwargs["max_steps"])
    datamodule = PromptDataModule(distinct_prompts(splits["train"]), plan.settings.batch_size,
                                  iterations, cfg.seed)
    reward = inputs.reward_model()
    policy = load_trained_policy(cfg, inputs)
    reference = load_reference(inputs.source, cfg.model, policy)
    module = OnlineRLModule(
        policy, reference, inputs.tokenizer, reward, plan.settings,
        OmegaConf.to_container(cfg.optim, resolve=True), iterations,
        gradient_clip_val=trainer_kwargs.pop("gradient_clip_val", None), seed=cfg.seed,
    )
    # one training step is one PPO iteration of several optimizer steps
    trainer_kwargs.update(max_steps=-1, max_epochs=1)
    evaluation = build_evaluation(cfg, inputs, reference, prompts, num_pairs, run_dir)
    return Run(inputs, module, datamodule, evaluation, trainer_kwargs)
