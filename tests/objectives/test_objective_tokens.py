"""Token level: log-probabilities, sequential KL and the drift measures of docs/objectives.md §2."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from riskalign.errors import ConfigError
from riskalign.objectives import functional as F

# A one-position distribution pair whose Δ = log(p/q) is sorted descending:
# Δ = [log 4, log 1.5, log 2/3, log 1/4].
P = [0.4, 0.3, 0.2, 0.1]
Q = [0.1, 0.2, 0.3, 0.4]
DELTA = [math.log(p / q) for p, q in zip(P, Q)]
KL = sum(p * d for p, d in zip(P, DELTA))


def one_position(p: list[float], q: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(policy_logits, ref_logits, labels) of one sequence with one counted position: [1, 1, V]."""
    ref = torch.tensor(p, dtype=torch.float64).log().view(1, 1, -1)
    policy = torch.tensor(q, dtype=torch.float64).log().view(1, 1, -1)
    return policy, ref, torch.zeros(1, 1, dtype=torch.long)


def drift(measure: str, p: list[float] = P, q: list[float] = Q, **options: object) -> float:
    policy, ref, labels = one_position(p, q)
    return float(F.token_drift(ref, policy, labels, measure, **options)[0])


def random_batch(
    n: int = 4,
    t: int = 5,
    v: int = 7,
    scale: float = 2.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """policy logits [n, t, v], reference logits, labels with a few -100."""
    generator = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, t, v, generator=generator, dtype=dtype) * scale
    policy = ref + torch.randn(n, t, v, generator=generator, dtype=dtype) * scale / 2
    labels = torch.randint(0, v, (n, t), generator=generator)
    labels[:, 0] = -100
    labels[0, -1] = -100
    return policy, ref, labels


def sorted_cvar(delta: torch.Tensor, p: torch.Tensor, a: float) -> torch.Tensor:
    """The spec's recipe, literally: sort by Δ descending, keep whole entries while the mass
    stays <= a and the boundary entry's fraction, divide by a. delta, p: [V] → scalar."""
    order = delta.argsort(descending=True)
    mass = p[order]
    before = mass.cumsum(0) - mass
    weight = ((a - before) / mass).clamp(0, 1)
    return (weight * mass * delta[order]).sum() / a


# ---- hand-computed values ------------------------------------------------------------------


def test_mean_is_the_kl_of_reference_and_policy() -> None:
    assert drift("mean") == pytest.approx(KL, abs=1e-12), "measure mean must be KL(p || q)"


def test_cvar_whose_tail_boundary_splits_an_entry() -> None:
    # a = 0.5: all of entry 0 (mass 0.4) and 0.1 of entry 1's 0.3.
    expected = (0.4 * DELTA[0] + 0.1 * DELTA[1]) / 0.5
    assert drift("cvar", tail_mass=0.5) == pytest.approx(expected, abs=1e-12), (
        "CVaR_0.5 must split entry 1"
    )
    # a = 0.95: entries 0-2 (0.9) and 0.05 of entry 3.
    expected = (0.4 * DELTA[0] + 0.3 * DELTA[1] + 0.2 * DELTA[2] + 0.05 * DELTA[3]) / 0.95
    assert drift("cvar", tail_mass=0.95) == pytest.approx(expected, abs=1e-12), (
        "CVaR_0.95 must split entry 3"
    )


def test_cvar_without_normalisation_does_not_divide_by_the_tail_mass() -> None:
    expected = 0.4 * DELTA[0] + 0.1 * DELTA[1]
    assert drift("cvar", tail_mass=0.5, normalize=False) == pytest.approx(expected, abs=1e-12)


def test_entropic_risk_by_hand() -> None:
    # (1/μ) log Σ p · exp(μΔ) = (1/μ) log Σ p^(1+μ) q^(−μ)
    for mu in (1.0, 2.0, 0.3):
        expected = math.log(sum(p ** (1 + mu) * q ** (-mu) for p, q in zip(P, Q))) / mu
        assert drift("erm", mu=mu) == pytest.approx(expected, abs=1e-12), f"ERM with mu={mu}"


