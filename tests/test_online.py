"""PPO / RA-RLHF: the soft-risk schedule, masking of episodes not kept, the value head, the
frozen reference, settings validation, and a short run on the embedded world."""

from __future__ import annotations

import csv
import json
import math
from fractions import Fraction

import lightning
import pytest
import torch
from transformers import AutoModelForCausalLM

from riskalign.config.plan import check_run
from riskalign.data.prompt_batches import PromptDataModule, prompt_schedule
from riskalign.errors import ConfigError
from riskalign.models.loading import load_tokenizer
from riskalign.modules.online import VALUE_HEAD_FILE, OnlineRLModule
from riskalign.objectives import ObjectiveConfigError
from riskalign.objectives.functional import soft_risk_keep
from riskalign.objectives.online import OnlineSettings
from riskalign.rewards.vader import VaderReward
from tests.conftest import OPTIM as BASE_OPTIM
from tests.conftest import compose_config, run_here

OPTIM = {**BASE_OPTIM, "lr": 1e-3}


def schedule_by_hand(m: int, b: int, big_m: int, n: int, alpha: Fraction, rho: Fraction) -> int:
    """docs/objectives.md §6 in exact rational arithmetic."""
    target = math.ceil(rho * big_m)
    if m <= n:
        return b
    if m >= target:
        return max(1, math.ceil(alpha * b))
    k = (1 - alpha) / (target - n)
    return max(1, math.ceil(b * max(alpha, 1 - k * (m - n))))


@pytest.mark.parametrize(
    "b, big_m, n, alpha, rho",
    [(128, 100, 30, "2/5", "19/20"), (64, 40, 0, "1/5", "1/2"), (10, 7, 3, "3/10", "1"),
     (7, 13, 2, "1/3", "9/10"), (1, 5, 1, "1/2", "4/5"), (33, 200, 60, "1", "19/20")],
)
def test_soft_risk_keep_matches_the_schedule_everywhere(b, big_m, n, alpha, rho):
    alpha, rho = Fraction(alpha), Fraction(rho)
    target = math.ceil(rho * big_m)
    for m in range(0, big_m + 3):
        expected = schedule_by_hand(m, b, big_m, n, alpha, rho)
        assert soft_risk_keep(m, b, big_m, n, float(alpha), float(rho)) == expected, m
    assert soft_risk_keep(n, b, big_m, n, float(alpha), float(rho)) == b, "m = n keeps all"
    assert soft_risk_keep(target, b, big_m, n, float(alpha), float(rho)) == max(
        1, math.ceil(alpha * b)), "m = ceil(rho M) keeps ceil(alpha B)"


def test_soft_risk_keep_rounds_up_exact_products():
    # 0.3 * 10 is 3.0000000000000004 in floats: the schedule must keep 3, not 4
    assert soft_risk_keep(50, 10, 10, 0, 0.3, 0.5) == 3


