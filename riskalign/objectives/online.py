"""Settings of the online objectives (PPO and RA-RLHF's CVaR PPO, docs/objectives.md §6).

Unlike the preference objectives they are not a loss over a fixed batch: each
iteration samples, scores and then optimizes, so they configure a LightningModule
(riskalign.modules.online) rather than build an Objective. `ppo` is `ra_rlhf`
with risk level α = 1: every episode kept at every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from riskalign.objectives.config import ObjectiveConfigError
from riskalign.objectives.functional import soft_risk_keep

ONLINE = ("ppo", "ra_rlhf")


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

    alpha: float = 1.0
    warmup: int = 0
    rho: float = 0.95
    index_base: int = 1

    def keep(self, completed: int, batch_size: int, total_iterations: int) -> int:
        """Episodes kept at the PPO iteration that follows `completed` ones (0: the first)."""
        return soft_risk_keep(completed + self.index_base, batch_size, total_iterations,
                              self.warmup, self.alpha, self.rho)


@dataclass(frozen=True)
class OnlineSettings:
    name: str
    batch_size: int = 64  # B: prompts, one episode each, per iteration
    minibatch_size: int = 64
    ppo_epochs: int = 4
    max_new_tokens: int = 24
    temperature: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    value_clip_range: float = 0.2
    value_coef: float = 0.1
    kl_coef: float = 0.2  # initial β_kl of the per-token KL penalty
    kl_target: float | None = 6.0  # adaptive controller; None: fixed β_kl
    kl_horizon: int = 10_000
    # Whitening variance of the kept advantages: biased (1/n, default) or Bessel-corrected
    # (1/(n − 1), the released code's trl); n counts kept response tokens.
    whiten_unbiased: bool = False
    risk: RiskSchedule = RiskSchedule()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OnlineSettings:
        config = dict(config)
        if config.get("name") not in ONLINE:
            raise ObjectiveConfigError(
                f"objective.name={config.get('name')!r} is not one of: {', '.join(ONLINE)}"
            )
        _refuse_unknown(config, cls, "objective")
        risk = dict(config.pop("risk", {}) or {})
        _refuse_unknown(risk, RiskSchedule, "objective.risk")
        settings = cls(**config, risk=RiskSchedule(**risk))
        settings.check()
        return settings

    def check(self) -> None:
        for key in ("batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "kl_horizon"):
            _require(getattr(self, key) >= 1, key, getattr(self, key), "an integer >= 1")
        _require(self.minibatch_size <= self.batch_size, "minibatch_size", self.minibatch_size,
                 f"<= objective.batch_size={self.batch_size}")
        _require(self.temperature > 0, "temperature", self.temperature, "> 0")
        for key in ("gamma", "lam"):
            _require(0 <= getattr(self, key) <= 1, key, getattr(self, key), "in [0, 1]")
        for key in ("clip_range", "value_clip_range", "value_coef"):
            _require(getattr(self, key) > 0, key, getattr(self, key), "> 0")
        _require(self.kl_coef >= 0, "kl_coef", self.kl_coef, ">= 0")
        _require(self.kl_target is None or self.kl_target > 0, "kl_target", self.kl_target,
                 "null or > 0")
        _require(0 < self.risk.alpha <= 1, "risk.alpha", self.risk.alpha, "in (0, 1]")
        _require(0 < self.risk.rho <= 1, "risk.rho", self.risk.rho, "in (0, 1]")
        _require(self.risk.warmup >= 0, "risk.warmup", self.risk.warmup, "an integer >= 0")
        _require(_is_int(self.risk.index_base) and self.risk.index_base in (0, 1),
                 "risk.index_base", self.risk.index_base, "0 (released scripts) or 1 (paper)")
        _require(isinstance(self.whiten_unbiased, bool), "whiten_unbiased", self.whiten_unbiased,
                 "true or false")


def _refuse_unknown(config: dict[str, Any], cls: type, prefix: str) -> None:
    allowed = [field.name for field in fields(cls)]
    for key in config:
        if key not in allowed:
            raise ObjectiveConfigError(
                f"{prefix}.{key} is not a setting of {cls.__name__}: use {', '.join(allowed)}"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ObjectiveConfigError(f"objective.{key}={value!r} is out of range: must be {allowed}")
