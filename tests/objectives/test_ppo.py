"""PPO / RA-RLHF tensor math: shaped rewards, GAE, risk selection, whitening, losses, KL control.

docs/objectives.md §6.
"""

from __future__ import annotations

import math

import pytest
import torch

from riskalign.objectives import ppo

D = torch.float64


def t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=D)


def prefix_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).to(D)


# ---- shaped rewards ----------------------------------------------------------------------------


def test_shaped_rewards_by_hand() -> None:
    # log π − log π_ref = [[0.5, 0, −1], [0.5, 2, −2], [1, 1, 1]]; lengths 3, 1, 0; β = 0.1.
    policy = t([[-1.0, -2.0, -3.0], [-0.5, -1.0, -9.0], [0.0, 0.0, 0.0]])
    ref = t([[-1.5, -2.0, -2.0], [-1.0, -3.0, -7.0], [-1.0, -1.0, -1.0]])
    mask = prefix_mask([3, 1, 0], 3).bool()
    rewards, kl = ppo.shaped_rewards(t([2.0, -1.0, 5.0]), policy, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(rewards, t([[-0.05, 0.0, 2.1], [-1.05, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(kl, t([[0.5, 0.0, -1.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))


# ---- GAE ---------------------------------------------------------------------------------------


def test_gae_by_hand_gamma_one() -> None:
    # δ = [−0.1, −0.1, 0.7]; A2 = 0.7, A1 = −0.1 + 0.95·0.7, A0 = −0.1 + 0.95·A1.
    advantages, returns = ppo.gae(
        t([[0.0, 0.0, 1.0]]), t([[0.5, 0.4, 0.3]]), t([[1.0, 1.0, 1.0]]), gamma=1.0, lam=0.95
    )
    torch.testing.assert_close(advantages, t([[0.43675, 0.565, 0.7]]))
    torch.testing.assert_close(returns, t([[0.93675, 0.965, 1.0]]))


def test_gae_by_hand_with_padding() -> None:
    # γ = 0.9, γλ = 0.45. Row 0 (length 2; the padding holds junk that must be ignored):
    # δ1 = 2 − 1 = 1, A1 = 1; δ0 = 1 + 0.9·1 − 0.5 = 1.4, A0 = 1.4 + 0.45 = 1.85.
    # Row 1: δ2 = 0.6; δ1 = 0.9·0.4 − 0.1 = 0.26, A1 = 0.53; δ0 = 0.09 − 0.2, A0 = 0.1285.
    rewards = t([[1.0, 2.0, 7.0], [0.0, 0.0, 1.0]])
    values = t([[0.5, 1.0, 3.0], [0.2, 0.1, 0.4]])
    mask = prefix_mask([2, 3], 3)
    advantages, returns = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(advantages, t([[1.85, 1.0, 0.0], [0.1285, 0.53, 0.6]]))
    torch.testing.assert_close(returns, t([[2.35, 2.0, 0.0], [0.3285, 0.63, 1.0]]))


def naive_gae(
    rewards: list[float], values: list[float], length: int, gamma: float, lam: float
) -> list[float]:
    advantages = [0.0] * len(rewards)
    running = 0.0
    for step in reversed(range(length)):
        next_value = values[step + 1] if step + 1 < length else 0.0
        running = rewards[step] + gamma * next_value - values[step] + gamma * lam * running
        advantages[step] = running
    return advantages


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0)])
def test_gae_matches_a_naive_loop_and_returns_are_advantages_plus_values(
    gamma: float, lam: float
) -> None:
    gen = torch.Generator().manual_seed(0)
    width, lengths = 9, [9, 4, 0, 1, 7, 9]
    rewards = torch.randn(len(lengths), width, generator=gen, dtype=D)
    values = torch.randn(len(lengths), width, generator=gen, dtype=D)
    mask = prefix_mask(lengths, width)
    before = (rewards.clone(), values.clone())
    advantages, returns = ppo.gae(rewards, values, mask, gamma, lam)
    expected = [
        naive_gae(r.tolist(), v.tolist(), n, gamma, lam)
        for r, v, n in zip(rewards, values, lengths)
    ]
    torch.testing.assert_close(advantages, t(expected))
    torch.testing.assert_close(returns, (advantages + values) * mask)
    torch.testing.assert_close(ppo.episode_returns(returns), returns[:, 0])
    assert torch.equal(rewards, before[0]) and torch.equal(values, before[1])  # no in-place


# ---- risk selection ----------------------------------------------------------------------------


def test_risk_mask_keeps_the_lowest_returns() -> None:
    kept = ppo.risk_mask(t([3.0, 1.0, 2.0, 1.5, 5.0]), keep=2)
    assert kept.tolist() == [False, True, False, True, False]


def test_risk_mask_breaks_ties_by_index() -> None:
    kept = ppo.risk_mask(t([1.0, 1.0, 1.0, 0.0, 1.0]), keep=3)
    assert kept.tolist() == [True, True, False, True, False]


def test_risk_mask_tie_breaking_is_stable_on_a_larger_batch() -> None:
    # An unstable sort scrambles ties at this size; the kept zeros must be the first ones.
    returns = torch.zeros(33, dtype=D)
    returns[::3] = -1.0  # 11 lowest, then 22 tied zeros
    kept = ppo.risk_mask(returns, keep=20)
    zeros_kept = [i for i in range(33) if kept[i] and i % 3]
    assert kept[::3].all() and zeros_kept == [i for i in range(33) if i % 3][:9]


def test_risk_mask_keep_all_and_bad_keep() -> None:
    assert ppo.risk_mask(t([2.0, 1.0, 3.0]), keep=3).all()
    for keep in (0, 4):
        with pytest.raises(ValueError, match="keep"):
            ppo.risk_mask(t([2.0, 1.0, 3.0]), keep=keep)


# ---- whitening ---------------------------------------------------------------------------------


def test_masked_whiten_standardises_kept_positions_only() -> None:
    gen = torch.Generator().manual_seed(1)
    values = 3.0 + 2.0 * torch.randn(4, 6, generator=gen, dtype=D)
    mask = prefix_mask([6, 2, 0, 5], 6)
    keep = mask.bool()
    out = ppo.masked_whiten(values, mask)
    torch.testing.assert_close(out[keep].mean(), torch.tensor(0.0, dtype=D))
    torch.testing.assert_close(out[keep].std(unbiased=False), torch.tensor(1.0, dtype=D))
    assert torch.equal(out[~keep], torch.zeros_like(out[~keep]))

    perturbed = values.masked_fill(~keep, math.inf)
    perturbed[0, 0] = values[0, 0]  # a kept position stays
    assert torch.equal(ppo.masked_whiten(perturbed, mask), out)


def test_masked_whiten_without_shift_keeps_the_mean() -> None:
    values = t([[1.0, 2.0, 3.0, 100.0], [5.0, 100.0, 100.0, 100.0]])
    mask = prefix_mask([3, 1], 4)
    out = ppo.masked_whiten(values, mask, shift_mean=False)
    # kept: 1, 2, 3, 5 → mean 2.75, variance 2.1875
    std = math.sqrt(2.1875 + 1e-8)
    expected = t(
        [
            [2.75 - 1.75 / std, 2.75 - 0.75 / std, 2.75 + 0.25 / std, 0.0],
            [2.75 + 2.25 / std, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(out, expected)


# ---- PPO losses --------------------------------------------------------------------------------

LOSS_KW = {"clip_range": 0.2, "value_clip_range": 0.5, "value_coef": 0.1}


def test_ppo_losses_by_hand() -> None:
    # Real tokens: (ρ, A) = (1.5, 1), (0.5, 1), (1.1, −2) → −1.2, −0.5, 2.2; the fourth is padding.
    old = t([[-1.0, -1.0], [-2.0, -2.0]])
    new = old + t([[math.log(1.5), math.log(0.5)], [math.log(1.1), 5.0]])
    advantages = t([[1.0, 1.0], [-2.0, 100.0]])
    # (V, V_old, R): (1, 0, 2) → clip V to 0.5 → 0.5·2.25; (0.2, 0, 0) → 0.5·0.04;
    # (−1, 0, −3) → clip to −0.5 → 0.5·6.25.
    new_values, old_values = t([[1.0, 0.2], [-1.0, 9.0]]), t([[0.0, 0.0], [0.0, 0.0]])
    returns = t([[2.0, 0.0], [-3.0, -9.0]])
    mask = prefix_mask([2, 1], 2)
    loss, stats = ppo.ppo_losses(
        new, old, advantages, new_values, old_values, returns, mask, **LOSS_KW
    )
    policy, value = 0.5 / 3, (1.125 + 0.02 + 3.125) / 3
    torch.testing.assert_close(stats["policy_loss"], torch.tensor(policy, dtype=D))
    torch.testing.assert_close(stats["value_loss"], torch.tensor(value, dtype=D))
    torch.testing.assert_close(loss, torch.tensor(policy + 0.1 * value, dtype=D))
    torch.testing.assert_close(stats["clipfrac"], torch.tensor(2 / 3, dtype=D))
    kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3
    torch.testing.assert_close(stats["approx_kl"], torch.tensor(kl, dtype=D))
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor(3.1 / 3, dtype=D))
    assert all(not s.requires_grad and s.ndim == 0 for s in stats.values())


def random_batch(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (4, 5)
    names = ("new_logps", "old_logps", "advantages", "new_values", "old_values", "returns")
    batch = {name: torch.randn(shape, generator=gen, dtype=D) for name in names}
    batch["new_logps"] = batch["old_logps"] + 0.3 * torch.randn(shape, generator=gen, dtype=D)
    return batch


def test_ppo_losses_masked_tokens_get_no_gradient_and_change_nothing() -> None:
    batch = random_batch(2)
    # Episode 2 is not kept (RA-RLHF multiplies by the kept-episode mask); the others are padded.
    token_mask = prefix_mask([5, 3, 4, 1], 5)
    mask = token_mask * torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=D)[:, None]
    dropped = ~mask.bool()

    def run(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        new_logps = b["new_logps"].clone().requires_grad_(True)
        new_values = b["new_values"].clone().requires_grad_(True)
        rest = {k: v for k, v in b.items() if k not in ("new_logps", "new_values")}
        loss, stats = ppo.ppo_losses(
            new_logps=new_logps, new_values=new_values, mask=mask, **rest, **LOSS_KW
        )
        grad_logps, grad_values = torch.autograd.grad(loss, (new_logps, new_values))
        return loss, stats, grad_logps, grad_values

    loss, stats, grad_logps, grad_values = run(batch)
    assert torch.equal(grad_logps[dropped], torch.zeros_like(grad_logps[dropped]))
    assert torch.equal(grad_values[dropped], torch.zeros_like(grad_values[dropped]))
    # the check is not vacuous (clipping may still zero a few kept tokens' gradients)
    assert (grad_logps[~dropped] != 0).any() and (grad_values[~dropped] != 0).any()

    perturbed = {
        name: value.masked_fill(dropped, fill)
        for (name, value), fill in zip(batch.items(), (50.0, -50.0, math.inf, 1e6, -7.0, math.nan))
    }
    loss2, stats2, grad_logps2, grad_values2 = run(perturbed)
    assert torch.equal(loss2, loss)
    assert all(torch.equal(stats2[k], stats[k]) for k in stats)
    assert torch.equal(grad_logps2, grad_logps) and torch.equal(grad_values2, grad_values)


def test_ppo_losses_with_nothing_kept_is_zero() -> None:
    batch = random_batch(3)
    loss, stats = ppo.ppo_losses(**batch, mask=torch.zeros(4, 5, dtype=D), **LOSS_KW)
    assert loss.item() == 0.0 and stats["clipfrac"].item() == 0.0


def test_ppo_losses_clipfrac_counts_ratios_outside_the_band() -> None:
    ratios = t([[1.0, 1.3, 0.7, 1.19, 2.0]])  # |ρ − 1| > 0.2: 1.3 and 0.7; 2.0 is padding
    old = torch.zeros_like(ratios)
    zeros = torch.zeros_like(ratios)
    _, stats = ppo.ppo_losses(
        ratios.log(), old, zeros, zeros, zeros, zeros, prefix_mask([4], 5), **LOSS_KW
    )
    torch.testing.assert_close(stats["clipfrac"], torch.tensor(0.5, dtype=D))


# ---- adaptive KL controller --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kl", "error"), [(9.0, 0.2), (6.6, 0.1), (6.0, 0.0), (5.4, -0.1), (3.0, -0.2), (60.0, 0.2)]
)
def test_adaptive_kl_controller_is_proportional_and_clipped(kl: float, error: float) -> None:
    controller = ppo.AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    controller.update(kl, n_steps=128)
    assert controller.value == pytest.approx(0.2 * (1 + error * 128 / 10_000))


def test_adaptive_kl_controller_fixed_and_checkpointed() -> None:
    fixed = ppo.AdaptiveKLController(0.2, target=None, horizon=10_000)
    fixed.update(100.0, n_steps=128)
    assert fixed.value == 0.2

    controller = ppo.AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    controller.update(9.0, n_steps=500)
    restored = ppo.AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value != 0.2


# ---- entropy -----------------------------------------------------------------------------------


def test_entropy_of_uniform_logits_is_log_vocab() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 7, generator=gen, dtype=D)  # padding: arbitrary distributions
    mask = prefix_mask([3, 1], 3)
    uniform = torch.full((2, 3, 1), 2.5, dtype=D).expand(2, 3, 7)
    logits = torch.where(mask.bool()[..., None], uniform, logits)
    torch.testing.assert_close(
        ppo.entropy_from_logits(logits, mask), torch.tensor(math.log(7.0), dtype=D)
    )


def test_entropy_matches_categorical_and_tolerates_minus_inf() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 6, generator=gen, dtype=D)
    logits[:, :, 0] = -math.inf  # a banned token: 0·log 0 must count as 0
    mask = prefix_mask([4, 2], 4)
    per_token = torch.distributions.Categorical(logits=logits).entropy()
    expected = per_token[mask.bool()].mean()
    torch.testing.assert_close(ppo.entropy_from_logits(logits, mask), expected)
