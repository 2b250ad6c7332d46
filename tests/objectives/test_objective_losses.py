"""Named objectives through Objective.loss_from_logits: values, gradients, metrics (§1–5)."""

from __future__ import annotations

import math

import pytest
import torch

from riskalign import objectives
from riskalign.objectives import functional as F

B, T, V = 2, 3, 5  # pairs, positions, vocabulary


def batch(
    seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """policy logits [2B, T, V] (requires grad), reference logits, labels with the prompt masked."""
    generator = torch.Generator().manual_seed(seed)
    ref = torch.randn(2 * B, T, V, generator=generator, dtype=dtype)
    policy = (ref + torch.randn(2 * B, T, V, generator=generator, dtype=dtype)).requires_grad_(True)
    labels = torch.randint(0, V, (2 * B, T), generator=generator)
    labels[:, 0] = -100
    return policy, ref, labels


def tiny_model(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings e [2B, T, 4], a map W [4, V] (logits = tanh(e) @ W), reference logits, labels."""
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(2 * B, T, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, V, generator=generator, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(2 * B, T, V, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, V, (2 * B, T), generator=generator)
    labels[:, 0] = -100
    return embeds, weight, ref, labels


# ---- gradients of every named objective ---------------------------------------------------------


def gradient_of_loss_is_gradient_of(
    loss: object, value: object, inputs: tuple[torch.Tensor, ...]
) -> bool:
    """gradcheck of a function whose value is value(x) and whose backward is loss(x)'s.

    For losses with a stop-gradient inside (KL-DRO weights, variant 2's chosen
    drift) the gradient is not the derivative of the loss's value; it must be
    the derivative of another function, checked here numerically.
    """

    def mixed(*x: torch.Tensor) -> torch.Tensor:
        actual = loss(*x)  # type: ignore[operator]
        return value(*x).detach() + actual - actual.detach()  # type: ignore[operator]

    return torch.autograd.gradcheck(mixed, inputs, fast_mode=True)


# tdpo and radpo stop the gradient of the chosen drift (variant 2): their plain
# gradcheck runs variant 1, and variant 2 has its own check below.
PLAIN = {"tdpo": {"drift": {"variant": 1}}, "radpo": {"drift": {"variant": 1, "tail_mass": 0.6}}}


@pytest.mark.parametrize("name", [n for n in objectives.names() if n not in ("kldpo", "wdpo")])
def test_gradcheck(name: str) -> None:
    policy, ref, labels = batch(seed=3)
    objective = objectives.build(name, **PLAIN.get(name, {}))
    reference = ref if objective.requires_reference else None

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return objective.loss_from_logits(logits, reference, labels)[0]

    assert torch.autograd.gradcheck(loss, (policy,), fast_mode=True), (
        f"{name}: analytic gradient != numerical"
    )


@pytest.mark.parametrize("measure", ["mean", "cvar", "erm"])
def test_variant_2_gradient_treats_the_chosen_drift_as_a_constant(measure: str) -> None:
    policy, ref, labels = batch(seed=13)
    spec = F.DriftSpec(measure, tail_mass=0.6)
    objective = objectives.build("radpo", drift={"measure": measure, "tail_mass": 0.6})
    frozen = F.sequence_statistics(policy.detach(), ref, labels, spec).drift[:B]

    def value(logits: torch.Tensor) -> torch.Tensor:
        stats = F.sequence_statistics(logits, ref, labels, spec)
        ratio = stats.policy_logps - stats.ref_logps
        margin = ratio[:B] - ratio[B:] - 0.5 * (stats.drift[B:] - frozen)
        return torch.nn.functional.softplus(-0.1 * margin).mean()

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return objective.loss_from_logits(logits, ref, labels)[0]

    assert gradient_of_loss_is_gradient_of(loss, value, (policy,)), (
        f"variant 2 gradient ({measure})"
    )


def test_kldpo_gradient_is_that_of_the_log_mean_exp_of_pair_losses() -> None:
    policy, ref, labels = batch(seed=4)
    objective = objectives.build("kldpo", reducer={"tau": 0.5})

    def value(logits: torch.Tensor) -> torch.Tensor:
        stats = F.sequence_statistics(logits, ref, labels)
        ratio = stats.policy_logps - stats.ref_logps
        losses = F.link_loss(ratio[:B] - ratio[B:], "sigmoid", beta=0.1)
        return 0.5 * torch.log(torch.exp(losses / 0.5).mean())

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return objective.loss_from_logits(logits, ref, labels)[0]

    assert gradient_of_loss_is_gradient_of(loss, value, (policy,)), (
        "kldpo: gradient of tau·log mean exp(l/tau)"
    )


def test_wdpo_gradcheck_through_double_backprop() -> None:
    embeds, weight, ref, labels = tiny_model()
    objective = objectives.build("wdpo", penalty={"rho0": 0.5})

    def loss(embeds: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        logits = torch.tanh(embeds) @ weight
        return objective.loss_from_logits(logits, ref, labels, inputs_embeds=embeds)[0]

    assert torch.autograd.gradcheck(loss, (embeds, weight), fast_mode=True), (
        "wdpo: gradient through the penalty"
    )


@pytest.mark.parametrize("form", ["paper", "code"])
def test_wdpo_penalty_changes_the_gradient_of_the_map(form: str) -> None:
    embeds, weight, ref, labels = tiny_model(seed=1)

    def grad_of_weight(name: str, **params: object) -> torch.Tensor:
        objective = objectives.build(name, **params)
        kwargs = {"inputs_embeds": embeds} if objective.requires_input_embeddings else {}
        loss, _ = objective.loss_from_logits(torch.tanh(embeds) @ weight, ref, labels, **kwargs)
        return torch.autograd.grad(loss, weight)[0]

    dpo = grad_of_weight("dpo")
    torch.testing.assert_close(grad_of_weight("wdpo", penalty={"rho0": 0.0, "form": form}), dpo)
    penalised = grad_of_weight("wdpo", penalty={"rho0": 0.01, "form": form})
    assert (penalised - dpo).abs().max() > 1e-8, (
        f"the {form} penalty must change the gradient w.r.t. W"
    )


# ---- values and limits ---------------------------------------------------------------------


def test_dpo_by_hand() -> None:
    policy, ref, labels = batch()
    loss, metrics = objectives.build("dpo", beta=0.2).loss_from_logits(policy, ref, labels)
    pi, pr = F.sequence_logps(policy, labels), F.sequence_logps(ref, labels)
    h = (pi[:B] - pr[:B]) - (pi[B:] - pr[B:])
    expected = torch.nn.functional.softplus(-0.2 * h).mean()
    torch.testing.assert_close(loss, expected, msg="DPO loss")
    rewards = 0.2 * (pi - pr).detach()
    torch.testing.assert_close(metrics["rewards/chosen"], rewards[:B].mean())
    torch.testing.assert_close(metrics["rewards/margins"], (rewards[:B] - rewards[B:]).mean())
    torch.testing.assert_close(
        metrics["rewards/accuracies"], (rewards[:B] > rewards[B:]).double().mean()
    )
    torch.testing.assert_close(metrics["logps/rejected"], pi[B:].detach().mean())


def test_tdpo_is_radpo_with_the_mean_measure() -> None:
    policy, ref, labels = batch(seed=5)
    tdpo_loss, tdpo_metrics = objectives.build("tdpo").loss_from_logits(policy, ref, labels)
    radpo_loss, radpo_metrics = objectives.build(
        "radpo", drift={"measure": "mean"}
    ).loss_from_logits(policy, ref, labels)
    torch.testing.assert_close(tdpo_loss, radpo_loss, msg="tdpo != radpo(measure=mean)")
    torch.testing.assert_close(
        torch.autograd.grad(tdpo_loss, policy)[0],
        torch.autograd.grad(radpo_loss, policy)[0],
        msg="gradients",
    )
    assert tdpo_metrics.keys() == radpo_metrics.keys()
    torch.testing.assert_close(
        tdpo_metrics["drift/chosen"], tdpo_metrics["kl/chosen"], msg="mean drift is the KL"
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_reducers_at_their_limits_are_dpo(seed: int) -> None:
    """KL-DRO as τ → ∞, DR-DPO as β' → ∞ and CVaR-DPO with the whole batch as its tail all
    weigh every pair alike: the objective is DPO's."""
    policy, ref, labels = batch(seed=seed)

    def loss(name: str, **params: object) -> float:
        objective = objectives.build(name, **params)
        return float(objective.loss_from_logits(policy, ref, labels)[0].detach())

    dpo = loss("dpo")
    assert loss("kldpo", reducer={"tau": 1e6}) == pytest.approx(dpo, abs=1e-6)
    assert loss("drdpo", reducer={"beta_prime": 1e6}) == pytest.approx(dpo, abs=1e-5)
    assert loss("cvar_dpo", reducer={"tail_mass": 1.0}) == pytest.approx(dpo, abs=1e-9)


@pytest.mark.parametrize("name", ["cdpo", "rdpo"])
def test_label_noise_objectives_with_zero_epsilon_are_dpo(name: str) -> None:
    policy, ref, labels = batch(seed=6)
    loss = objectives.build(name, link={"epsilon": 0.0}).loss_from_logits(policy, ref, labels)[0]
    torch.testing.assert_close(
        loss, objectives.build("dpo").loss_from_logits(policy, ref, labels)[0]
    )


@pytest.mark.parametrize("variant", [1, 2])
def test_drift_variants_and_the_stop_gradient_on_the_chosen_drift(variant: int) -> None:
    policy, ref, labels = batch(seed=7)
    objective = objectives.build(
        "radpo", drift={"variant": variant, "tail_mass": 0.8, "alpha": 0.7}
    )
    loss = objective.loss_from_logits(policy, ref, labels)[0]

    def by_hand(detach_chosen: bool) -> torch.Tensor:
        stats = F.sequence_statistics(policy, ref, labels, F.DriftSpec("cvar", tail_mass=0.8))
        ratio = stats.policy_logps - stats.ref_logps
        chosen, rejected = stats.drift[:B], stats.drift[B:]
        if detach_chosen:
            chosen = chosen.detach()
        scale = 1.0 if variant == 1 else 0.7
        margin = ratio[:B] - ratio[B:] - scale * (rejected - chosen)
        return torch.nn.functional.softplus(-0.1 * margin).mean()

    torch.testing.assert_close(loss, by_hand(detach_chosen=False), msg=f"variant {variant} value")
    grad = torch.autograd.grad(loss, policy)[0]
    expected = torch.autograd.grad(by_hand(detach_chosen=variant == 2), policy)[0]
    torch.testing.assert_close(grad, expected, msg=f"variant {variant} gradient")
    other = torch.autograd.grad(by_hand(detach_chosen=variant != 2), policy)[0]
    assert (grad - other).abs().max() > 1e-8, "the chosen drift's stop-gradient must matter"


def test_simpo_needs_no_reference_and_rewards_are_length_normalised() -> None:
    policy, _, labels = batch(seed=8)
    objective = objectives.build("simpo")
    assert not objective.requires_reference
    loss, metrics = objective.loss_from_logits(policy, None, labels)
    logps = F.sequence_logps(policy, labels) / (labels != -100).sum(1)
    expected = torch.nn.functional.softplus(-(2.0 * (logps[:B] - logps[B:]) - 0.5)).mean()
    torch.testing.assert_close(loss, expected, msg="SimPO loss")
    torch.testing.assert_close(
        metrics["rewards/chosen"], 2.0 * logps[:B].detach().mean(), msg="SimPO reward"
    )
    assert "kl/chosen" not in metrics, "no KL without reference logits"


def test_ipo_length_normalisation_divides_log_probs_by_token_counts() -> None:
    policy, ref, labels = batch(seed=9)
    labels[0, 1] = -100  # rows of different lengths
    loss = objectives.build("ipo", link={"length_normalize": True}).loss_from_logits(
        policy, ref, labels
    )[0]
    lengths = (labels != -100).sum(1)
    ratio = (F.sequence_logps(policy, labels) - F.sequence_logps(ref, labels)) / lengths
    expected = ((ratio[:B] - ratio[B:] - 1 / (2 * 0.1)) ** 2).mean()
    torch.testing.assert_close(loss, expected, msg="IPO with length normalisation")


def test_sft_is_the_mean_token_nll_of_the_chosen_rows() -> None:
    policy, _, labels = batch(seed=10)
    loss, metrics = objectives.build("sft").loss_from_logits(policy, None, labels)
    log_probs = torch.log_softmax(policy[:B], -1)
    counted = labels[:B] != -100
    nll = -log_probs.gather(-1, labels[:B].clamp(min=0)[..., None]).squeeze(-1)
    torch.testing.assert_close(loss, nll[counted].mean(), msg="SFT loss")
    assert set(metrics) == {"loss", "logps/chosen"}
    everything = objectives.build("sft", rows="all").loss_from_logits(policy, None, labels)[0]
    all_nll = -torch.log_softmax(policy, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    torch.testing.assert_close(everything, all_nll[labels != -100].mean(), msg="SFT on every row")


# ---- metrics -------------------------------------------------------------------------------

TRL = {
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
}
EXTRA = {
    "tdpo": {"drift/chosen", "drift/rejected"},
    "radpo": {"drift/chosen", "drift/rejected"},
    "kldpo": {"dro/ess", "dro/max_weight"},
    "wdpo": {"penalty/wasserstein"},
}


@pytest.mark.parametrize("name", [n for n in objectives.names() if n not in ("sft", "simpo")])
def test_metrics_are_detached_scalars_with_trl_names(name: str) -> None:
    embeds, weight, ref, labels = tiny_model(seed=2)
    objective = objectives.build(name)
    kwargs = {"inputs_embeds": embeds} if objective.requires_input_embeddings else {}
    loss, metrics = objective.loss_from_logits(torch.tanh(embeds) @ weight, ref, labels, **kwargs)
    assert set(metrics) == TRL | {"loss", "kl/chosen", "kl/rejected"} | EXTRA.get(name, set())
    for key, value in metrics.items():
        assert value.dim() == 0 and not value.requires_grad, f"{key} must be a detached scalar"
    assert metrics["loss"] == loss.detach()
    assert loss.requires_grad and loss.dim() == 0
    if name == "wdpo":  # rho0 = 0.01 by default
        assert float(metrics["penalty/wasserstein"]) > 0


def test_kl_metrics_are_the_sequential_kl() -> None:
    policy, ref, labels = batch(seed=11)
    metrics = objectives.build("dpo").loss_from_logits(policy, ref, labels)[1]
    kl = F.token_drift(ref, policy, labels, "mean").detach()
    torch.testing.assert_close(metrics["kl/chosen"], kl[:B].mean())
    torch.testing.assert_close(metrics["kl/rejected"], kl[B:].mean())


def test_dro_metrics() -> None:
    policy, ref, labels = batch(seed=12)
    metrics = objectives.build("kldpo", reducer={"tau": 1e6}).loss_from_logits(policy, ref, labels)[
        1
    ]
    assert float(metrics["dro/ess"]) == pytest.approx(B), "uniform weights: ESS = B"
    assert float(metrics["dro/max_weight"]) == pytest.approx(1 / B)
    metrics = objectives.build("kldpo", reducer={"tau": 1e-6}).loss_from_logits(
        policy, ref, labels
    )[1]
    assert float(metrics["dro/ess"]) == pytest.approx(1.0), "one dominant pair: ESS = 1"


# ---- what the caller must pass ------------------------------------------------------------


def test_missing_inputs_are_refused() -> None:
    policy, ref, labels = batch()
    with pytest.raises(ValueError, match="needs ref_logits"):
        objectives.build("dpo").loss_from_logits(policy, None, labels)
    with pytest.raises(ValueError, match="needs inputs_embeds"):
        objectives.build("wdpo").loss_from_logits(policy, ref, labels)
    with pytest.raises(ValueError, match=r"\[2B, T, V\]"):
        objectives.build("dpo").loss_from_logits(policy[:3], ref[:3], labels[:3])
    assert objectives.build("wdpo").requires_input_embeddings
    assert objectives.build("dpo", penalty={"name": "wasserstein"}).requires_input_embeddings
    assert not objectives.build("radpo").requires_input_embeddings
    assert not objectives.build("sft").requires_reference


def test_bfloat16_logits_work_and_give_float32_metrics() -> None:
    policy, ref, labels = batch(dtype=torch.bfloat16)
    loss, metrics = objectives.build("radpo").loss_from_logits(policy, ref, labels)
    (grad,) = torch.autograd.grad(loss, policy)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()
    assert metrics["kl/chosen"].dtype == torch.float32 and math.isfinite(float(metrics["loss"]))
