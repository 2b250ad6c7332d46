"""The frozen reference a policy is compared with, in its three forms.

- a second, frozen load of the policy's checkpoint (`load_reference`, without LoRA);
- `AdapterDisabledReference`: a LoRA policy's own forward with its adapters switched off
  (the base weights never train, so they are the reference: one copy in memory);
- `LazyReference`: one that loads at its first call (the evaluation's reference in a run
  whose training reads cached log-probabilities).

The last two are `ReferenceView`s: callables that are not modules of their own, so the mode,
gradient and device calls made on a reference are no-ops and nothing registers, saves or
optimizes their weights twice.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import PreTrainedModel

from riskalign.models import loading
from riskalign.models.lora import lora_settings

log = logging.getLogger(__name__)


def load_reference(source: str, model_cfg, policy: PreTrainedModel):
    """The frozen reference: with LoRA the policy's adapter-disabled forward (no second copy
    of the weights), otherwise a second, frozen load of the same checkpoint."""
    if lora_settings(model_cfg):
        return AdapterDisabledReference(policy)
    model = loading.load_causal_lm(source, model_cfg.dtype, model_cfg.attn_implementation)
    return loading.compiled(loading.freeze(model), model_cfg)


class ReferenceView:
    """A callable reference that is not a module of its own (the weights belong to the policy,
    or load later): the mode, gradient and device calls made on a reference are no-ops."""

    def eval(self) -> ReferenceView:
        return self

    def train(self, mode: bool = True) -> ReferenceView:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> ReferenceView:
        return self

    def to(self, *args, **kwargs) -> ReferenceView:
        return self


class AdapterDisabledReference(ReferenceView):
    """The frozen reference of a LoRA policy: the policy's forward with adapters disabled.

    Not an nn.Module on purpose: it owns no weights, so nothing registers, saves or
    optimizes them twice. Each call runs the base model in eval mode (no dropout)
    without gradients, and puts the policy's mode back.
    """

    def __init__(self, policy: torch.nn.Module) -> None:
        self.policy = policy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad(), self.policy.disable_adapter():
                return self.policy(*args, **kwargs)
        finally:
            self.policy.train(was_training)


class LazyReference(ReferenceView):
    """A reference model loaded at its first call: the evaluation's reference in a run whose
    training reads cached log-probabilities, so a run that never evaluates KL never loads it."""

    def __init__(self, load) -> None:
        self._load = load  # () -> a frozen reference, e.g. load_reference
        self._model: PreTrainedModel | None = None
        self._device: torch.device | str = "cpu"

    def __call__(self, *args, **kwargs):
        if self._model is None:
            log.info("Loading the reference model for evaluation")
            self._model = self._load().to(self._device)
        return self._model(*args, **kwargs)

    def to(self, device) -> LazyReference:
        self._device = device
        if self._model is not None:
            self._model.to(device)
        return self
