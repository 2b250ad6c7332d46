"""Checks of the composed config that run before anything heavy loads.

Every refusal is one line naming the key, the value and what is allowed. The run's
own keys are declared in RUN_FIELDS; each config group with more structure has its
own checker (objectives: riskalign.objectives.config; strategies, LoRA, rewards,
pair generation: their modules), called from `check_config`.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from riskalign.config.fields import (
    DTYPES,
    ON_BAD_RECORD,
    Choice,
    Integer,
    Pair,
    Real,
    boolean,
    check_local_path,
)
from riskalign.errors import ConfigError
from riskalign.modules.optimization import OPTIMIZERS, SCHEDULERS, training_mode

__all__ = ["ConfigError", "RUN_FIELDS", "check_config", "check_local_path"]

WANDB_MODES = ("online", "offline", "disabled")
DATA_SOURCES = ("world", "path", "generated")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true",
              "32", "bf16", "16", "64")
SEEDS = Integer(minimum=0, maximum=2**32 - 1)  # numpy's range
POSITIVE = Integer(minimum=1)

# key -> its check; a key a config does not have is not checked (e.g. evaluate's).
RUN_FIELDS: dict[str, Any] = {
    "seed": SEEDS,
    "data.source": Choice(DATA_SOURCES),
    "data.on_bad_record": Choice(ON_BAD_RECORD),
    "data.batch_size": POSITIVE,
    "data.eval_batch_size": POSITIVE,
    "data.max_length": POSITIVE,
    "data.max_prompt_length": POSITIVE,
    "data.num_workers": Integer(minimum=0),
    "model.dtype": Choice(DTYPES),
    "model.attn_implementation": Choice(ATTENTION),
    "model.gradient_checkpointing": boolean,
    "model.compile": boolean,
    "trainer.accelerator": Choice(ACCELERATORS),
    "trainer.precision": lambda key, value: Choice(PRECISIONS)(key, str(value)),  # 32 or "32"
    "trainer.max_steps": POSITIVE,  # runs count steps: curves, schedules, checkpoints
    "trainer.accumulate_grad_batches": POSITIVE,
    "trainer.log_every_n_steps": POSITIVE,
    "trainer.gradient_clip_val": Real(low=0.0, low_open=False, nullable=True),
    "optim.optimizer": Choice(OPTIMIZERS),
    "optim.lr": Real(low=0.0, nullable=True),  # null: the model's (resolve_learning_rate)
    "optim.weight_decay": Real(low=0.0, low_open=False),
    "optim.betas": Pair(Real(low=0.0, high=1.0, low_open=False, high_open=True)),
    "optim.scheduler": Choice(SCHEDULERS),
    "optim.warmup_steps": Integer(minimum=0, nullable=True),
    "optim.warmup_ratio": Real(low=0.0, high=1.0, low_open=False, high_open=True, nullable=True),
    "model.disable_dropout": boolean,
    "model.lr.full": Real(low=0.0),
    "model.lr.lora": Real(low=0.0),
    "data.eval_fraction": Real(low=0.0, high=1.0, high_open=True),
    "eval.every_n_steps": Integer(minimum=1, nullable=True),
    "eval.num_points": Integer(minimum=2),
    "eval.num_prompts": POSITIVE,
    "eval.batch_size": POSITIVE,
    "eval.max_new_tokens": POSITIVE,
    "eval.num_pairs": POSITIVE,
    "eval.temperature": Real(low=0.0, low_open=False),
    "eval.seed": SEEDS,
    "eval.tail_fraction": Real(low=0.0, high=1.0),
    "eval.tail_threshold": Real(),  # reward_below_threshold: the fraction of rewards below it
    "eval.prompt_tail_threshold": Real(nullable=True),  # RA-RLHF's prompt tail (null: off)
    "eval.kl": boolean,
    "reference.cache": lambda key, value: _reference_cache_setting(key, value),
    "guard.max_consecutive": POSITIVE,
    "checkpoint.every_n_steps": Integer(minimum=1, nullable=True),
    "checkpoint.keep_last": POSITIVE,
    "checkpoint.save_policy": boolean,
    "logger.wandb.mode": Choice(WANDB_MODES),
}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


_ABSENT = object()  # a key this config does not have


def check_fields(cfg: DictConfig, fields: dict[str, Any] = RUN_FIELDS) -> None:
    """Each declared key the config has, checked against its range."""
    for dotted, check in fields.items():
        value = OmegaConf.select(cfg, dotted, default=_ABSENT)
        if value is not _ABSENT:
            check(dotted, value)
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    _require(
        devices == "auto" or not isinstance(devices, int) or devices >= 1 or devices == -1,
        f"trainer.devices={devices!r} is invalid: must be an integer >= 1, -1 (all), "
        "auto, or a list of device ids",
    )


def _check_model_paths(cfg: DictConfig) -> None:
    """Model sources resolve (packaged files are installed) and local paths exist."""
    for key in ("name_or_path", "init_from"):
        try:
            value = cfg.model[key]
        except InterpolationResolutionError as error:
            cause = str(error.__cause__ or error).splitlines()[0]  # OmegaConf appends key lines
            raise ConfigError(f"model.{key} (model={cfg.model.name}): {cause}") from None
        if value is not None:
            check_local_path(str(value), f"model.{key}")


def _check_reward(cfg: DictConfig) -> None:
    """A classifier reward's path and labels (its config.json only): torch and transformers
    are imported for those rewards alone."""
    reward = cfg.reward
    if not str(reward.get("_target_", "")).startswith("riskalign.rewards.hf_classifier."):
        return
    _require(
        not OmegaConf.is_missing(reward, "name_or_path"),
        "reward.name_or_path is not set: must be a classifier's hub ID or directory",
    )
    from riskalign.rewards.hf_classifier import check_reward_config

    check_reward_config(OmegaConf.to_container(reward, resolve=True))


def resolve_learning_rate(cfg: DictConfig) -> None:
    """Fill a null optim.lr with the model config's rate for its mode (model.lr.full, or
    model.lr.lora with LoRA adapters), so the run's config records the rate it used."""
    if OmegaConf.select(cfg, "optim.lr") is not None:
        return
    mode = training_mode(cfg)
    rate = OmegaConf.select(cfg, f"model.lr.{mode}")
    _require(rate is not None,
             f"optim.lr=null needs model.lr.{mode} (model={cfg.model.name} has none): set "
             "optim.lr")
    cfg.optim.lr = RUN_FIELDS[f"model.lr.{mode}"](f"model.lr.{mode}", rate)