@pytest.mark.parametrize(
    ("tail_mass", "kept"),
    [
        # quantile 0.5 of the 4 values, interpolated: (log 2/3 + log 1.5)/2 = 0: keeps 0 and 1
        (0.5, [0, 1]),
        # quantile 0.1: log 1/4 + 0.3·(log 2/3 − log 1/4): keeps 0, 1, 2
        (0.9, [0, 1, 2]),
        # quantile 0 is the minimum, log 1/4: everything above it
        (1.0, [0, 1, 2]),
    ],
)
def test_released_code_cvar_is_a_uniform_quantile_without_division(
    tail_mass: float, kept: list[int]
) -> None:
    expected = sum(P[i] * DELTA[i] for i in kept)
    value = drift("cvar", tail_mass=tail_mass, weighting="uniform", normalize=False)
    assert value == pytest.approx(expected, abs=1e-12), (
        "uniform weighting: Σ p·Δ above the (1 − c) quantile"
    )


def test_uniform_quantile_matches_torch_quantile() -> None:
    policy, ref, labels = random_batch(n=3, t=4, v=11, seed=3)
    labels[:] = 0
    for c in (0.13, 0.5, 0.97):
        delta = torch.log_softmax(ref, -1) - torch.log_softmax(policy, -1)
        threshold = torch.quantile(delta, 1 - c, dim=-1, keepdim=True)
        expected = (ref.softmax(-1) * delta * (delta > threshold)).sum(-1).sum(-1)
        value = F.token_drift(
            ref, policy, labels, "cvar", tail_mass=c, weighting="uniform", normalize=False
        )
        torch.testing.assert_close(
            value, expected, msg=f"uniform CVaR with c={c} differs from torch.quantile's"
        )


def test_sequence_logps_sums_counted_positions_in_float32() -> None:
    logits = torch.randn(2, 4, 6, dtype=torch.bfloat16)
    labels = torch.tensor([[1, 2, -100, 3], [-100, -100, 5, 0]])
    log_probs = torch.log_softmax(logits.float(), -1)
    expected = torch.stack(
        [
            log_probs[0, 0, 1] + log_probs[0, 1, 2] + log_probs[0, 3, 3],
            log_probs[1, 2, 5] + log_probs[1, 3, 0],
        ]
    )
    value = F.sequence_logps(logits, labels)
    assert value.dtype == torch.float32, "log-probabilities must be computed in float32"
    torch.testing.assert_close(value, expected, msg="sum over counted positions only")


