"""What every riskalign LightningModule shares: a frozen reference that stays in eval mode
and out of checkpoints, and where a module stands in its run."""

from __future__ import annotations

from typing import Any

import torch

REFERENCE_PREFIX = "reference."


def progress_step(trainer: Any, module: Any) -> int:
    """Optimizer steps, or what the module counts instead (PPO: iterations): the step
    of evaluation curves and checkpoints."""
    return int(getattr(module, "progress_step", trainer.global_step))


def trainer_precision(module: Any) -> str | None:
    """The precision of the trainer a LightningModule is attached to (None if none)."""
    return str(module.trainer.precision) if module._trainer is not None else None


class FrozenReference:
    """Mixin for a LightningModule with a frozen `self.reference` (or None): it stays in
    eval mode whatever Lightning switches, and checkpoints omit every frozen weight
    (the reference's; with LoRA, the base model's), which the run rebuilds from its
    config; loading puts them back from the live module.

    The reference may also be a view that owns no weights (a LoRA policy with its
    adapter disabled): then the frozen base weights are the only ones left out.
    """

    reference: Any

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # Lightning calls .train() on the whole module
        return self

    def _frozen_state_keys(self) -> list[str]:
        return [key for key, value in self.state_dict(keep_vars=True).items()
                if key.startswith(REFERENCE_PREFIX)
                or (isinstance(value, torch.nn.Parameter) and not value.requires_grad)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in self._frozen_state_keys():
            state.pop(key, None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        live = self.state_dict()
        for key in self._frozen_state_keys():
            checkpoint["state_dict"][key] = live[key]


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The unsharded weights of an FSDP-wrapped model, gathered to rank 0 on the CPU (a
    collective: every process calls it); None for a model that is not sharded, whose own
    state dict is complete."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if not isinstance(model, FSDP):
        return None
    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        return model.state_dict()


def unwrap_fsdp(model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return model.module if isinstance(model, FSDP) else model
