"""Numerical guard: a step whose gradients are not finite is skipped, counted and logged;
too many in a row stop the run with the step and the last finite metrics.

A non-finite loss gives non-finite gradients, so checking the gradients (after any
accumulation, before clipping) catches both. The skipped step leaves the weights and
the optimizer's moments untouched: the gradients are dropped before AdamW sees them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from riskalign.errors import NumericalGuardError

log = logging.getLogger(__name__)


class NumericalGuard(Callback):
    def __init__(self, max_consecutive: int) -> None:
        self.max_consecutive = max_consecutive  # >= 1: check_config (RUN_FIELDS) refuses less
        self.skipped_steps = 0
        self.consecutive = 0
        self.last_finite: dict[str, float] = {}
        self.last_finite_step: int | None = None

    def on_before_optimizer_step(
        self, trainer: Trainer, module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        if not grads or bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            self.consecutive = 0
            return
        optimizer.zero_grad(set_to_none=True)  # AdamW skips parameters without a gradient
        self.skipped_steps += 1
        self.consecutive += 1
        step = trainer.global_step  # 0-based: this step has not been taken yet
        log.warning("guard: non-finite gradients at step %d: step skipped (%d so far)",
                    step, self.skipped_steps)
        module.log("guard/skipped_steps", float(self.skipped_steps), on_step=True)
        if self.consecutive >= self.max_consecutive:
            finite = ", ".join(f"{k}={v:.4g}" for k, v in sorted(self.last_finite.items()))
            raise NumericalGuardError(
                f"{self.consecutive} non-finite steps in a row (guard.max_consecutive="
                f"{self.max_consecutive}), the last at step {step}; last finite metrics "
                f"(step {self.last_finite_step}): {finite or 'none'}"
            )

    @property
    def in_streak(self) -> bool:
        """Whether the latest step was skipped (a checkpoint now would not be a good one)."""
        return self.consecutive > 0

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive,
                "last_finite": dict(self.last_finite), "last_finite_step": self.last_finite_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = state["skipped_steps"]
        self.consecutive = state["consecutive"]
        self.last_finite = dict(state["last_finite"])
        self.last_finite_step = state["last_finite_step"]

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, *args: Any) -> None:
        if self.consecutive == 0:
            metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
                       if not name.startswith(("eval/", "guard/")) and value.numel() == 1
                       and bool(torch.isfinite(value))}
            self.last_finite.update(metrics)
            self.last_finite_step = trainer.global_step - 1  # the step just taken, 0-based
