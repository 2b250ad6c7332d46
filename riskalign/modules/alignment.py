"""AlignmentModule: a trainable policy, a frozen reference and an objective."""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning import LightningModule
from transformers import PreTrainedModel

from riskalign.models.loading import freeze
from riskalign.models.response_logits import (
    response_entropy,
    response_layout,
    response_logits,
    response_projection,
)
from riskalign.modules.common import (
    FrozenReference,
    full_state_dict,
    trainer_precision,
    unwrap_fsdp,
)
from riskalign.modules.optimization import build_optimizer, gradient_norm
from riskalign.objectives.tokens import IGNORE_INDEX

log = logging.getLogger(__name__)

PROGRESS_BAR_METRICS = ("loss", "rewards/accuracies", "rewards/margins")


class AlignmentModule(FrozenReference, LightningModule):
    """One forward per model per step on the stacked [2B, T] batch, then the objective.

    The reference is frozen: eval mode, no gradients, outside the optimizer and
    left out of checkpoints (it is rebuilt from its config). It is None for
    objectives that never look at it (SimPO, SFT), and when batches carry the
    reference's cached sequence log-probabilities (`reference_logps`, see
    riskalign.training.reference_cache); with LoRA it is the policy's adapter-disabled view.

    `head_in_chunks` (default True): the objective gets each model's final hidden states
    and LM head rather than its logits, and projects a chunk of positions at a time, so
    no [2B, R, V] logits are made (riskalign.models.response_logits.response_projection,
    which falls back to logits where a head is more than a linear map or is sharded).
    """

    head_in_chunks: bool = True
    # rows packed into one sequence without their padding, where the model keeps them apart
    # (riskalign.models.packing)
    pack_rows: bool = True

    def __init__(
        self,
        policy: PreTrainedModel,
        reference: PreTrainedModel | None,
        objective: Any,
        optim: dict[str, Any],
    ) -> None:
        super().__init__()
        self.policy = policy.train()  # from_pretrained returns eval mode; Lightning keeps modes
        self.reference = freeze(reference) if reference is not None else None
        self.objective = objective
        self.optim = optim
        if objective.requires_input_embeddings:
            self._enable_double_backprop()

    def _enable_double_backprop(self) -> None:
        """The Wasserstein penalty differentiates a gradient: attention needs 2nd derivatives."""
        current = getattr(self.policy.config, "_attn_implementation", None)
        if current != "eager":
            self.policy.set_attn_implementation("eager")
        log.info(
            "Objective needs input-embedding gradients (Wasserstein penalty): feeding "
            "inputs_embeds and using eager attention (was %s) for double backprop", current
        )

    def loss_and_metrics(
        self, batch: dict[str, torch.Tensor], response_statistics: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One forward of each model, its logits (or hidden states, see head_in_chunks) at
        response positions only.

        `response_statistics` adds the policy's mean entropy on response tokens and the
        batch's token counts (what a researcher checks for collapse and throughput)."""
        positions, labels = response_layout(batch["labels"])
        embeds = None
        if self.objective.requires_input_embeddings:
            embeds = self.policy.get_input_embeddings()(batch["input_ids"])
            if not embeds.requires_grad and torch.is_grad_enabled():
                # frozen embeddings (LoRA): the penalty still differentiates the losses
                # with respect to them; the weights themselves stay frozen
                embeds.requires_grad_(True)
        # WDPO's penalty (input embeddings) differentiates a gradient: the chunked
        # projection's backward is not itself differentiable, so that keeps the logits path
        chunked = self.head_in_chunks and embeds is None
        if chunked:
            policy_logits = response_projection(self.policy, batch, positions, self.pack_rows)
        else:
            policy_logits = response_logits(self.policy, batch, positions, embeds, self.pack_rows)
        ref_logits, ref_logps = None, batch.get("reference_logps")
        if self.objective.requires_reference and ref_logps is None:
            if self.reference is None:
                raise RuntimeError(f"objective {self.objective.name!r} needs the reference, "
                                   "but there is neither a reference model nor cached log-probs")
            with torch.no_grad():
                ref_logits = (response_projection if chunked else response_logits)(
                    self.reference, batch, positions, pack=self.pack_rows)
        extra = {"inputs_embeds": embeds} if embeds is not None else {}
        loss, metrics = self.objective.loss_from_logits(
            policy_logits, ref_logits, labels, ref_logps=ref_logps, **extra
        )
        if response_statistics:
            metrics = {
                **metrics,
                "entropy/response": response_entropy(policy_logits.detach(), labels),
                "tokens/response": (labels != IGNORE_INDEX).sum().float(),
                "tokens/input": batch["attention_mask"].sum().float(),
            }
        return loss, metrics

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # Each self.log call costs Lightning ~2 ms of bookkeeping (more than a small model's
        # step): the loss every step, the rest only on the steps the loggers write.
        writes_logs = self._writes_logs()
        loss, metrics = self.loss_and_metrics(batch, response_statistics=writes_logs)
        pairs = batch["input_ids"].size(0) // 2
        # under DDP, log means over every process's pairs
        distributed = self._trainer is not None and self.trainer.world_size > 1
        for name, value in metrics.items():
            if name == "loss" or writes_logs:
                self.log(name, value, on_step=True, prog_bar=name in PROGRESS_BAR_METRICS,
                         batch_size=pairs, sync_dist=distributed)
        if writes_logs and self._trainer is not None:
            self.log("lr", self.lr_schedulers().get_last_lr()[0], on_step=True, batch_size=pairs)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the gradients' norm before clipping (on the steps the loggers write)."""
        if self._writes_logs():
            self.log("grad_norm", gradient_norm(optimizer), on_step=True)

    def _writes_logs(self) -> bool:
        if self._trainer is None:
            return True
        return bool(getattr(self.trainer._logger_connector, "should_update_logs", True))

    def configure_optimizers(self):
        steps = self.trainer.max_steps if self._trainer is not None else 1
        return build_optimizer(self.policy.parameters(), self.optim, steps,
                               trainer_precision(self))

    def save_policy(self, directory) -> None:
        """Write the policy as an HF directory (LoRA: the adapter). Every process must call
        it: under FSDP the full weights are gathered from all of them; rank 0 writes."""
        state = full_state_dict(self.policy)
        if self._trainer is None or self.trainer.is_global_zero:
            unwrap_fsdp(self.policy).save_pretrained(directory, state_dict=state)
