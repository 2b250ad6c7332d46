"""Settings of the online objectives (PPO and RA-RLHF's CVaR PPO, docs/objectives.md §6).

Unlike the preference objectives they are not a loss over a fixed batch: each
iteration samples, scores and then optimizes, so they configure a LightningModule
(riskalign.modules.online) rather than build an Objective. `ppo` is `ra_rlhf`
with risk level α = 1: every episode kept at every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from riskalign.config.fields import (
    REQUIRED,
    Block,
    Choice,
    Integer,
    Real,
    boolean,
    read_settings,
    setting,
)
from riskalign.objectives.config import ObjectiveConfigError, checked
from riskalign.objectives.functional import soft_risk_keep

ONLINE = ("ppo", "ra_rlhf")
POSITIVE = Integer(minimum=1)
POSITIVE_REAL = Real(low=0.0)
FRACTION = Real(low=0.0, high=1.0)  # (0, 1]
UNIT_INTERVAL = Real(low=0.0, high=1.0, low_open=False)  # [0, 1]


def online_names() -> list[str]:
    return list(ONLINE)


@dataclass(frozen=True)
class RiskSchedule:
    """Soft-risk schedule: keep all B episodes for `warmup` iterations, then anneal the kept
    fraction linearly to `alpha`, reached at iteration ⌈rho·M⌉.

    index_base is the index m the schedule gives the first PPO iteration: 1 (the paper's
    count, default) or 0 (the released scripts pass enumerate's index, so every cut comes
    one iteration later; docs/objectives.md §8).
    """

    alpha: float = setting(1.0, FRACTION)
    warmup: int = setting(0, Integer(minimum=0))
    rho: float = setting(0.95, FRACTION)
    index_base: int = setting(1, Integer(minimum=0, options=(0, 1)))

    def keep(self, completed: int, batch_size: int, total_iterations: int) -> int:
        """Episodes kept at the PPO iteration that follows `completed` ones (0: the first)."""
        return soft_risk_keep(completed + self.index_base, batch_size, total_iterations,
                              self.warmup, self.alpha, self.rho)


@dataclass(frozen=True)
class OnlineSettings:
    name: str = setting(REQUIRED, Choice(ONLINE))
    batch_size: int = setting(64, POSITIVE)  # B: prompts, one episode each, per iteration
    minibatch_size: int = setting(64, POSITIVE)  # at most batch_size
    ppo_epochs: int = setting(4, POSITIVE)
    max_new_tokens: int = setting(24, POSITIVE)
    temperature: float = setting(1.0, POSITIVE_REAL)
    gamma: float = setting(1.0, UNIT_INTERVAL)
    lam: float = setting(0.95, UNIT_INTERVAL)
    clip_range: float = setting(0.2, POSITIVE_REAL)
    value_clip_range: float = setting(0.2, POSITIVE_REAL)
    value_coef: float = setting(0.1, POSITIVE_REAL)
    kl_coef: float = setting(0.2, Real(low=0.0, low_open=False))  # initial β_kl of the KL penalty
    # adaptive controller; None: fixed β_kl
    kl_target: float | None = setting(6.0, Real(low=0.0, nullable=True))
    kl_horizon: int = setting(10_000, POSITIVE)
    # Whitening variance of the kept advantages: biased (1/n, default) or Bessel-corrected
    # (1/(n − 1), the released code's trl); n counts kept response tokens.
    whiten_unbiased: bool = setting(False, boolean)
    risk: RiskSchedule = setting(RiskSchedule(), Block(RiskSchedule))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OnlineSettings:
        """The objective block as settings; refusals are one-line ObjectiveConfigErrors."""
        settings = checked(read_settings, cls, "objective", config)
        if settings.minibatch_size > settings.batch_size:
            raise ObjectiveConfigError(
                f"objective.minibatch_size={settings.minibatch_size} is out of range: must be "
                f"<= objective.batch_size={settings.batch_size}"
            )
        return settings
