"""The math of the objectives as pure functions of tensors (docs/objectives.md §1–4, §6).

Token level (tokens.py): `sequence_logps`, `token_drift`, `sequence_statistics`; each
takes logits or a `Projection` (hidden states and an LM head) in their place.
Pair level: `link_loss` turns a margin into per-pair losses ℓ [B].
Batch level: `reduce_losses` turns ℓ into the scalar loss.
Penalty: `wasserstein_penalty`, the WDPO gradient penalty.
Online RL: `soft_risk_keep`, the RA-RLHF soft-risk schedule.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from riskalign.objectives.tokens import (
    DriftSpec,
    Projection,
    SequenceStatistics,
    sequence_logps,
    sequence_statistics,
    token_drift,
)

__all__ = [
    "LINKS",
    "REDUCERS",
    "DriftSpec",
    "Projection",
    "SequenceStatistics",
    "gather_losses",
    "kl_dro_weights",
    "link_loss",
    "reduce_losses",
    "sequence_logps",
    "sequence_statistics",
    "soft_risk_keep",
    "token_drift",
    "wasserstein_penalty",
]

LINKS = ("sigmoid", "cdpo", "robust", "ipo", "hinge", "simpo")
REDUCERS = ("mean", "kl_dro", "dr_dpo", "cvar")


def link_loss(
    margin: Tensor, link: str, *, beta: float, epsilon: float = 0.1, gamma: float = 0.5
) -> Tensor:
    """Per-pair losses ℓ [B] from margins [B] (docs/objectives.md §1).

    margin is h = [log π_θ(y_w) − log π_ref(y_w)] − [log π_θ(y_l) − log π_ref(y_l)]
    (minus the drift term for TDPO / Ra-DPO), except for `simpo`, where it is
    the reference-free log π_θ(y_w)/|y_w| − log π_θ(y_l)/|y_l|.
    """
    scaled = beta * margin
    if link in ("sigmoid", "cdpo", "robust"):
        # DPO's loss if the label is right, and if it is flipped (rate ε)
        right, flipped = -F.logsigmoid(scaled), -F.logsigmoid(-scaled)
        if link == "sigmoid":
            return right
        if link == "cdpo":  # label smoothing
            return (1 - epsilon) * right + epsilon * flipped
        return ((1 - epsilon) * right - epsilon * flipped) / (1 - 2 * epsilon)  # unbiased
    if link == "ipo":
        return (margin - 1 / (2 * beta)) ** 2
    if link == "hinge":
        return torch.relu(1 - scaled)
    if link == "simpo":
        return -F.logsigmoid(scaled - gamma)
    raise ValueError(f"link={link!r} is not one of: {', '.join(LINKS)}")


def reduce_losses(
    losses: Tensor,
    reducer: str,
    *,
    tau: float = 0.05,
    beta_prime: float = 1.0,
    tail_mass: float = 0.5,
    normalize: bool = True,
    weight_cap: float | None = None,
    scope: str = "local",
) -> Tensor:
    """The scalar loss from per-pair losses [B] (docs/objectives.md §3).

    mean: (1/B) Σ ℓ.   kl_dro: Σ sg(w)·ℓ, w from `kl_dro_weights`.
    dr_dpo: −β′ log((1/B) Σ exp(−ℓ/β′)).   cvar: mean of the ⌈a·B⌉ largest ℓ.

    scope="global" takes the statistics over the batch gathered from every
    process of an initialised torch.distributed group: the value is the
    reducer of the global batch, and the gradient that reaches the local
    losses is scaled by the world size, so that DDP's averaging of gradients
    yields the gradient of the global reducer. Without a group it is "local".
    """
    if scope not in ("local", "global"):
        raise ValueError(f"scope={scope!r} is not one of: local, global")
    if scope == "global" and _world_size() > 1:
        everyone, mine = gather_losses(losses)
        world = _world_size()
        # The live local slice carries the gradient; the others are detached copies.
        value = reduce_losses(
            torch.cat([everyone[:mine], losses, everyone[mine + losses.numel() :]]),
            reducer,
            tau=tau,
            beta_prime=beta_prime,
            tail_mass=tail_mass,
            normalize=normalize,
            weight_cap=weight_cap,
        )
        return value + (world - 1) * (value - value.detach())
    if reducer == "mean":
        return losses.mean()
    if reducer == "kl_dro":
        weights = kl_dro_weights(losses, tau=tau, normalize=normalize, weight_cap=weight_cap)
        return (weights * losses).sum() if normalize else (weights * losses).mean()
    if reducer == "dr_dpo":
        return -beta_prime * (
            torch.logsumexp(-losses / beta_prime, dim=0) - math.log(losses.numel())
        )
    if reducer == "cvar":
        return losses.topk(_ceil_fraction(tail_mass, losses.numel())).values.mean()
    raise ValueError(f"reducer={reducer!r} is not one of: {', '.join(REDUCERS)}")


def kl_dro_weights(
    losses: Tensor, *, tau: float = 0.05, normalize: bool = True, weight_cap: float | None = None
) -> Tensor:
    """Detached KL-DRO weights [B] of per-pair losses [B].

    normalize=True (KLDPO paper, Alg. 2): w = softmax(ℓ/τ), so Σ w·ℓ has the
    gradient of τ·log mean exp(ℓ/τ). normalize=False (the released code):
    w = exp((ℓ − mean ℓ)/τ), used as mean(w·ℓ). weight_cap clips the
    unnormalised weights exp((ℓ − mean ℓ)/τ) before any normalisation.
    """
    logits = (losses.detach() - losses.detach().mean()) / tau
    if weight_cap is not None:
        logits = logits.clamp(max=math.log(weight_cap))
    return torch.softmax(logits, dim=0) if normalize else logits.exp()


def gather_losses(losses: Tensor) -> tuple[Tensor, int]:
    """All processes' detached losses concatenated in rank order, and where this process's start.

    Without an initialised torch.distributed group: (losses.detach(), 0).
    Every process must hold the same number of pairs.
    """
    if _world_size() == 1:
        return losses.detach(), 0
    parts = [torch.empty_like(losses) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, losses.detach().contiguous())
    return torch.cat(parts), dist.get_rank() * losses.numel()


def wasserstein_penalty(
    pair_losses: Tensor, inputs_embeds: Tensor, *, rho0: float = 0.01, form: str = "paper"
) -> Tensor:
    """The WDPO gradient penalty (docs/objectives.md §4), a scalar with a graph to θ.

    pair_losses: [B]; inputs_embeds: [2B, T, D], chosen rows first, the input
    embeddings the losses were computed from. With
    g_i = ‖∂ℓ_i/∂e_i,w‖² + ‖∂ℓ_i/∂e_i,l‖², form "paper" gives
    ρ₀·sqrt((1/B) Σ g_i) and form "code" (the released code) ρ₀·(1/B) Σ g_i.
    One autograd.grad of Σ ℓ_i suffices: the rows of a causal LM do not
    interact, so row i of the gradient is ∂ℓ_i/∂e_i. create_graph=True lets
    the penalty's own gradient reach θ by double backprop.

    B is the pairs of this call, one micro-batch on one process: under gradient
    accumulation or DDP a step averages the micro-batches' square roots, which
    differs from the square root over the step's batch (docs/objectives.md §4).
    """
    (grads,) = torch.autograd.grad(pair_losses.sum(), inputs_embeds, create_graph=True)
    per_row = grads.pow(2).flatten(1).sum(1)
    b = pair_losses.numel()
    mean_g = (per_row[:b] + per_row[b:]).mean()
    if form == "paper":
        # The tiny floor keeps the gradient of sqrt finite when g is exactly 0.
        return rho0 * torch.sqrt(mean_g + torch.finfo(mean_g.dtype).tiny)
    if form == "code":
        return rho0 * mean_g
    raise ValueError(f"form={form!r} is not one of: paper, code")


def soft_risk_keep(
    iteration: int, batch_size: int, total_iterations: int, warmup: int, alpha: float, rho: float
) -> int:
    """How many of B episodes RA-RLHF keeps at iteration m (docs/objectives.md §6).

    m ≤ n: all B;  m ≥ ⌈ρM⌉: ⌈αB⌉;  otherwise ⌈B·max(α, 1 − K(m − n))⌉ with
    K = (1 − α)/(⌈ρM⌉ − n). The kept episodes are the lowest-return ones.
    """
    if batch_size < 1 or total_iterations < 1 or warmup < 0:
        raise ValueError(
            f"batch_size={batch_size}, total_iterations={total_iterations}, warmup={warmup}: "
            "need batch_size >= 1, total_iterations >= 1, warmup >= 0"
        )
    if not 0.0 < alpha <= 1.0 or not 0.0 < rho <= 1.0:
        raise ValueError(f"alpha={alpha}, rho={rho}: both must be in (0, 1]")
    target = _ceil_fraction(rho, total_iterations)
    if iteration <= warmup:
        return batch_size
    if iteration >= target:
        return _ceil_fraction(alpha, batch_size)
    slope = (1.0 - alpha) / (target - warmup)
    return _ceil_fraction(max(alpha, 1.0 - slope * (iteration - warmup)), batch_size)


def _ceil_fraction(fraction: float, count: int) -> int:
    """⌈fraction · count⌉ in [1, count], immune to float noise (0.3 · 10 = 3.0000000000000004)."""
    return min(count, max(1, math.ceil(round(fraction * count, 9))))


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
