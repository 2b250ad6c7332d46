"""The tensor math of PPO and RA-RLHF's CVaR PPO (docs/objectives.md §6), as pure functions.

A batch holds B episodes; the response tokens are padded to length T and `mask` [B, T]
(float or bool) is 1 on real response tokens, a prefix of each row starting at column 0.
No function changes its inputs or detaches them: rollout tensors (log-probabilities of the
sampling policy, values, rewards) are expected detached by the caller.

Per iteration: `shaped_rewards` → `gae` → `episode_returns` → `risk_mask` (with the count
from `functional.soft_risk_keep`) → multiply the token mask by the kept episodes →
`masked_whiten` the advantages → `ppo_losses` per minibatch; `AdaptiveKLController` adapts
the KL coefficient from the KL of the kept episodes.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "AdaptiveKLController",
    "entropy_from_logits",
    "episode_returns",
    "gae",
    "masked_mean",
    "masked_whiten",
    "ppo_losses",
    "risk_mask",
    "shaped_rewards",
]

_EPS = 1e-8


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values over positions where mask is nonzero; 0 when there is none.

    torch.where, not a product, so that inf/nan at masked positions cannot leak into the
    value or (as 0 · inf) into the gradient.
    """
    keep = mask.bool()
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    return total / keep.sum().clamp(min=1).to(values.dtype)


def shaped_rewards(
    scores: Tensor, policy_logps: Tensor, ref_logps: Tensor, mask: Tensor, kl_coef: float
) -> tuple[Tensor, Tensor]:
    """Per-token rewards r̄ [B, T] and per-token KL estimates [B, T].

    r̄_t = −kl_coef·(log π_θ − log π_ref) on real tokens, plus the score at each row's last
    real token; kl = (log π_θ − log π_ref)·mask. Rows without a real token are all zeros.
    """
    keep = mask.bool()
    zeros = torch.zeros_like(policy_logps)
    kl = torch.where(keep, policy_logps - ref_logps, zeros)
    # The last real token is the one where the running count of real tokens reaches the total.
    count = keep.long().cumsum(dim=1)
    is_last = keep & (count == count[:, -1:])
    bonus = torch.where(is_last, scores.to(policy_logps.dtype).unsqueeze(1), zeros)
    return -kl_coef * kl + bonus, kl


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation: (advantages [B, T], returns [B, T]), zero on padding.

    δ_t = r_t + γ V_{t+1} − V_t and A_t = δ_t + γλ A_{t+1}, where V and A after the last real
    token are 0 (the episode ends there); returns = A + V.
    """
    keep = mask.bool()
    zeros = torch.zeros_like(values)
    rewards = torch.where(keep, rewards, zeros)
    values = torch.where(keep, values, zeros)  # makes V_{t+1} = 0 past the last real token
    next_value = zeros[:, 0]
    next_advantage = zeros[:, 0]
    columns: list[Tensor] = []
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = torch.where(keep[:, t], delta + gamma * lam * next_advantage, zeros[:, t])
        columns.append(advantage)
        next_value, next_advantage = values[:, t], advantage
    advantages = torch.stack(columns[::-1], dim=1)
    return advantages, advantages + values


def episode_returns(returns: Tensor) -> Tensor:
    """The return [B] of each episode: the return at its first response token."""
    return returns[:, 0]


def risk_mask(episode_returns: Tensor, keep: int) -> Tensor:
    """Bool [B], True on the `keep` episodes with the lowest returns (ties: lower index first)."""
    batch = episode_returns.numel()
    if not 1 <= keep <= batch:
        raise ValueError(f"keep={keep} must be in [1, {batch}]")
    # Exactly `keep`, whatever the ties: the schedule's count is the batch that trains. The
    # released code keeps every episode whose return is <= the keep-th lowest, so ties at
    # that return can make it keep more (docs/objectives.md §8).
    order = torch.argsort(episode_returns.detach(), stable=True)
    kept = torch.zeros(batch, dtype=torch.bool, device=episode_returns.device)
    return kept.index_fill(0, order[:keep], True)


def masked_whiten(
    values: Tensor, mask: Tensor, shift_mean: bool = True, unbiased: bool = False
) -> Tensor:
    """Whiten with the mean and variance of the masked positions; 0 where mask is 0.

    The variance is biased (divides by the count n) unless `unbiased`, which multiplies it by
    n/(n − 1) as the released RA-RLHF code (trl) does. shift_mean=False adds the mean back,
    scaling only.
    """
    keep = mask.bool()
    zeros = torch.zeros_like(values)
    mean = masked_mean(values, keep)
    centred = torch.where(keep, values - mean, zeros)
    variance = masked_mean(centred.square(), keep)
    if unbiased:
        variance = variance * _bessel_factor(keep, variance.dtype)
    whitened = centred * torch.rsqrt(variance + _EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(keep, whitened, zeros)


def _bessel_factor(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """n/(n − 1) for n kept positions. n <= 1 leaves every centred value 0, so any finite
    factor does: clamping n − 1 at 1 avoids trl's refusal of n = 1 and a host sync."""
    count = keep.sum().to(dtype)
    return count / (count - 1).clamp(min=1)


