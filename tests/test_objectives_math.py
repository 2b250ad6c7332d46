"""The objectives against docs/objectives.md: hand computations, limits, gradients, refusals.

Reference values are computed here independently: by hand on tiny
distributions, or by a naive sort over the vocabulary.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from riskalign import objectives
from riskalign.objectives import ObjectiveConfigError
from riskalign.objectives.functional import (
    link_loss,
    reduce_losses,
    sequence_logps,
    token_drift,
    wasserstein_penalty,
)
from tests.conftest import CONF

SEEDS = settings(max_examples=25, deadline=None)

# One counted position with p = softmax(ref), q = softmax(policy) chosen so that
# Δ = log p − log q = [log 2.5, log 0.5, 0] is easy to check by hand; a second,
# masked position must not count.
P = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
Q = torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64)
DELTA = (P / Q).log()
KL = float((P * DELTA).sum())  # 0.5 log 2.5 + 0.3 log 0.5


def _one_position(p=P, q=Q):
    ref = torch.stack([p.log(), torch.zeros(3, dtype=torch.float64)])[None]
    policy = torch.stack([q.log(), torch.tensor([5.0, -5.0, 0.0], dtype=torch.float64)])[None]
    labels = torch.tensor([[0, -100]])
    return ref, policy, labels


def _drift(measure, **kwargs):
    ref, policy, labels = _one_position()
    return float(token_drift(ref, policy, labels, measure, **kwargs)[0])


# ---------------------------------------------------------------- measures by hand


def test_mean_measure_is_the_kl_of_reference_to_policy():
    assert _drift("mean") == pytest.approx(KL, abs=1e-9)


def test_cvar_whose_tail_boundary_splits_an_entry():
    # Sorted by Δ: log 2.5 (mass 0.5), 0 (0.2), log 0.5 (0.3). With a = 0.9 the tail
    # holds the first two whole and 0.2 of the third's 0.3.
    expected = (0.5 * math.log(2.5) + 0.2 * 0.0 + 0.2 * math.log(0.5)) / 0.9
    assert _drift("cvar", tail_mass=0.9) == pytest.approx(expected, abs=1e-9)


def test_cvar_inside_the_first_entry_is_its_delta():
    assert _drift("cvar", tail_mass=0.3) == pytest.approx(math.log(2.5), abs=1e-9)


def test_entropic_risk_by_hand():
    # (1/μ) log E_p[exp(μΔ)] with μ = 1 is log Σ p²/q = log 1.6
    assert _drift("erm", mu=1.0) == pytest.approx(math.log(0.25 / 0.2 + 0.09 / 0.6 + 0.04 / 0.2))
    expected = math.log(float((P * (2 * DELTA).exp()).sum())) / 2
    assert _drift("erm", mu=2.0) == pytest.approx(expected, abs=1e-9)


def test_released_code_cvar_uniform_quantile_without_normalisation():
    # Q = the 0.5 quantile of {log 2.5, log 0.5, 0} counted uniformly = 0: keep Δ > 0.
    got = _drift("cvar", tail_mass=0.5, weighting="uniform", normalize=False)
    assert got == pytest.approx(0.5 * math.log(2.5), abs=1e-9)
    # c = 0.8: Q = 0.2 quantile with linear interpolation = 0.4·log 0.5 + 0.6·0 < 0
    got = _drift("cvar", tail_mass=0.8, weighting="uniform", normalize=False)
    assert got == pytest.approx(0.5 * math.log(2.5), abs=1e-9)
    got = _drift("cvar", tail_mass=1.0, weighting="uniform", normalize=False)
    assert got == pytest.approx(0.5 * math.log(2.5) + 0.0, abs=1e-9)  # Δ > min only


def _naive_cvar(ref_logits, policy_logits, labels, a):
    """Sort each counted position's vocabulary and keep the upper tail of reference mass a."""
    total = torch.zeros(ref_logits.shape[0], dtype=torch.float64)
    for row in range(ref_logits.shape[0]):
        for t in range(ref_logits.shape[1]):
            if labels[row, t] == -100:
                continue
            logp = torch.log_softmax(ref_logits[row, t].double(), -1)
            delta = logp - torch.log_softmax(policy_logits[row, t].double(), -1)
            order = delta.argsort(descending=True)
            kept, value = 0.0, 0.0
            for v in order.tolist():
                take = min(float(logp[v].exp()), a - kept)
                if take <= 0:
                    break
                value += take * float(delta[v])
                kept += take
            total[row] += value / a
    return total