@pytest.mark.parametrize(
    "override, message",
    [({"risk": {"alpha": 0.0}}, "objective.risk.alpha=0.0 is out of range: must be in (0, 1]"),
     ({"risk": {"alpha": 1.5}}, "objective.risk.alpha=1.5 is out of range"),
     ({"risk": {"rho": -0.1}}, "objective.risk.rho=-0.1 is out of range"),
     ({"risk": {"warmup": -1}}, "objective.risk.warmup=-1 is out of range"),
     ({"minibatch_size": 256}, "objective.minibatch_size=256 is out of range: must be <= "),
     ({"clip_range": 0}, "objective.clip_range=0 is out of range"),
     ({"lam": 2.0}, "objective.lam=2.0 is out of range"),
     ({"kl_target": -1.0}, "objective.kl_target=-1.0 is out of range"),
     ({"entropy_coef": 0.1}, "objective.entropy_coef=0.1 is not a known key: allowed keys are "
                             "name, batch_size,"),
     ({"risk": None}, "objective.risk=None is not a block: must be a mapping of alpha, warmup"),
     # wrong types: each setting's field refuses them
     ({"batch_size": 64.5}, "objective.batch_size=64.5 is not an integer: must be >= 1"),
     ({"ppo_epochs": True}, "objective.ppo_epochs=True is not an integer"),
     ({"risk": {"warmup": 1.5}}, "objective.risk.warmup=1.5 is not an integer: must be >= 0"),
     ({"temperature": "hot"}, "objective.temperature='hot' is not a finite number: must be > 0"),
     ({"kl_target": float("nan")}, "objective.kl_target=nan is not a finite number"),
     ({"name": "dpo"}, "objective.name='dpo' is not one of: ppo, ra_rlhf")],
)
def test_bad_online_settings_are_refused_in_one_line(override, message):
    config = dict(compose_config("objective=ra_rlhf").objective)
    config = {**config, "risk": dict(config["risk"])}
    for key, value in override.items():
        if isinstance(value, dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    with pytest.raises(ObjectiveConfigError) as error:
        OnlineSettings.from_config(config)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_prompt_schedule_visits_every_prompt_once_per_pass():
    order = prompt_schedule(count=10, batch_size=4, iterations=5, seed=0)
    assert len(order) == 20
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert order == prompt_schedule(10, 4, 5, 0) and order != prompt_schedule(10, 4, 5, 1)


@pytest.fixture
def module(smoke_world):
    _, world = smoke_world
    load = lambda: AutoModelForCausalLM.from_pretrained(world.model_dir)  # noqa: E731
    settings = OnlineSettings.from_config(
        {**dict(compose_config("objective=ra_rlhf").objective), "risk": {"alpha": 0.5},
         "batch_size": 8, "minibatch_size": 8, "max_new_tokens": 10}
    )
    return OnlineRLModule(load(), load(), load_tokenizer(str(world.model_dir)), VaderReward(),
                          settings, OPTIM, total_iterations=4, gradient_clip_val=1.0)


PROMPTS = ["the movie was", "i think the film", "this story is", "the acting was",
           "overall the plot", "the music was", "i felt the ending", "the director"]


def _gradients(module, batch):
    module.zero_grad()
    loss, _ = module.minibatch_loss(batch, torch.arange(len(PROMPTS)))
    loss.backward()
    return {name: p.grad.clone() for name, p in module.actor.named_parameters()
            if p.grad is not None}


def test_episodes_not_kept_give_no_gradient_and_do_not_enter_whitening(module):
    rollout = module.rollout(PROMPTS)
    batch = module.prepare(rollout, keep=4)
    kept = batch.kept
    assert int(kept.sum()) == 4
    returns = batch.returns[:, 0]
    assert returns[kept].max() <= returns[~kept].min(), "the kept are the lowest returns"
    reference = _gradients(module, batch)

    # Raise the rewards of the episodes not kept: they stay not kept (higher returns), and
    # nothing about the update may change, whitening included.
    rollout.scores = rollout.scores + 50.0 * (~kept).float()
    perturbed = module.prepare(rollout, keep=4)
    assert torch.equal(perturbed.kept, kept)
    assert torch.allclose(perturbed.advantages[kept], batch.advantages[kept])
    for name, grad in _gradients(module, perturbed).items():
        assert torch.allclose(grad, reference[name], atol=1e-7), name
    assert any(grad.abs().sum() > 0 for grad in reference.values()), "the kept do train"

    # The same perturbation of a kept episode does change the update.
    rollout.scores = rollout.scores + 0.5 * kept.float() * torch.arange(8.0)
    changed = _gradients(module, module.prepare(rollout, keep=4))
    assert any(not torch.allclose(changed[n], reference[n]) for n in reference)


def test_whitened_advantages_are_standard_over_kept_tokens_only(module):
    batch = module.prepare(module.rollout(PROMPTS), keep=3)
    values = batch.advantages[batch.train_mask.bool()]
    assert values.mean().abs() < 1e-5 and (values.std(unbiased=False) - 1).abs() < 1e-3
    assert torch.all(batch.advantages[~batch.kept] == 0)


def test_value_head_trains_and_is_saved_with_the_policy_reference_stays_frozen(module, tmp_path):
    reference_before = {k: v.clone() for k, v in module.reference.state_dict().items()}
    data = PromptDataModule(PROMPTS, batch_size=8, iterations=2, seed=0)
    trainer = lightning.Trainer(accelerator="cpu", max_epochs=1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    assert module.iteration == 2
    head = module.actor.value_head.weight
    assert head.abs().sum() > 0, "the value head starts at zero and must have been trained"
    for key, value in module.reference.state_dict().items():
        assert torch.equal(value, reference_before[key]), f"reference weight {key} changed"
    assert all(not p.requires_grad for p in module.reference.parameters())
    assert not module.reference.training
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in module.reference.parameters()}

    module.save_policy(tmp_path / "policy")
    saved = torch.load(tmp_path / "policy" / VALUE_HEAD_FILE)
    assert torch.equal(saved["weight"], head.detach())
    assert (tmp_path / "policy" / "model.safetensors").is_file()


def test_a_short_ra_rlhf_run_logs_kept_fractions_following_the_schedule(smoke_env, tmp_path):
    run = tmp_path / "run"
    result = run_here("debug=smoke", "objective=ra_rlhf", "objective.batch_size=16",
                      "objective.minibatch_size=8", "objective.max_new_tokens=10",
                      "objective.risk.warmup=1", "objective.risk.alpha=0.25",
                      "trainer.max_steps=6", "eval.every_n_steps=3", f"hydra.run.dir={run}",
                      env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row for row in csv.DictReader((run / "metrics.csv").open()) if row["ppo/kept"]]
    kept = [float(row["ppo/kept"]) for row in rows]
    expected = [soft_risk_keep(m, 16, 6, 1, 0.25, 0.95) / 16 for m in range(1, 7)]
    assert kept == pytest.approx(expected)
    assert expected[0] == 1.0 and expected[-1] == 0.25
    summary = json.loads((run / "summary.json").read_text())
    assert [point["step"] for point in summary["curve"]] == [0, 3, 6]
    for key in ("ppo/reward_mean", "ppo/reward_cvar", "ppo/kl", "ppo/kl_coef", "ppo/clipfrac",
                "ppo/value_loss", "ppo/entropy"):
        assert rows[-1][key] != "", f"{key} not logged"
    assert (run / "policy" / VALUE_HEAD_FILE).is_file()


def test_online_objectives_refuse_an_evaluation_set():
    from tests.test_pipelines import FIXTURES

    cfg = compose_config("objective=ppo", "model=gpt2", "data=alpacaeval",
                         f"data.path={FIXTURES / 'alpaca_eval'}")
    with pytest.raises(ConfigError, match="data=alpacaeval is an evaluation set"):
        check_run(cfg)


@pytest.mark.parametrize("experiment", ["ra_rlhf_imdb_gpt2", "ra_rlhf_jigsaw_gpt2"])
def test_paper_experiments_run_on_the_embedded_world(experiment, smoke_env, tmp_path):
    run = tmp_path / "run"
    result = run_here(f"experiment={experiment}", "data=reviews", "model=tiny", "reward=vader",
                      "trainer=cpu", "debug=smoke", "objective.batch_size=16",
                      "objective.minibatch_size=16", "objective.max_new_tokens=10",
                      "trainer.max_steps=2", "eval.every_n_steps=null",
                      "eval.prompt_tail_threshold=-0.25", f"hydra.run.dir={run}", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((run / "summary.json").read_text())["final"]
    assert final["step"] == 2 and "reward_prompt_tail" in final
    assert final["prompt_tail_count"] >= 1, "some world prompts score <= -0.25 under VADER"


def test_jigsaw_comments_become_prompts(tmp_path):
    from omegaconf import OmegaConf

    from riskalign.data.loading import load_data
    from tests.test_pipelines import FIXTURES
    from tests.tiny_models import tiny_word_tokenizer

    cfg = compose_config("model=gpt2", "data=jigsaw", f"data.path={FIXTURES / 'jigsaw'}",
                         "data.prompt_tokens=3")
    splits, kind = load_data(OmegaConf.to_container(cfg.data, resolve=True),
                             tiny_word_tokenizer())
    assert kind == "prompts" and len(splits["train"]) == 3
    assert splits["train"][0]["prompt"] == "This article is"


def test_a_sweep_over_preference_and_online_objectives_lands_on_one_frontier(smoke_env, tmp_path):
    from riskalign.frontier import main as frontier_main

    sweep = tmp_path / "sweep"
    result = run_here("-m", "debug=smoke", "objective=dpo,ppo", f"hydra.sweep.dir={sweep}",
                      env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert frontier_main([str(sweep)]) == 0
    rows = list(csv.DictReader((sweep / "frontier.csv").open()))
    assert sorted({row["label"] for row in rows}) == ["dpo", "ppo"]


def test_gradient_accumulation_is_refused_for_ppo():
    cfg = compose_config("debug=smoke", "objective=ppo", "trainer.accumulate_grad_batches=2")
    with pytest.raises(ConfigError, match="trainer.accumulate_grad_batches=2 is invalid for "
                                          "objective=ppo: PPO steps once per minibatch"):
        check_run(cfg)
