"""Fidelity to the papers' released code (docs/objectives.md §8): the settings that switch to
the released conventions, the defaults they leave unchanged, and the documented differences
pinned where they are riskalign's own behaviour."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from riskalign.modules.online import OnlineRLModule, Rollout
from riskalign.objectives import ObjectiveConfigError, ppo
from riskalign.objectives.functional import soft_risk_keep, wasserstein_penalty
from riskalign.objectives.online import OnlineSettings, RiskSchedule
from tests.conftest import CONF

D = torch.float64
SCHEDULES = [  # (B, M, n, α, ρ)
    (128, 100, 30, 0.4, 0.95), (64, 40, 0, 0.2, 0.5), (10, 7, 3, 0.3, 1.0), (7, 13, 2, 1 / 3, 0.9),
]


def online_config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "objective" / f"{name}.yaml"))


# ---- the soft-risk schedule's index base ----------------------------------------------------


@pytest.mark.parametrize("b, big_m, n, alpha, rho", SCHEDULES)
def test_released_index_base_shifts_the_schedule_one_iteration_later(b, big_m, n, alpha, rho):
    paper = RiskSchedule(alpha=alpha, warmup=n, rho=rho, index_base=1)
    released = RiskSchedule(alpha=alpha, warmup=n, rho=rho, index_base=0)
    paper_counts = [paper.keep(i, b, big_m) for i in range(big_m)]
    released_counts = [released.keep(i, b, big_m) for i in range(big_m)]
    assert released_counts == [b, *paper_counts[:-1]]
    assert paper_counts != released_counts, "the shift must be visible within M iterations"


def test_index_bases_by_hand_at_the_papers_imdb_settings():
    # B 128, M 100, n 30, α 0.4, ρ 0.95: K = 0.6 / (95 − 30); the 31st iteration (i = 30)
    # is m = 31 for the paper (keeps ⌈128·(1 − K)⌉ = 127) and m = 30 for the released code.
    paper, released = (RiskSchedule(0.4, 30, 0.95, index_base=base) for base in (1, 0))
    assert [paper.keep(i, 128, 100) for i in (29, 30, 31)] == [128, 127, 126]
    assert [released.keep(i, 128, 100) for i in (29, 30, 31)] == [128, 128, 127]
    # α is reached at m = ⌈ρM⌉ = 95: the 95th iteration (i = 94) for the paper, the 96th
    # for the released code.
    assert paper.keep(94, 128, 100) == released.keep(95, 128, 100) == math.ceil(0.4 * 128)
    assert released.keep(94, 128, 100) > math.ceil(0.4 * 128)


@pytest.mark.parametrize("name", ["ra_rlhf", "ppo"])
def test_the_default_index_base_is_the_papers_and_the_module_follows_it(name):
    settings = OnlineSettings.from_config(online_config(name))
    assert RiskSchedule().index_base == 1 and settings.risk.index_base == 1
    risk, big_m = settings.risk, 100
    for iteration in range(big_m):
        expected = soft_risk_keep(iteration + 1, settings.batch_size, big_m, risk.warmup,
                                  risk.alpha, risk.rho)
        module = SimpleNamespace(settings=settings, iteration=iteration, total_iterations=big_m)
        assert OnlineRLModule.keep_count(module) == expected, iteration


def test_the_module_counts_with_the_released_index_base_when_asked():
    config = online_config("ra_rlhf")
    config["risk"] = {**config["risk"], "index_base": 0}
    settings = OnlineSettings.from_config(config)
    counts = [OnlineRLModule.keep_count(SimpleNamespace(settings=settings, iteration=i,
                                                        total_iterations=100))
              for i in range(100)]
    assert counts == [soft_risk_keep(i, 128, 100, 30, 0.4, 0.95) for i in range(100)]


@pytest.mark.parametrize(
    "override, message",
    [({"risk": {"index_base": 2}},
      "objective.risk.index_base=2 is out of range: must be one of 0, 1"),
     ({"risk": {"index_base": True}}, "objective.risk.index_base=True is not an integer"),
     ({"risk": {"index_base": "0"}}, "objective.risk.index_base='0' is not an integer"),
     ({"whiten_unbiased": "yes"},
      "objective.whiten_unbiased='yes' is not a boolean: must be true or false"),
     ({"whiten_unbiased": 1}, "objective.whiten_unbiased=1 is not a boolean"),
     ({"risk": {"index_bas": 0}},
      "objective.risk.index_bas=0 is not a known key: allowed keys are alpha, warmup, rho")],
)
def test_bad_fidelity_settings_are_refused_in_one_line(override, message):
    config = online_config("ra_rlhf")
    for key, value in override.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ObjectiveConfigError) as error:
        OnlineSettings.from_config(config)
    assert message in str(error.value) and "\n" not in str(error.value)


# ---- advantage whitening ---------------------------------------------------------------------


def test_unbiased_whitening_differs_by_the_bessel_factor():
    values = torch.tensor([[1.0, 2.0, 4.0, 9.0], [7.0, 5.0, 3.0, -8.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=D)  # n = 4 kept: 1, 2, 4, 7
    keep, n = mask.bool(), 4
    biased = ppo.masked_whiten(values, mask)
    unbiased = ppo.masked_whiten(values, mask, unbiased=True)
    variance = values[keep].var(unbiased=False)  # mean 3.5, variance 5.25
    assert variance.item() == pytest.approx(5.25)
    eps = 1e-8  # the whitening's floor
    factor = torch.sqrt((variance * n / (n - 1) + eps) / (variance + eps))
    torch.testing.assert_close(biased[keep] / unbiased[keep], factor.expand(n))
    # The released code's whitening (trl): (x − mean) / sqrt(var_unbiased + 1e-8).
    by_hand = (values[keep] - values[keep].mean()) / torch.sqrt(values[keep].var() + eps)
    torch.testing.assert_close(unbiased[keep], by_hand)
    assert torch.equal(unbiased[~keep], torch.zeros_like(unbiased[~keep]))


def test_unbiased_whitening_of_a_single_kept_token_is_zero_not_nan():
    out = ppo.masked_whiten(torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 0.0]]), unbiased=True)
    assert torch.equal(out, torch.zeros_like(out))


def _prepared(whiten_unbiased: bool, keep: int):
    """OnlineRLModule.prepare on a hand-made rollout of 4 episodes × 3 tokens."""
    config = {**online_config("ra_rlhf"), "whiten_unbiased": whiten_unbiased}
    module = SimpleNamespace(settings=OnlineSettings.from_config(config),
                             kl_controller=SimpleNamespace(value=0.1))
    zeros = torch.zeros(4, 3)
    rollout = Rollout(
        prompts=[""] * 4, completions=[""] * 4, input_ids=torch.zeros(4, 4, dtype=torch.long),
        attention_mask=torch.ones(4, 4, dtype=torch.long), prompt_width=1,
        mask=torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]]),
        scores=torch.tensor([0.5, -1.0, 2.0, -0.3]), logps=zeros - 1.0, ref_logps=zeros - 1.2,
        values=torch.tensor([[0.1, 0.2, 0.0], [0.3, -0.1, 0.0], [0.0, 0.0, 0.0], [0.2, 0.2, 0.1]]),
    )
    return OnlineRLModule.prepare(module, rollout, keep)


def test_the_module_whitens_with_the_configured_variance():
    biased, unbiased = _prepared(False, keep=3), _prepared(True, keep=3)
    assert torch.equal(biased.kept, unbiased.kept)
    kept_tokens = biased.train_mask.bool()
    n = int(kept_tokens.sum())
    assert torch.allclose(biased.advantages[kept_tokens].std(unbiased=False),
                          torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(unbiased.advantages[kept_tokens].std(unbiased=True),
                          torch.tensor(1.0), atol=1e-4)
    ratio = biased.advantages[kept_tokens] / unbiased.advantages[kept_tokens]
    assert torch.allclose(ratio, torch.full_like(ratio, math.sqrt(n / (n - 1))), atol=1e-4)


# ---- ties in returns -------------------------------------------------------------------------


def test_risk_selection_keeps_exactly_k_episodes_when_returns_tie():
    returns = torch.tensor([0.5, -1.0, 0.5, 0.5, 2.0, 0.5], dtype=D)
    kept = ppo.risk_mask(returns, keep=3)
    assert int(kept.sum()) == 3
    assert kept.nonzero().squeeze(1).tolist() == [0, 1, 2], "ties: lower index first"
    # The released rule keeps every return <= the 3rd lowest (0.5): 5 episodes here.
    kth_lowest = returns.sort().values[2]
    assert int((returns <= kth_lowest).sum()) == 5


# ---- WDPO's paper-form penalty under accumulation / several processes ------------------------


def _penalty_of_pairs(weights: torch.Tensor, form: str) -> torch.Tensor:
    """The penalty of pairs whose loss is ℓ_i = w_i·Σ e_i,w, so g_i = w_i²·T·D (here T·D = 6)."""
    b = weights.numel()
    embeds = torch.ones(2 * b, 2, 3, dtype=D, requires_grad=True)
    losses = weights * embeds[:b].sum(dim=(1, 2))
    return wasserstein_penalty(losses, embeds, rho0=0.1, form=form)


def test_paper_penalty_of_micro_batches_is_the_mean_of_their_square_roots():
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D)
    g = 6 * weights**2
    whole = _penalty_of_pairs(weights, "paper")
    halves = [_penalty_of_pairs(part, "paper") for part in weights.split(2)]
    assert whole.item() == pytest.approx(0.1 * math.sqrt(g.mean()))
    # What a step with k·P = 2 micro-batches of 2 pairs optimizes (docs/objectives.md §4):
    stepped = sum(halves) / 2
    assert stepped.item() == pytest.approx(
        0.1 * (math.sqrt(g[:2].mean()) + math.sqrt(g[2:].mean())) / 2)
    assert stepped.item() < whole.item(), "Jensen: the mean of square roots is smaller"
    code_halves = [_penalty_of_pairs(part, "code") for part in weights.split(2)]
    assert (sum(code_halves) / 2).item() == pytest.approx(_penalty_of_pairs(weights, "code").item())
