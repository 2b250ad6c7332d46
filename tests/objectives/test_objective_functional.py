"""Pair and batch level: links, reducers, the WDPO penalty, the soft-risk schedule.

docs/objectives.md §1, §3, §4 and §6.
"""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from riskalign.objectives import functional as F


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ---- links -------------------------------------------------------------------------------------

H, BETA = 0.8, 0.5  # β·h = 0.4


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("sigmoid", -log_sigmoid(0.4)),
        ("cdpo", -0.9 * log_sigmoid(0.4) - 0.1 * log_sigmoid(-0.4)),
        ("robust", (-0.9 * log_sigmoid(0.4) + 0.1 * log_sigmoid(-0.4)) / 0.8),
        ("ipo", (0.8 - 1 / (2 * 0.5)) ** 2),
        ("hinge", 1 - 0.4),
        ("simpo", -log_sigmoid(0.4 - 0.3)),
    ],
)
def test_link_by_hand(link: str, expected: float) -> None:
    value = F.link_loss(
        torch.tensor([H], dtype=torch.float64), link, beta=BETA, epsilon=0.1, gamma=0.3
    )
    assert float(value[0]) == pytest.approx(expected, abs=1e-12), f"{link} at h={H}, beta={BETA}"


def link_by_hand(link: str, h: float, beta: float, epsilon: float, gamma: float) -> float:
    """docs/objectives.md §1 at margin h, z = β·h."""
    z = beta * h
    return {
        "sigmoid": -log_sigmoid(z),
        "cdpo": -(1 - epsilon) * log_sigmoid(z) - epsilon * log_sigmoid(-z),
        "robust": (-(1 - epsilon) * log_sigmoid(z) + epsilon * log_sigmoid(-z))
        / (1 - 2 * epsilon),
        "ipo": (h - 1 / (2 * beta)) ** 2,
        "hinge": max(0.0, 1 - z),
        "simpo": -log_sigmoid(z - gamma),
    }[link]


@pytest.mark.parametrize("h", [-3.0, -0.2, 0.0, 1.5, 12.0])
def test_links_at_negative_zero_and_large_margins(h: float) -> None:
    for link in ("sigmoid", "cdpo", "robust", "ipo", "hinge", "simpo"):
        value = F.link_loss(
            torch.tensor([h], dtype=torch.float64), link, beta=0.1, epsilon=0.1, gamma=0.5
        )
        expected = link_by_hand(link, h, beta=0.1, epsilon=0.1, gamma=0.5)
        assert float(value[0]) == pytest.approx(expected, abs=1e-9), f"{link} at h={h}"


def test_hinge_is_zero_past_the_margin() -> None:
    assert float(F.link_loss(torch.tensor([30.0]), "hinge", beta=0.1)[0]) == 0.0


@pytest.mark.parametrize("link", ["cdpo", "robust"])
def test_label_noise_links_with_zero_epsilon_are_dpo(link: str) -> None:
    margins = torch.linspace(-20, 20, 41, dtype=torch.float64)
    torch.testing.assert_close(
        F.link_loss(margins, link, beta=0.3, epsilon=0.0),
        F.link_loss(margins, "sigmoid", beta=0.3),
        msg=f"{link} with epsilon 0 must equal sigmoid",
    )


# ---- reducers ----------------------------------------------------------------------------------

LOSSES = [1.0, 2.0, 4.0]


def reduce(reducer: str, losses: list[float] = LOSSES, **options: object) -> float:
    return float(F.reduce_losses(torch.tensor(losses, dtype=torch.float64), reducer, **options))


