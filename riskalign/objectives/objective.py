"""Objectives: resolved parameters plus `loss_from_logits`, the one call a trainer makes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from riskalign.objectives.functional import (
    gather_losses,
    kl_dro_weights,
    link_loss,
    reduce_losses,
    sequence_statistics,
    wasserstein_penalty,
)
from riskalign.objectives.tokens import DriftSpec, Projection, SequenceStatistics


class Objective(ABC):
    """An objective built by `riskalign.objectives.build`.

    name: the registry entry; config: the resolved parameters (plain nested
    dicts, what `build(name, **config)` takes back). requires_reference: the
    caller must pass the reference's sequence log-probabilities, as ref_logits
    or as precomputed ref_logps. requires_reference_logits: only ref_logits
    will do (token-level drift needs the reference's whole distribution at
    every position), so its log-probabilities cannot be cached.
    requires_input_embeddings: the caller must pass the policy's input
    embeddings (a penalty differentiates through them).
    """

    requires_reference: bool = True
    requires_reference_logits: bool = False
    requires_input_embeddings: bool = False

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config

    @abstractmethod
    def loss_from_logits(
        self,
        policy_logits: Tensor | Projection,
        ref_logits: Tensor | Projection | None,
        labels: Tensor,
        *,
        inputs_embeds: Tensor | None = None,
        ref_logps: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar loss with grad, detached scalar metrics) from one forward of each model.

        policy_logits, ref_logits: [2B, T, V], chosen rows 0..B−1, rejected rows
        B..2B−1; labels: [2B, T] aligned with the logits, −100 ignored. Either may be a
        Projection (hidden states [2B, T, H] and an LM head) standing for its logits: the
        token statistics then project a chunk of positions at a time.
        inputs_embeds: [2B, T, D], only when requires_input_embeddings.
        ref_logps: [2B] precomputed reference sequence log-probabilities, in
        place of ref_logits (the reference cache); ignored when ref_logits is given.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, config={self.config!r})"


class PreferenceObjective(Objective):
    """link × drift × reducer × penalty on preference pairs (docs/objectives.md §1–4).

    Reported rewards are β·(log π_θ − log π_ref) of each sequence, from the log-
    probabilities the link sees (length-normalised when link.length_normalize),
    whatever the drift; for the reference-free simpo link they are
    β·log π_θ(y)/|y|, SimPO's implicit reward.
    """

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        drift = config["drift"]
        self._drift = (
            None
            if drift["measure"] is None
            else DriftSpec(
                drift["measure"],
                tail_mass=drift["tail_mass"],
                mu=drift["mu"],
                weighting=drift["weighting"],
                normalize=drift["normalize"],
            )
        )
        self.requires_reference = config["link"]["name"] != "simpo" or self._drift is not None
        self.requires_reference_logits = self._drift is not None
        self.requires_input_embeddings = config["penalty"]["name"] is not None

    def loss_from_logits(
        self,
        policy_logits: Tensor | Projection,
        ref_logits: Tensor | Projection | None,
        labels: Tensor,
        *,
        inputs_embeds: Tensor | None = None,
        ref_logps: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        self._check_inputs(policy_logits, ref_logits, inputs_embeds, ref_logps)
        if self.requires_input_embeddings and isinstance(policy_logits, Projection):
            # the penalty differentiates a gradient, and the chunked projection's backward
            # is not itself differentiable: WDPO takes the logits
            policy_logits = policy_logits.logits()
        config, link = self.config, self.config["link"]
        beta, b = config["beta"], policy_logits.shape[0] // 2
        stats = sequence_statistics(
            policy_logits, ref_logits, labels, self._drift, chunk_size=config["chunk_size"]
        )
        log_ratio = self._log_ratio(stats, _reference_logps(stats, ref_logits, ref_logps))
        margin = self._with_drift(log_ratio[:b] - log_ratio[b:], stats.drift, b)
        losses = link_loss(
            margin, link["name"], beta=beta, epsilon=link["epsilon"], gamma=link["gamma"]
        )
        reducer = dict(config["reducer"])
        loss = reduce_losses(losses, reducer.pop("name"), **reducer)
        metrics = self._metrics(beta * log_ratio.detach(), stats, losses, b)
        loss = self._with_penalty(loss, losses, inputs_embeds, metrics)
        metrics["loss"] = loss.detach()
        return loss, metrics

    def _check_inputs(
        self,
        policy_logits: Tensor | Projection,
        ref_logits: Tensor | Projection | None,
        inputs_embeds: Tensor | None,
        ref_logps: Tensor | None,
    ) -> None:
        """Raise ValueError where an input this objective needs is missing or misshapen."""
        if self.requires_reference_logits and ref_logits is None:
            raise ValueError(
                f"objective {self.name!r} measures token-level drift: it needs ref_logits"
            )
        if self.requires_reference and ref_logits is None and ref_logps is None:
            raise ValueError(f"objective {self.name!r} needs ref_logits or ref_logps")
        if self.requires_input_embeddings and inputs_embeds is None:
            raise ValueError(
                f"objective {self.name!r} has a penalty and needs inputs_embeds [2B, T, D]"
            )
        if policy_logits.dim() != 3 or policy_logits.shape[0] % 2:
            raise ValueError(f"expected policy_logits [2B, T, V], got {tuple(policy_logits.shape)}")

    def _log_ratio(self, stats: SequenceStatistics, ref: Tensor | None) -> Tensor:
        """[2B] log π_θ − log π_ref of each sequence (log π_θ alone for simpo or without a
        reference), divided by its length where the link asks."""
        link, policy = self.config["link"], stats.policy_logps
        if link["name"] == "simpo" or link["length_normalize"]:
            lengths = stats.lengths.clamp(min=1).to(policy.dtype)
            policy = policy / lengths
            ref = None if ref is None else ref / lengths
        return policy if link["name"] == "simpo" or ref is None else policy - ref

    def _with_drift(self, margin: Tensor, drift: Tensor | None, b: int) -> Tensor:
        """The margin [B] less the rejected sequence's excess token-level drift [2B]."""
        if drift is None:
            return margin
        chosen, rejected = drift[:b], drift[b:]
        if self.config["drift"]["variant"] == 1:
            return margin - (rejected - chosen)
        # variant 2: no gradient through the chosen sequence's drift
        return margin - self.config["drift"]["alpha"] * (rejected - chosen.detach())

    def _metrics(
        self, rewards: Tensor, stats: SequenceStatistics, losses: Tensor, b: int
    ) -> dict[str, Tensor]:
        """Implicit rewards, KL and drift of each side, and the KL-DRO weights' spread."""
        metrics = _reward_metrics(rewards, stats.policy_logps.detach(), b)
        if stats.kl is not None:
            metrics["kl/chosen"], metrics["kl/rejected"] = stats.kl[:b].mean(), stats.kl[b:].mean()
        if stats.drift is not None:
            metrics["drift/chosen"] = stats.drift[:b].detach().mean()
            metrics["drift/rejected"] = stats.drift[b:].detach().mean()
        if self.config["reducer"]["name"] == "kl_dro":
            metrics.update(_dro_metrics(losses, self.config["reducer"]))
        return metrics

    def _with_penalty(
        self,
        loss: Tensor,
        losses: Tensor,
        inputs_embeds: Tensor | None,
        metrics: dict[str, Tensor],
    ) -> Tensor:
        """The loss plus the penalty term, if any (reported in metrics)."""
        penalty = self.config["penalty"]
        if penalty["name"] != "wasserstein":
            return loss
        assert inputs_embeds is not None
        term = wasserstein_penalty(
            losses, inputs_embeds, rho0=penalty["rho0"], form=penalty["form"]
        )
        metrics["penalty/wasserstein"] = term.detach()
        return loss + term