def test_statistics_sum_per_row_and_ignore_masked_positions() -> None:
    policy, ref, labels = random_batch()
    stats = F.sequence_statistics(
        policy, ref, labels, F.DriftSpec("cvar", tail_mass=0.7), chunk_size=3
    )
    counted = labels != -100
    log_q, log_p = torch.log_softmax(policy, -1), torch.log_softmax(ref, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    cvar = torch.stack(
        [
            torch.stack(
                [sorted_cvar(log_p[i, t] - log_q[i, t], log_p[i, t].exp(), 0.7) for t in range(5)]
            )
            for i in range(4)
        ]
    )
    torch.testing.assert_close(stats.kl, (kl * counted).sum(-1), msg="KL per row")
    torch.testing.assert_close(stats.drift, (cvar * counted).sum(-1), msg="CVaR drift per row")
    torch.testing.assert_close(stats.lengths, counted.sum(-1), msg="counted tokens per row")
    assert not stats.kl.requires_grad and not stats.ref_logps.requires_grad, (
        "KL and reference log-probs are metrics"
    )


def test_chunk_size_does_not_change_anything() -> None:
    policy, ref, labels = random_batch(seed=5)
    policy.requires_grad_(True)
    spec = F.DriftSpec("cvar", tail_mass=0.6)
    results = []
    for chunk_size in (1, 4, 1000):
        stats = F.sequence_statistics(policy, ref, labels, spec, chunk_size=chunk_size)
        (grad,) = torch.autograd.grad((stats.policy_logps + stats.drift).sum(), policy)
        results.append((stats.drift, stats.kl, grad))
    for drift_value, kl, grad in results[1:]:
        torch.testing.assert_close(drift_value, results[0][0], msg="drift depends on chunk_size")
        torch.testing.assert_close(kl, results[0][1], msg="KL depends on chunk_size")
        torch.testing.assert_close(grad, results[0][2], msg="gradient depends on chunk_size")


# ---- the exact CVaR search against the sort recipe ------------------------------------------


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    vocabulary=st.integers(1, 200),
    tail_mass=st.floats(0.001, 1.0),
    rounding=st.sampled_from([None, 0, 1]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    radix=st.booleans(),
)
def test_cvar_equals_the_sort_recipe(
    seed: int, vocabulary: int, tail_mass: float, rounding: int | None, dtype: torch.dtype,
    radix: bool,
) -> None:
    """Both threshold searches (radix select, used for large vocabularies, and sorting, used
    up to 2048 entries) against the recipe, on any vocabulary size."""
    from unittest import mock

    from riskalign.objectives import tokens

    with mock.patch.object(tokens, "_SORT_AT_MOST", 0 if radix else 1 << 30):
        _check_cvar_against_the_sort_recipe(seed, vocabulary, tail_mass, rounding, dtype)


def _check_cvar_against_the_sort_recipe(
    seed: int, vocabulary: int, tail_mass: float, rounding: int | None, dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(seed)
    ref = torch.randn(3, 1, vocabulary, generator=generator, dtype=dtype) * 3
    policy = torch.randn(3, 1, vocabulary, generator=generator, dtype=dtype) * 3
    if rounding is not None:  # many exact ties in Δ
        ref, policy = ref.round(decimals=rounding), policy.round(decimals=rounding)
    labels = torch.zeros(3, 1, dtype=torch.long)
    value = F.token_drift(ref, policy, labels, "cvar", tail_mass=tail_mass)
    log_p, log_q = torch.log_softmax(ref.double(), -1), torch.log_softmax(policy.double(), -1)
    expected = torch.stack(
        [sorted_cvar(log_p[i, 0] - log_q[i, 0], log_p[i, 0].exp(), tail_mass) for i in range(3)]
    )
    tolerance = 1e-9 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(
        value.double(), expected, atol=tolerance, rtol=tolerance, msg="threshold search != sort"
    )


# ---- limits of docs/objectives.md §2 ------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 4.0))
def test_measure_limits(seed: int, scale: float) -> None:
    policy, ref, labels = random_batch(seed=seed, scale=scale)
    kl = F.token_drift(ref, policy, labels, "mean")

    whole = F.token_drift(ref, policy, labels, "cvar", tail_mass=1.0)
    torch.testing.assert_close(whole, kl, msg="CVaR with tail_mass 1 must equal KL")

    previous = kl
    for a in (0.9, 0.6, 0.3, 0.1, 0.01):
        cvar = F.token_drift(ref, policy, labels, "cvar", tail_mass=a)
        assert bool((cvar >= previous - 1e-9).all()), (
            f"CVaR must not decrease as tail_mass shrinks to {a}"
        )
        previous = cvar

    for mu in (0.5, 2.0):
        erm = F.token_drift(ref, policy, labels, "erm", mu=mu)
        assert bool((erm >= kl - 1e-9).all()), f"ERM(mu={mu}) must be >= KL (Jensen)"
    near_zero = F.token_drift(ref, policy, labels, "erm", mu=1e-6)
    torch.testing.assert_close(
        near_zero, kl, atol=1e-4, rtol=1e-4, msg="ERM must tend to KL as mu -> 0"
    )


def test_cvar_tends_to_the_largest_delta_as_the_tail_vanishes() -> None:
    # a below the mass of the top entry: CVaR is that entry's Δ (the max).
    assert drift("cvar", tail_mass=1e-3) == pytest.approx(max(DELTA), abs=1e-12)


# ---- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", ["mean", "cvar", "erm", "uniform"])
def test_gradcheck_of_log_probs_and_drift(measure: str) -> None:
    policy, ref, labels = random_batch(n=2, t=3, v=6, seed=11)
    options = {"tail_mass": 0.55}
    if measure == "uniform":
        measure, options = "cvar", {"tail_mass": 0.55, "weighting": "uniform", "normalize": False}

    def function(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = F.sequence_statistics(
            logits, ref, labels, F.DriftSpec(measure, **options), chunk_size=2
        )
        return stats.policy_logps, stats.drift

    assert torch.autograd.gradcheck(function, (policy.requires_grad_(True),)), f"{measure} gradient"
    assert torch.autograd.gradgradcheck(function, (policy,)), (
        f"{measure} second derivative (WDPO double backprop)"
    )


def test_at_step_zero_every_drift_gradient_vanishes() -> None:
    # policy == reference: Δ = 0 everywhere, every entry ties at the CVaR threshold.
    _, ref, labels = random_batch(seed=2)
    policy = ref.clone().requires_grad_(True)
    for measure in ("mean", "cvar", "erm"):
        (grad,) = torch.autograd.grad(F.token_drift(ref, policy, labels, measure).sum(), policy)
        assert grad.abs().max() < 1e-12, (
            f"{measure}: at policy == reference the drift gradient must be 0"
        )


def test_no_gradient_reaches_the_reference() -> None:
    policy, ref, labels = random_batch()
    ref.requires_grad_(True)
    value = F.token_drift(ref, policy.requires_grad_(True), labels, "cvar")
    (grad,) = torch.autograd.grad(value.sum(), ref, allow_unused=True)
    assert grad is None, "the reference logits are constants"


def test_negative_infinite_logits_give_finite_results() -> None:
    # A masked vocabulary entry (−inf in both models) and one the policy alone rules out.
    ref = torch.tensor([[[0.0, 1.0, -math.inf, 0.5]]])
    policy = torch.tensor([[[0.2, 0.3, -math.inf, -math.inf]]], requires_grad=True)
    labels = torch.tensor([[1]])
    for measure in ("mean", "cvar"):
        value = F.token_drift(ref, policy, labels, measure)
        (grad,) = torch.autograd.grad(value.sum(), policy)
        assert not torch.isnan(value).any() and not torch.isnan(grad).any(), f"{measure} gave nan"
    ref_only_masked = torch.tensor([[[0.0, 1.0, -math.inf, 0.5]]])
    policy_finite = torch.tensor([[[0.2, 0.3, -math.inf, 0.1]]])
    value = F.token_drift(ref_only_masked, policy_finite, labels, "cvar", tail_mass=0.5)
    assert torch.isfinite(value).all(), "entries of zero mass must not make CVaR infinite"


def test_functional_validation() -> None:
    with pytest.raises(ValueError, match="measure='bogus' is not one of"):
        F.DriftSpec("bogus")
    with pytest.raises(ValueError, match="tail_mass=0 is out of range"):
        F.DriftSpec("cvar", tail_mass=0)
    with pytest.raises(ValueError, match=r"expected logits \[N, T, V\]"):
        F.sequence_logps(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="needs ref_logits"):
        F.sequence_statistics(
            torch.zeros(1, 2, 3), None, torch.zeros(1, 2, dtype=torch.long), F.DriftSpec("mean")
        )


@pytest.mark.parametrize(
    ("options", "match"),
    [({"tail_mass": "0.5"},
      r"^drift\.tail_mass='0\.5' is not a finite number: must be in \(0, 1\]$"),
     ({"mu": 0.0}, r"^drift\.mu=0\.0 is out of range: must be > 0$"),
     ({"mu": float("inf")}, r"^drift\.mu=inf is not a finite number"),
     ({"weighting": "flat"}, r"^drift\.weighting='flat' is not one of: probability, uniform$"),
     ({"normalize": 1}, r"^drift\.normalize=1 is not a boolean: must be true or false$")],
)
def test_a_drift_spec_refuses_wrong_types_and_ranges(options, match) -> None:
    with pytest.raises(ConfigError, match=match):
        F.DriftSpec("cvar", **options)