def check_config(cfg: DictConfig) -> None:
    """Refuse a config that cannot run, before any model or dataset loads."""
    from riskalign.config.keys import check_callbacks, refuse_unknown_keys

    refuse_unknown_keys(cfg)
    check_fields(cfg)
    check_callbacks(cfg)
    data = cfg.data
    if data.source != "world":  # a dataset of its own: refuse a missing one now, not after loads
        _require(
            not OmegaConf.is_missing(data, "path") and data.path,
            f"data.path is not set (data={data.name}): must be a hub ID, a data file or "
            "a dataset directory",
        )
        check_local_path(str(data.path), "data.path")
    if data.source == "generated":
        from riskalign.data.pair_settings import PairSettings

        _require("generate" in data, "data.source=generated needs a data.generate block")
        PairSettings.from_config(data.generate, key="data.generate")
    _check_model_paths(cfg)
    _check_reward(cfg)
    from riskalign.models.lora import lora_settings

    lora_settings(cfg.model)
    from riskalign.training.strategies import check_strategy

    check_strategy(cfg.trainer)
    from riskalign.worlds.settings import check_world_model

    check_world_model(cfg)
    _require(
        data.max_length > data.max_prompt_length,
        f"data.max_length={data.max_length} must be greater than "
        f"data.max_prompt_length={data.max_prompt_length}",
    )
    _check_world(cfg)
    penalty = OmegaConf.select(cfg, "objective.penalty.name", default=None)
    _require(
        not (cfg.model.get("compile", False) and penalty),
        f"model.compile=true with objective.penalty.name={penalty}: the Wasserstein penalty "
        "differentiates a gradient, which compiled graphs do not support; use "
        "model.compile=false",
    )


def _check_world(cfg: DictConfig) -> None:
    """The embedded world's settings (data.world) and, when the run trains the world's model,
    its lengths against that model's n_positions: before the world is built. Other models'
    limits are read from their config once it exists (train: riskalign.models.limits)."""
    if cfg.data.source != "world":
        return
    _require(isinstance(cfg.data.get("world"), DictConfig),
             f"data.source=world needs a data.world block (data={cfg.data.name} has none): "
             "use data=reviews")
    from riskalign.worlds.settings import WORLD_MODEL, check_world_settings

    world = check_world_settings(OmegaConf.to_container(cfg.data.world, resolve=True))
    if (cfg.model.init_from or cfg.model.name_or_path) == WORLD_MODEL:
        from riskalign.models.limits import check_lengths, source_name, training_lengths

        check_lengths(training_lengths(cfg), ("n_positions", world["model"]["n_positions"]),
                      source_name(cfg))


def _reference_cache_setting(key: str, value):
    if value == "auto" or isinstance(value, bool):
        return value
    raise ConfigError(f"{key}={value!r} is not allowed: must be true, false or auto")


def reference_cache_enabled(setting: bool | str, objective_name: str, online: bool,
                            objective=None) -> bool:
    """Whether training reads cached reference log-probabilities (reference.cache).

    The cache holds sequence log-probabilities, so it cannot serve objectives that read the
    reference's whole distribution at every token (tdpo, radpo) or sample online (ppo,
    ra_rlhf): `true` is refused for them, `auto` uses the cache wherever it can serve.
    """
    serves = not online and not objective.requires_reference_logits
    if setting == "auto":
        return serves and objective.requires_reference
    if setting and not serves:
        raise ConfigError(
            f"reference.cache=true cannot serve objective={objective_name}: it reads the "
            "reference's full distribution at every token, not cached sequence log-probs; "
            "set reference.cache=false (or auto: the cache wherever it serves)"
        )
    return bool(setting)
