"""What a training run will do, decided and checked before anything heavy loads.

`check_run` is every refusal `python -m riskalign.train` makes: the config's keys and
ranges (`check_config`), the objective's parameters (the objective is built here: it is
cheap), what the data gives against what the objective trains on, the limits of online RL,
and whether the reference cache can serve. A sweep runs it for every job before the first
starts (riskalign.config.launch).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from riskalign.config.checks import check_config, reference_cache_enabled, resolve_learning_rate
from riskalign.errors import ConfigError

log = logging.getLogger(__name__)


class RunPlan(NamedTuple):
    """What the config asks to train, once checked."""

    online: bool  # PPO and RA-RLHF: episodes sampled during training
    kind: str  # "pairs" or "prompts": what the data gives
    objective: Any  # an offline objective, built (None online)
    settings: Any  # OnlineSettings (None offline)
    cache_reference: bool  # reference.cache in effect


def check_run(cfg: DictConfig) -> RunPlan:
    """Every refusal of a training run, in one line each; the plan it leaves."""
    resolve_learning_rate(cfg)
    check_config(cfg)
    record_precision_that_runs(cfg)
    from riskalign.objectives.online import online_names

    if cfg.objective.name in online_names():
        return _online_plan(cfg)
    return _offline_plan(cfg)


def _offline_plan(cfg: DictConfig) -> RunPlan:
    from riskalign import objectives

    kind = training_kind(cfg)
    params = OmegaConf.to_container(cfg.objective, resolve=True)
    if kind == "prompts":  # raw text has no chosen/rejected rows: SFT trains on every row
        params["rows"] = "all"
    objective = objectives.build(**params)
    cache = reference_cache_enabled(cfg.reference.cache, cfg.objective.name, False, objective)
    return RunPlan(False, kind, objective, None, cache)


def _online_plan(cfg: DictConfig) -> RunPlan:
    from riskalign.objectives.online import OnlineSettings

    settings = OnlineSettings.from_config(OmegaConf.to_container(cfg.objective, resolve=True))
    kind = training_kind(cfg, online=True)
    name = cfg.objective.name
    if cfg.trainer.devices != 1 or cfg.trainer.get("num_nodes", 1) != 1:
        raise ConfigError(f"trainer.devices={cfg.trainer.devices} is invalid for objective="
                          f"{name}: PPO and RA-RLHF run on one process; must be 1")
    accumulate = cfg.trainer.accumulate_grad_batches
    if accumulate != 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={accumulate} is invalid for "
                          f"objective={name}: PPO steps once per minibatch; must be 1 "
                          "(raise objective.minibatch_size instead)")
    cache = reference_cache_enabled(cfg.reference.cache, name, True)
    return RunPlan(True, kind, None, settings, cache)


def record_precision_that_runs(cfg: DictConfig) -> None:
    """fp16 mixed precision does not run on a CPU: Lightning runs bf16-mixed instead. The
    config says so, so that summary.json, checkpoints and W&B record what ran."""
    precision = str(cfg.trainer.precision)
    if precision not in ("16", "16-mixed") or cfg.trainer.accelerator not in ("cpu", "auto"):
        return
    import torch

    if cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available():
        log.warning("trainer.precision=%s: fp16 mixed precision does not run on a CPU; "
                    "running (and recording) bf16-mixed", precision)
        cfg.trainer.precision = "bf16-mixed"


def training_kind(cfg: DictConfig, online: bool = False) -> str:
    """What the run trains on, "pairs" or "prompts"; refused early if the objective cannot.

    Online objectives sample their own episodes: any dataset with prompts will do.
    """
    from riskalign.data.formats import format_kind

    kind = format_kind(cfg.data.format)
    name, data = cfg.objective.name, cfg.data.name
    if online and kind != "references":
        return "prompts"
    if cfg.data.source == "generated":
        if kind != "prompts":
            raise ConfigError(
                f"data.source=generated samples pairs for prompts, but data.format="
                f"{cfg.data.format} gives {kind}: use a prompt dataset (imdb, emotion, ...)"
            )
        return "pairs"
    if kind == "references":
        raise ConfigError(
            f"data={data} is an evaluation set (instructions with reference answers): "
            "use it with python -m riskalign.evaluate, not for training"
        )
    if kind == "prompts" and name != "sft":
        raise ConfigError(
            f"objective={name} needs preference pairs but data={data} gives prompts: set "
            "data.source=generated (pairs sampled from the model, scored by the reward), "
            "train objective=sft on it, or use data=local with a pairs dataset"
        )
    return kind