@SEEDS
@given(seed=st.integers(0, 10_000), a=st.sampled_from([1.0, 0.97, 0.5, 0.2, 0.05]))
def test_cvar_matches_a_naive_sort_on_random_inputs(seed, a):
    generator = torch.Generator().manual_seed(seed)
    ref = torch.randn(3, 4, 11, generator=generator, dtype=torch.float64) * 2
    policy = torch.randn(3, 4, 11, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, 11, (3, 4), generator=generator)
    labels[0, 0] = labels[2, 3] = -100
    got = token_drift(ref, policy, labels, "cvar", tail_mass=a)
    assert torch.allclose(got, _naive_cvar(ref, policy, labels, a), atol=1e-8), (got, a)


# ---------------------------------------------------------------- limits


def _random_logits(seed, rows=2, positions=3, vocab=7):
    generator = torch.Generator().manual_seed(seed)
    ref = torch.randn(rows, positions, vocab, generator=generator, dtype=torch.float64) * 2
    policy = torch.randn(rows, positions, vocab, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, vocab, (rows, positions), generator=generator)
    labels[0, 0] = -100
    return ref, policy, labels


@SEEDS
@given(seed=st.integers(0, 10_000))
def test_measure_limits(seed):
    ref, policy, labels = _random_logits(seed)
    kl = token_drift(ref, policy, labels, "mean")
    assert torch.allclose(token_drift(ref, policy, labels, "cvar", tail_mass=1.0), kl, atol=1e-9)
    erm_small = token_drift(ref, policy, labels, "erm", mu=1e-5)
    assert torch.allclose(erm_small, kl, atol=1e-3), "erm must tend to KL as mu -> 0"
    for mu in (0.1, 1.0, 5.0):
        assert (token_drift(ref, policy, labels, "erm", mu=mu) >= kl - 1e-9).all(), "erm >= KL"
    previous = kl
    for a in (0.9, 0.6, 0.3, 0.1, 0.01):
        cvar = token_drift(ref, policy, labels, "cvar", tail_mass=a)
        assert (cvar >= previous - 1e-9).all(), f"cvar must grow as tail_mass shrinks ({a})"
        previous = cvar


