"""What every recipe shares: the run's inputs (world, model source, tokenizer, reward), the
Lightning trainer's keywords, the evaluation callback, and the `Run` a recipe returns."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """What a run reads before it builds its models."""

    world: Any  # the embedded world (riskalign.worlds), or None
    source: str  # where the model loads from: a hub ID or a local directory
    tokenizer: Any
    reward_model: Any  # () -> the reward, built once at its first call


@dataclass
class Run:
    """A run assembled by a recipe, ready for the trainer."""

    inputs: Inputs
    module: Any  # the LightningModule
    datamodule: Any
    evaluation: Any  # riskalign.training.evaluation.AlignmentEvaluation
    trainer_kwargs: dict[str, Any]  # lightning.Trainer's keywords from conf/trainer
    reference_cache: dict[str, Any] | None = None  # the reference cache's record


def read_inputs(cfg: DictConfig) -> Inputs:
    """Seed, the embedded world (built once), the model source checked against the run's
    lengths (its config only: before any weights load) and the tokenizer."""
    import lightning
    import transformers
    from hydra.utils import instantiate

    from riskalign.models.limits import check_training_lengths
    from riskalign.models.loading import load_tokenizer
    from riskalign.recipes.sources import ensure_world, model_source
    from riskalign.training.loggers import lightning_lines_once

    transformers.logging.set_verbosity_error()
    lightning_lines_once()  # `import lightning` added a console handler of its own
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)
    world = ensure_world(cfg)
    source = model_source(cfg, world)
    check_training_lengths(cfg, source)
    reward_model = functools.cache(lambda: instantiate(cfg.reward))
    return Inputs(world, source, load_tokenizer(source), reward_model)


def trainer_arguments(cfg: DictConfig) -> dict[str, Any]:
    """conf/trainer as lightning.Trainer's keywords, with the strategy built."""
    from riskalign.training.strategies import build_strategy

    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs["strategy"] = build_strategy(kwargs.get("strategy"), cfg.model.block_class)
    return kwargs


def build_evaluation(cfg: DictConfig, inputs: Inputs, reference, prompts: list[str],
                     num_pairs: int, run_dir: Path, pair_batches=None):
    """The alignment-vs-drift evaluation every run records (conf/eval)."""
    from riskalign.evaluation.alignment import EvalSettings
    from riskalign.models.references import LazyReference
    from riskalign.training.evaluation import AlignmentEvaluation, evaluation_interval

    return AlignmentEvaluation(
        reference if cfg.eval.kl else None,
        inputs.tokenizer,
        prompts,
        inputs.reward_model(),
        EvalSettings.from_config(cfg.eval),
        pair_batches=pair_batches,
        num_pairs=num_pairs,
        every_n_steps=evaluation_interval(cfg.eval.every_n_steps, cfg.eval.num_points,
                                          int(cfg.trainer.max_steps)),
        offload_reference=isinstance(reference, LazyReference),
        run_dir=run_dir,
    )


def load_trained_policy(cfg: DictConfig, inputs: Inputs):
    """The policy to train, with a warning when the learning rate looks wrong for its size."""
    from riskalign.models.loading import load_policy
    from riskalign.modules.optimization import learning_rate_warning, training_mode

    policy = load_policy(inputs.source, cfg.model)
    mode = training_mode(cfg)
    parameters = sum(p.numel() for p in policy.parameters())
    warning = learning_rate_warning(cfg.optim.lr, mode, parameters, cfg.model.name,
                                    OmegaConf.select(cfg, f"model.lr.{mode}"))
    if warning:
        log.warning(warning)
    return policy