def test_reducers_by_hand() -> None:
    weights = [math.exp(x) for x in LOSSES]
    assert reduce("mean") == pytest.approx(7 / 3)
    assert reduce("kl_dro", tau=1.0) == pytest.approx(
        sum(w * x for w, x in zip(weights, LOSSES)) / sum(weights)
    )
    assert reduce("dr_dpo", beta_prime=2.0) == pytest.approx(
        -2 * math.log(sum(math.exp(-x / 2) for x in LOSSES) / 3)
    )
    assert reduce("cvar", tail_mass=0.5) == pytest.approx(3.0), "⌈0.5·3⌉ = 2 largest: (4 + 2)/2"
    assert reduce("cvar", tail_mass=1 / 3) == pytest.approx(4.0), "⌈3/3⌉ = 1 largest"
    assert reduce("cvar", tail_mass=0.34) == pytest.approx(3.0), "⌈1.02⌉ = 2"


def test_released_kl_dro_clips_unnormalised_weights() -> None:
    mean = sum(LOSSES) / 3
    weights = [min(math.exp(x - mean), 2.0) for x in LOSSES]
    expected = sum(w * x for w, x in zip(weights, LOSSES)) / 3
    assert reduce("kl_dro", tau=1.0, normalize=False, weight_cap=2.0) == pytest.approx(expected)


def test_reducer_limits() -> None:
    losses = torch.tensor([0.3, 1.7, 0.9, 2.5, 0.1], dtype=torch.float64)
    mean = losses.mean()
    torch.testing.assert_close(
        F.reduce_losses(losses, "kl_dro", tau=1e7), mean, msg="kl_dro -> mean as tau -> inf"
    )
    torch.testing.assert_close(
        F.reduce_losses(losses, "dr_dpo", beta_prime=1e7),
        mean,
        msg="dr_dpo -> mean as beta' -> inf",
    )
    torch.testing.assert_close(
        F.reduce_losses(losses, "cvar", tail_mass=1.0), mean, msg="cvar(1) == mean"
    )
    assert F.reduce_losses(losses, "kl_dro", tau=0.01) > mean, (
        "small tau leans on the largest losses"
    )
    assert F.reduce_losses(losses, "dr_dpo", beta_prime=0.5) < mean, (
        "dr_dpo down-weights large losses"
    )