class SFTObjective(Objective):
    """Mean per-token negative log-likelihood of the chosen rows (rows="chosen", rows 0..B−1
    of a stacked pair batch) or of every row (rows="all", plain text)."""

    requires_reference = False

    def loss_from_logits(
        self,
        policy_logits: Tensor | Projection,
        ref_logits: Tensor | Projection | None,
        labels: Tensor,
        *,
        inputs_embeds: Tensor | None = None,
        ref_logps: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.config["rows"] == "chosen":
            if policy_logits.dim() != 3 or policy_logits.shape[0] % 2:
                raise ValueError(
                    f"expected policy_logits [2B, T, V], got {tuple(policy_logits.shape)}"
                )
            b = policy_logits.shape[0] // 2
            policy_logits, labels = policy_logits[:b], labels[:b]
        stats = sequence_statistics(
            policy_logits, None, labels, chunk_size=self.config["chunk_size"]
        )
        loss = -stats.policy_logps.sum() / stats.lengths.sum().clamp(min=1)
        return loss, {"loss": loss.detach(), "logps/chosen": stats.policy_logps.detach().mean()}


def _reference_logps(
    stats: SequenceStatistics, ref_logits: Tensor | Projection | None, ref_logps: Tensor | None
) -> Tensor | None:
    """[2B] reference sequence log-probabilities: from ref_logits, else the precomputed ones."""
    policy, ref = stats.policy_logps, stats.ref_logps
    if ref_logits is None and ref_logps is not None:
        ref = ref_logps.to(policy.dtype)
    if ref is not None and ref.shape != policy.shape:
        raise ValueError(f"ref_logps {tuple(ref.shape)} must be [2B] = {tuple(policy.shape)}")
    return ref


def _reward_metrics(rewards: Tensor, logps: Tensor, b: int) -> dict[str, Tensor]:
    """TRL's names: implicit rewards [2B] and policy log-probabilities [2B], chosen rows first."""
    chosen, rejected = rewards[:b], rewards[b:]
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": (chosen - rejected).mean(),
        "rewards/accuracies": (chosen > rejected).to(rewards.dtype).mean(),
        "logps/chosen": logps[:b].mean(),
        "logps/rejected": logps[b:].mean(),
    }


def _dro_metrics(losses: Tensor, reducer: dict[str, Any]) -> dict[str, Tensor]:
    """Effective sample size (Σw)²/Σw² and the largest KL-DRO weight, over the reducer's scope."""
    if reducer["scope"] == "global":
        losses, _ = gather_losses(losses)
    weights = kl_dro_weights(
        losses, tau=reducer["tau"], normalize=reducer["normalize"], weight_cap=reducer["weight_cap"]
    )
    with torch.no_grad():
        return {
            "dro/ess": weights.sum() ** 2 / weights.pow(2).sum(),
            "dro/max_weight": weights.max(),
        }
