"""Checks of the composed config that run before anything heavy loads.

Every refusal is one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

WANDB_MODES = ("online", "offline", "disabled")
DATA_SOURCES = ("world", "path", "generated")
BAD_RECORD_POLICIES = ("error", "drop")


class ConfigError(ValueError):
    """A config value that cannot work; its message is one line."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive_int(cfg: DictConfig, dotted: str) -> None:
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    _require(
        isinstance(value, int) and value > 0,
        f"{dotted}={value!r} is invalid: must be an integer > 0",
    )


def check_local_path(value: str, key: str) -> None:
    """Refuse a local path (starting with . / ~) that is not there: HF would otherwise take
    it for a hub ID and fail obscurely, after other things have loaded."""
    if value.startswith((".", "/", "~")) and not Path(value).expanduser().exists():
        raise ConfigError(f"{key}={value!r} does not exist: must be an existing path or a hub ID")


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


def check_config(cfg: DictConfig) -> None:
    """Refuse a config that cannot run, before any model or dataset loads."""
    data = cfg.data
    _require(
        data.source in DATA_SOURCES,
        f"data.source={data.source!r} is not one of: {', '.join(DATA_SOURCES)}",
    )
    _require(
        data.get("on_bad_record", "error") in BAD_RECORD_POLICIES,
        f"data.on_bad_record={data.get('on_bad_record')!r} is not one of: "
        f"{', '.join(BAD_RECORD_POLICIES)}",
    )
    if data.source != "world":  # a dataset of its own: refuse a missing one now, not after loads
        _require(
            not OmegaConf.is_missing(data, "path") and data.path,
            f"data.path is not set (data={data.name}): must be a hub ID, a data file or "
            "a dataset directory",
        )
        check_local_path(str(data.path), "data.path")
    if data.source == "generated":
        from riskalign.data.pair_generation import PairSettings

        _require("generate" in data, "data.source=generated needs a data.generate block")
        PairSettings.from_config(data.generate, key="data.generate")
    _check_model_paths(cfg)
    _check_reward(cfg)
    from riskalign.models.lora import lora_settings

    lora_settings(cfg.model)
    from riskalign.strategies import check_strategy

    check_strategy(cfg.trainer)
    from riskalign.resolve import check_world_model

    check_world_model(cfg)
    for key in ("data.batch_size", "data.eval_batch_size", "data.max_length",
                "data.max_prompt_length", "eval.num_prompts", "eval.batch_size",
                "eval.max_new_tokens", "eval.num_pairs", "guard.max_consecutive",
                "trainer.accumulate_grad_batches"):
        _positive_int(cfg, key)
    _require(
        data.max_length > data.max_prompt_length,
        f"data.max_length={data.max_length} must be greater than "
        f"data.max_prompt_length={data.max_prompt_length}",
    )
    _require(
        cfg.eval.temperature >= 0,
        f"eval.temperature={cfg.eval.temperature} is invalid: must be >= 0",
    )
    _require(
        0 < cfg.eval.tail_fraction <= 1,
        f"eval.tail_fraction={cfg.eval.tail_fraction} is out of range: must be in (0, 1]",
    )
    every = cfg.eval.every_n_steps
    _require(
        every is None or (isinstance(every, int) and every > 0),
        f"eval.every_n_steps={every!r} is invalid: must be null or an integer > 0",
    )
    _require(cfg.optim.lr > 0, f"optim.lr={cfg.optim.lr} is invalid: must be > 0")
    _require(
        cfg.optim.warmup_steps >= 0,
        f"optim.warmup_steps={cfg.optim.warmup_steps} is invalid: must be >= 0",
    )
    mode = cfg.logger.wandb.mode
    _require(
        mode in WANDB_MODES,
        f"logger.wandb.mode={mode!r} is not one of: {', '.join(WANDB_MODES)}",
    )