def _pair_batch(seed, pairs=2, positions=4, vocab=6, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    policy = torch.randn(2 * pairs, positions, vocab, generator=generator, dtype=dtype)
    ref = torch.randn(2 * pairs, positions, vocab, generator=generator, dtype=dtype)
    labels = torch.randint(0, vocab, (2 * pairs, positions), generator=generator)
    labels[:, 0] = -100  # the prompt position
    return policy, ref, labels


def _loss(name, batch, **params):
    policy, ref, labels = batch
    objective = objectives.build(name, **params)
    return float(objective.loss_from_logits(policy, ref, labels)[0])


@SEEDS
@given(seed=st.integers(0, 10_000))
def test_objective_limits(seed):
    batch = _pair_batch(seed, pairs=4)
    dpo = _loss("dpo", batch)
    assert _loss("cdpo", batch, link={"epsilon": 0.0}) == pytest.approx(dpo, abs=1e-9)
    assert _loss("rdpo", batch, link={"epsilon": 0.0}) == pytest.approx(dpo, abs=1e-9)
    assert _loss("tdpo", batch) == pytest.approx(
        _loss("radpo", batch, drift={"measure": "mean"}), abs=1e-9
    )
    assert _loss("kldpo", batch, reducer={"tau": 1e6}) == pytest.approx(dpo, abs=1e-6)
    assert _loss("drdpo", batch, reducer={"beta_prime": 1e6}) == pytest.approx(dpo, abs=1e-5)
    assert _loss("cvar_dpo", batch, reducer={"tail_mass": 1.0}) == pytest.approx(dpo, abs=1e-9)


# ---------------------------------------------------------------- links and reducers by hand


def _logsig(x):
    return -math.log1p(math.exp(-x))


@pytest.mark.parametrize("margin", [-3.0, -0.2, 0.0, 1.5, 12.0])
def test_links_by_hand(margin):
    beta, eps, gamma = 0.1, 0.1, 0.5
    h = torch.tensor([margin], dtype=torch.float64)
    z = beta * margin
    expected = {
        "sigmoid": -_logsig(z),
        "cdpo": -(1 - eps) * _logsig(z) - eps * _logsig(-z),
        "robust": (-(1 - eps) * _logsig(z) + eps * _logsig(-z)) / (1 - 2 * eps),
        "ipo": (margin - 1 / (2 * beta)) ** 2,
        "hinge": max(0.0, 1 - z),
        "simpo": -_logsig(z - gamma),
    }
    for link, value in expected.items():
        got = float(link_loss(h, link, beta=beta, epsilon=eps, gamma=gamma)[0])
        assert got == pytest.approx(value, abs=1e-9), link


def test_reducers_by_hand():
    losses = torch.tensor([0.1, 0.5, 2.0, 1.0], dtype=torch.float64)
    assert float(reduce_losses(losses, "mean")) == pytest.approx(0.9)
    assert float(reduce_losses(losses, "cvar", tail_mass=0.5)) == pytest.approx(1.5)
    assert float(reduce_losses(losses, "cvar", tail_mass=0.3)) == pytest.approx(1.5)  # ⌈1.2⌉ = 2
    assert float(reduce_losses(losses, "cvar", tail_mass=0.25)) == pytest.approx(2.0)
    weights = [math.exp(x / 0.5) for x in losses.tolist()]
    expected = sum(w * x for w, x in zip(weights, losses.tolist())) / sum(weights)
    assert float(reduce_losses(losses, "kl_dro", tau=0.5)) == pytest.approx(expected)
    expected = -2.0 * math.log(sum(math.exp(-x / 2.0) for x in losses.tolist()) / 4)
    assert float(reduce_losses(losses, "dr_dpo", beta_prime=2.0)) == pytest.approx(expected)


def test_released_kldpo_weights_are_unnormalised_and_capped():
    losses = torch.tensor([0.0, 0.0, 0.0, 8.0], dtype=torch.float64)
    got = float(reduce_losses(losses, "kl_dro", tau=1.0, normalize=False, weight_cap=10.0))
    # exp((ℓ − 2)/1) = [e^-2, e^-2, e^-2, e^6 → capped at 10], loss = mean(w·ℓ)
    assert got == pytest.approx((10.0 * 8.0) / 4)


def test_kl_dro_gradient_is_the_detached_softmax_weight():
    losses = torch.tensor([0.3, 1.2, 0.7], dtype=torch.float64, requires_grad=True)
    reduce_losses(losses, "kl_dro", tau=0.2).backward()
    expected = torch.softmax(losses.detach() / 0.2, 0)
    assert torch.allclose(losses.grad, expected), "kl_dro weights must be detached"
    smooth = losses.detach().clone().requires_grad_(True)
    (0.2 * (torch.logsumexp(smooth / 0.2, 0) - math.log(3))).backward()
    assert torch.allclose(losses.grad, smooth.grad), "gradient of tau log mean exp(l/tau)"


# ---------------------------------------------------------------- full objectives by hand


def test_dpo_loss_and_metrics_by_hand():
    policy, ref, labels = _pair_batch(3, pairs=2)
    loss, metrics = objectives.build("dpo", beta=0.5).loss_from_logits(policy, ref, labels)
    ratio = sequence_logps(policy, labels) - sequence_logps(ref, labels)
    h = ratio[:2] - ratio[2:]
    assert float(loss) == pytest.approx(float(-F.logsigmoid(0.5 * h).mean()), abs=1e-9)
    assert float(metrics["rewards/chosen"]) == pytest.approx(float(0.5 * ratio[:2].mean()))
    assert float(metrics["rewards/accuracies"]) == float((h > 0).double().mean())
    kl = token_drift(ref, policy, labels, "mean")
    assert float(metrics["kl/rejected"]) == pytest.approx(float(kl[2:].mean()))


def test_sequence_logps_sum_counted_tokens_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    labels = torch.tensor([[-100, 1, 2]])
    assert float(sequence_logps(logits, labels)[0]) == pytest.approx(math.log(0.8 * 0.6), abs=1e-6)


def test_radpo_variant_two_gives_the_chosen_drift_no_gradient():
    policy, ref, labels = _pair_batch(5, pairs=2)
    policy.requires_grad_(True)
    beta, alpha = 0.1, 0.5
    loss, _ = objectives.build("radpo", beta=beta).loss_from_logits(policy, ref, labels)
    (grad,) = torch.autograd.grad(loss, policy)
    with torch.no_grad():
        ratio = sequence_logps(policy, labels) - sequence_logps(ref, labels)
        drift = token_drift(ref, policy, labels, "cvar", tail_mass=0.95)
        z = ratio[:2] - ratio[2:] - alpha * (drift[2:] - drift[:2])
        # Chosen rows: only h depends on them, ∂h/∂logits = onehot(y) − q at counted positions.
        mask = (labels[:2] != -100).unsqueeze(-1)
        onehot = F.one_hot(labels[:2].clamp(min=0), policy.shape[-1])
        dlogp = (onehot - torch.softmax(policy[:2], -1)) * mask
        expected = (-torch.sigmoid(-beta * z) * beta / 2)[:, None, None] * dlogp
    assert torch.allclose(grad[:2], expected, atol=1e-10), "chosen drift leaked a gradient"
    variant_one = objectives.build("radpo", beta=beta, drift={"variant": 1})
    loss_one, _ = variant_one.loss_from_logits(policy, ref, labels)
    (grad_one,) = torch.autograd.grad(loss_one, policy)
    assert not torch.allclose(grad_one[:2], grad[:2]), "variant 1 must differentiate D(y_w)"


# ---------------------------------------------------------------- gradients


def _gradcheck(objective, policy, ref, labels, rows=slice(None)):
    """gradcheck of the loss as a function of policy_logits[rows], the other rows fixed."""
    ref_logits = ref if objective.requires_reference else None

    def loss(part):
        logits = policy.clone()
        logits[rows] = part
        return objective.loss_from_logits(logits, ref_logits, labels)[0]

    part = policy[rows].clone().requires_grad_(True)
    return torch.autograd.gradcheck(loss, (part,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in objectives.names() if n not in ("wdpo", "kldpo")])
def test_gradcheck_every_objective(name):
    policy, ref, labels = _pair_batch(11, pairs=2, positions=3, vocab=5)
    objective = objectives.build(name)
    if objective.config.get("drift", {}).get("variant") == 2 and objective.config["drift"][
        "measure"
    ]:
        # Variant 2 stops the gradient of D(y_w) on purpose, so the analytic gradient of the
        # chosen rows is not the numeric one (checked by hand above). Check the rejected rows,
        # and the whole batch under variant 1.
        assert _gradcheck(objective, policy, ref, labels, rows=slice(2, 4))
        objective = objectives.build(name, drift={"variant": 1})
    assert _gradcheck(objective, policy, ref, labels)


def test_kldpo_gradient_is_that_of_the_smooth_dro_potential():
    # Σ sg(w)·ℓ is not a potential (its weights are detached, so gradcheck of its value is
    # meaningless); its gradient must equal that of τ·log mean exp(ℓ/τ), which gradcheck holds.
    policy, ref, labels = _pair_batch(11, pairs=3, positions=3, vocab=5)
    tau = 0.05

    def potential(logits):
        ratio = sequence_logps(logits, labels) - sequence_logps(ref, labels)
        losses = link_loss(ratio[:3] - ratio[3:], "sigmoid", beta=0.1)
        return tau * (torch.logsumexp(losses / tau, 0) - math.log(3))

    logits = policy.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(potential, (logits,), eps=1e-6, atol=1e-5)
    (expected,) = torch.autograd.grad(potential(logits), logits)
    loss, _ = objectives.build("kldpo", reducer={"tau": tau}).loss_from_logits(logits, ref, labels)
    (got,) = torch.autograd.grad(loss, logits)
    assert torch.allclose(got, expected, atol=1e-10)


def _embedding_model(seed):
    """A differentiable map ids → embeddings → logits: one forward of a 'policy'."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    head = torch.randn(3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    return table, head


def test_gradcheck_wdpo_through_the_double_backprop():
    _, ref, labels = _pair_batch(13, pairs=2, positions=3, vocab=5)
    ids = labels.clamp(min=0)
    objective = objectives.build("wdpo", penalty={"rho0": 0.5})
    assert objective.requires_input_embeddings

    def loss(table, head):
        embeds = table[ids]
        return objective.loss_from_logits(embeds @ head, ref, labels, inputs_embeds=embeds)[0]

    assert torch.autograd.gradcheck(loss, _embedding_model(0), eps=1e-6, atol=1e-5)


def test_wasserstein_penalty_changes_the_parameter_gradient():
    _, ref, labels = _pair_batch(17, pairs=2, positions=3, vocab=5)
    ids = labels.clamp(min=0)

    def head_gradient(**params):
        table, head = _embedding_model(1)
        embeds = table[ids]
        objective = objectives.build("wdpo", **params)
        loss, metrics = objective.loss_from_logits(embeds @ head, ref, labels,
                                                   inputs_embeds=embeds)
        return torch.autograd.grad(loss, head)[0], metrics

    with_penalty, metrics = head_gradient(penalty={"rho0": 0.5})
    without, _ = head_gradient(penalty={"rho0": 0.0})
    assert float(metrics["penalty/wasserstein"]) > 0
    assert not torch.allclose(with_penalty, without), "the penalty must reach θ"
    code, _ = head_gradient(penalty={"rho0": 0.5, "form": "code"})
    assert not torch.allclose(code, with_penalty), "forms paper and code differ"


def test_wasserstein_penalty_forms_by_hand():
    embeds = torch.tensor([[[1.0, 2.0]], [[3.0, -1.0]]], dtype=torch.float64, requires_grad=True)
    losses = (embeds[:1] ** 2).sum(dim=(1, 2)) + 2 * embeds[1:].sum(dim=(1, 2))  # B = 1
    # ∂ℓ/∂e_w = 2·e_w = (2, 4) → 20; ∂ℓ/∂e_l = (2, 2) → 8; g = 28
    assert wasserstein_penalty(losses, embeds, rho0=0.1, form="code").item() == pytest.approx(2.8)
    assert wasserstein_penalty(losses, embeds, rho0=0.1, form="paper").item() == pytest.approx(
        0.1 * math.sqrt(28)
    )


# ---------------------------------------------------------------- configs and refusals


def test_every_objective_config_builds_and_names_match_files():
    from riskalign.objectives.online import OnlineSettings, online_names

    files = sorted(path.stem for path in (CONF / "objective").glob("*.yaml"))
    assert files == sorted(objectives.names() + online_names())
    for path in (CONF / "objective").glob("*.yaml"):
        params = OmegaConf.to_container(OmegaConf.load(path))
        if path.stem in online_names():  # they configure the online module, not a loss
            assert OnlineSettings.from_config(params).name == path.stem
        else:
            assert objectives.build(**params).name == path.stem


@pytest.mark.parametrize(
    "name, params, fragment",
    [
        ("dpo", {"beta": 0.0}, "objective.beta=0.0"),
        ("dpo", {"beta": -1}, "objective.beta=-1"),
        ("radpo", {"drift": {"tail_mass": 0.0}}, "objective.drift.tail_mass=0.0"),
        ("radpo", {"drift": {"tail_mass": 1.5}}, "objective.drift.tail_mass=1.5"),
        ("radpo", {"drift": {"measure": "erm", "mu": 0.0}}, "objective.drift.mu=0.0"),
        ("cdpo", {"link": {"epsilon": 0.5}}, "objective.link.epsilon=0.5"),
        ("kldpo", {"reducer": {"tau": 0.0}}, "objective.reducer.tau=0.0"),
        ("drdpo", {"reducer": {"beta_prime": 0.0}}, "objective.reducer.beta_prime=0.0"),
        ("wdpo", {"penalty": {"rho0": -0.1}}, "objective.penalty.rho0=-0.1"),
        ("radpo", {"drift": {"measure": "var"}}, "objective.drift.measure='var'"),
        ("dpo", {"link": {"name": "logistic"}}, "objective.link.name='logistic'"),
        ("dpo", {"reducer": {"name": "median"}}, "objective.reducer.name='median'"),
    ],
)
def test_invalid_parameters_are_refused_in_one_line(name, params, fragment):
    with pytest.raises(ObjectiveConfigError) as error:
        objectives.build(name, **params)
    message = str(error.value)
    assert fragment in message and "\n" not in message, message


def test_unknown_objective_name_is_refused():
    with pytest.raises(ObjectiveConfigError, match="nonexistent"):
        objectives.build("nonexistent")