def test_kl_dro_gradient_is_that_of_the_log_mean_exp_and_its_weights_are_detached() -> None:
    tau = 0.3
    losses = torch.tensor([0.3, 1.7, 0.9, 2.5], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(F.reduce_losses(losses, "kl_dro", tau=tau), losses)
    surrogate = tau * torch.log(torch.exp(losses / tau).mean())
    (expected,) = torch.autograd.grad(surrogate, losses)
    torch.testing.assert_close(
        grad, expected, msg="kl_dro gradient != gradient of tau·log mean exp(l/tau)"
    )
    torch.testing.assert_close(
        grad, torch.softmax(losses.detach() / tau, 0), msg="the gradient must be sg[w]"
    )
    weights = F.kl_dro_weights(losses, tau=tau)
    assert not weights.requires_grad, "KL-DRO weights must be detached"


def test_dr_dpo_uses_logsumexp_for_large_losses() -> None:
    value = F.reduce_losses(torch.tensor([1000.0, 2000.0]), "dr_dpo", beta_prime=1.0)
    assert torch.isfinite(value) and float(value) == pytest.approx(1000.0 + math.log(2), rel=1e-6)


# ---- the WDPO penalty --------------------------------------------------------------------------


def tiny_model(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings e [4, 3, 2] (B = 2 pairs), a map W [2, 5] and labels: logits = tanh(e) @ W."""
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(4, 3, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (4, 3), generator=generator)
    return embeds, weight, labels


def pair_losses(embeds: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logps = F.sequence_logps(torch.tanh(embeds) @ weight, labels)
    return F.link_loss(logps[:2] - logps[2:], "sigmoid", beta=1.0)


@pytest.mark.parametrize("form", ["paper", "code"])
def test_wasserstein_penalty_by_per_pair_gradients(form: str) -> None:
    embeds, weight, labels = tiny_model()
    losses = pair_losses(embeds, weight, labels)
    squared = []
    for i in range(2):
        (grad,) = torch.autograd.grad(losses[i], embeds, retain_graph=True)
        squared.append(grad[i].pow(2).sum() + grad[2 + i].pow(2).sum())
    mean_g = torch.stack(squared).mean()
    expected = 0.01 * (mean_g.sqrt() if form == "paper" else mean_g)
    value = F.wasserstein_penalty(losses, embeds, rho0=0.01, form=form)
    torch.testing.assert_close(value, expected, msg=f"penalty form {form}")


def test_wasserstein_penalty_reaches_the_parameters() -> None:
    embeds, weight, labels = tiny_model(seed=1)
    losses = pair_losses(embeds, weight, labels)
    penalty = F.wasserstein_penalty(losses, embeds, rho0=1.0)
    (grad,) = torch.autograd.grad(penalty, weight)
    assert grad.abs().max() > 1e-6, "the penalty's gradient must reach W by double backprop"


# ---- the soft-risk schedule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iteration", "kept"),
    [(0, 128), (30, 128), (31, 127), (62, 91), (94, 53), (95, 52), (400, 52)],
)
def test_soft_risk_keep_by_hand(iteration: int, kept: int) -> None:
    # B = 128, M = 100, n = 30, α = 0.4, ρ = 0.95: ⌈ρM⌉ = 95, K = 0.6 / 65;
    # m = 62: ⌈128·(1 − 32K)⌉ = ⌈90.19⌉ = 91; m ≥ 95: ⌈0.4·128⌉ = ⌈51.2⌉ = 52.
    assert F.soft_risk_keep(iteration, 128, 100, 30, 0.4, 0.95) == kept


def test_soft_risk_keep_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        F.soft_risk_keep(1, 8, 10, 2, 0.0, 0.5)


# ---- scope: global -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _global_worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        everything = torch.tensor([0.3, 1.7, 0.9, 2.5, 0.1, 1.2], dtype=torch.float64)
        mine = everything[3 * rank : 3 * rank + 3].clone().requires_grad_(True)
        out = {}
        for reducer in ("mean", "kl_dro", "dr_dpo", "cvar"):
            value = F.reduce_losses(mine, reducer, tau=0.5, tail_mass=0.5, scope="global")
            (grad,) = torch.autograd.grad(value, mine)
            out[reducer] = (float(value.detach()), grad.tolist())
        results[rank] = out
    finally:
        dist.destroy_process_group()


def test_global_scope_matches_the_whole_batch_under_gradient_averaging() -> None:
    port, manager = _free_port(), mp.Manager()
    results = manager.dict()
    mp.spawn(_global_worker, args=(2, port, results), nprocs=2, join=True)
    everything = torch.tensor(
        [0.3, 1.7, 0.9, 2.5, 0.1, 1.2], dtype=torch.float64, requires_grad=True
    )
    for reducer in ("mean", "kl_dro", "dr_dpo", "cvar"):
        value = F.reduce_losses(everything, reducer, tau=0.5, tail_mass=0.5)
        (grad,) = torch.autograd.grad(value, everything)
        for rank in (0, 1):
            got_value, got_grad = results[rank][reducer]
            assert got_value == pytest.approx(float(value.detach())), (
                f"{reducer}: rank {rank} value != whole-batch value"
            )
            # DDP averages the two ranks' gradients: each must be world_size × its share.
            torch.testing.assert_close(
                torch.tensor(got_grad, dtype=torch.float64) / 2,
                grad[3 * rank : 3 * rank + 3],
                msg=f"{reducer}: rank {rank} gradient averaged over ranks != whole-batch gradient",
            )


def test_global_scope_without_a_process_group_is_local() -> None:
    losses = torch.tensor([0.3, 1.7, 0.9])
    for reducer in ("mean", "kl_dro", "dr_dpo", "cvar"):
        assert torch.equal(
            F.reduce_losses(losses, reducer, scope="global"),
            F.reduce_losses(losses, reducer, scope="local"),
        ), reducer