def ppo_losses(
    new_logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip_range: float,
    value_clip_range: float,
    value_coef: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped PPO loss (a scalar) and detached scalar statistics.

    policy: −min(ρA, clip(ρ, 1 ± ε)A); value: 0.5·max((V − R)², (clip(V, V_old ± ε_v) − R)²);
    both averaged over masked tokens; loss = policy + value_coef·value. Tokens with mask 0
    contribute nothing, to the value nor to the gradient: RA-RLHF drops the episodes it does
    not keep by zeroing their rows of the mask.
    """
    keep = mask.bool()
    # Zero every input at masked positions first: whatever they hold (even inf or nan)
    # then cannot reach the loss or, as 0 · inf = nan, the gradient.
    new_logps, old_logps, advantages, new_values, old_values, returns = (
        torch.where(keep, x, torch.zeros_like(x))
        for x in (new_logps, old_logps, advantages, new_values, old_values, returns)
    )
    log_ratio = new_logps - old_logps
    ratio = log_ratio.exp()
    clipped_ratio = ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    policy_tokens = torch.maximum(-advantages * ratio, -advantages * clipped_ratio)
    policy_loss = masked_mean(policy_tokens, keep)

    clipped_values = old_values + (new_values - old_values).clamp(
        -value_clip_range, value_clip_range
    )
    value_tokens = 0.5 * torch.maximum(
        (new_values - returns).square(), (clipped_values - returns).square()
    )
    value_loss = masked_mean(value_tokens, keep)

    loss = policy_loss + value_coef * value_loss
    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "clipfrac": masked_mean(((ratio - 1.0).abs() > clip_range).to(ratio.dtype), keep),
            "approx_kl": masked_mean(0.5 * log_ratio.square(), keep),
            "ratio_mean": masked_mean(ratio, keep),
        }
    return loss, stats


class AdaptiveKLController:
    """The proportional KL-coefficient controller of Ziegler et al. (2019).

    update: e = clip(KL/target − 1, −0.2, 0.2); β ← β·(1 + e·n_steps/horizon).
    target=None keeps β fixed.
    """

    def __init__(self, init_kl_coef: float, target: float | None, horizon: int) -> None:
        if target is not None and target <= 0:
            raise ValueError(f"target={target} must be positive (or None for a fixed coefficient)")
        if horizon <= 0:
            raise ValueError(f"horizon={horizon} must be positive")
        self._value = float(init_kl_coef)
        self.target = target
        self.horizon = horizon

    @property
    def value(self) -> float:
        return self._value

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.target is None:
            return
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self._value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self._value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._value = float(state["value"])


def entropy_from_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean entropy of the token distributions [B, T, V] over masked positions, a scalar.

    One log_softmax; clamping it keeps 0·log 0 at 0 where a logit is −inf.
    """
    logps = torch.log_softmax(logits, dim=-1)
    probs = logps.exp()
    entropy = -(probs * logps.clamp(min=torch.finfo(logps.dtype).min)).sum(dim=-1)
    return masked_mean(entropy, mask)
