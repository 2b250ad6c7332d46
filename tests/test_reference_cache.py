"""reference.cache: one pass fills it, later runs train without the reference model, any change
misses it, and a damaged cache file is rebuilt."""

from __future__ import annotations

import pytest
import torch

import riskalign.models.loading as loading
from riskalign import objectives
from riskalign.config.plan import check_run
from riskalign.errors import ConfigError
from riskalign.objectives.functional import sequence_logps
from riskalign.train import train
from riskalign.training.reference_cache import LOGPS_FILE, MARKER
from tests.conftest import compose_config


@pytest.fixture
def count_model_loads(monkeypatch):
    """How many causal LMs each run builds (the policy is one; a reference would be another)."""
    loads = []
    real = loading.load_causal_lm

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_causal_lm", counting)
    return loads


def _run(smoke_world, tmp_path, name, *overrides):
    cache, _ = smoke_world
    cfg = compose_config("debug=smoke", f"paths.cache_dir={cache}", "eval.kl=false",
                         *overrides)
    return train(cfg, tmp_path / name)


def _cache_dirs(smoke_world):
    cache, _ = smoke_world
    return sorted(path for path in (cache / "reference").iterdir() if path.is_dir()) \
        if (cache / "reference").exists() else []


def test_second_run_hits_the_cache_and_never_builds_the_reference(
        smoke_world, tmp_path, count_model_loads):
    first = _run(smoke_world, tmp_path, "first", "reference.cache=true", "data.max_length=60")
    assert len(count_model_loads) == 2, "the first run builds the reference for its pass"
    (directory,) = [d for d in _cache_dirs(smoke_world) if (d / MARKER).is_file()
                    and '"max_length": 60' in (d / MARKER).read_text()]
    count_model_loads.clear()
    second = _run(smoke_world, tmp_path, "second", "reference.cache=true", "data.max_length=60")
    assert len(count_model_loads) == 1, "a cache hit must build the policy only"
    uncached = _run(smoke_world, tmp_path, "uncached", "data.max_length=60")
    for name in ("pairs/loss", "pairs/rewards/margins", "pairs/logps/chosen"):
        assert second["final"][name] == first["final"][name]
        assert second["final"][name] == pytest.approx(uncached["final"][name], rel=1e-5)


@pytest.mark.parametrize("change", ["data.max_length=58", "data.world.pairs.test_prompts=40"])
def test_a_changed_max_length_or_dataset_misses_the_cache(
        smoke_world, tmp_path, count_model_loads, change):
    _run(smoke_world, tmp_path, "base", "reference.cache=true", "data.max_length=64")
    before = set(_cache_dirs(smoke_world))
    count_model_loads.clear()
    _run(smoke_world, tmp_path, "changed", "reference.cache=true", "data.max_length=64", change)
    assert len(count_model_loads) == 2, "a miss builds the reference again"
    assert len(set(_cache_dirs(smoke_world)) - before) == 1


def test_a_truncated_cache_file_is_detected_and_rebuilt(smoke_world, tmp_path, count_model_loads):
    _run(smoke_world, tmp_path, "first", "reference.cache=true", "data.max_length=63")
    (directory,) = [d for d in _cache_dirs(smoke_world)
                    if '"max_length": 63' in (d / MARKER).read_text()]
    good = (directory / LOGPS_FILE).read_bytes()
    (directory / LOGPS_FILE).write_bytes(good[: len(good) // 2])
    count_model_loads.clear()
    _run(smoke_world, tmp_path, "second", "reference.cache=true", "data.max_length=63")
    assert len(count_model_loads) == 2, "the damaged cache must not be trusted"
    assert (directory / LOGPS_FILE).read_bytes() == good


def test_evaluating_kl_with_a_cache_loads_the_reference_only_for_evaluation(
        smoke_world, tmp_path, count_model_loads):
    _run(smoke_world, tmp_path, "fill", "reference.cache=true", "data.max_length=62")
    count_model_loads.clear()
    summary = _run(smoke_world, tmp_path, "kl", "reference.cache=true", "data.max_length=62",
                   "eval.kl=true")
    assert len(count_model_loads) == 2
    assert summary["reference"]["kl"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("objective", ["radpo", "tdpo", "ppo"])
def test_objectives_that_need_token_level_reference_logits_refuse_the_cache(objective):
    # check_run: what train() checks before anything loads
    cfg = compose_config("debug=smoke", f"objective={objective}", "reference.cache=true")
    with pytest.raises(ConfigError) as error:
        check_run(cfg)
    assert f"reference.cache=true cannot serve objective={objective}" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("objective", "cached"), [("dpo", True), ("kldpo", True),
                                                   ("tdpo", False), ("simpo", False)])
def test_auto_caches_wherever_the_cache_serves(smoke_world, tmp_path, count_model_loads,
                                                objective, cached):
    summary = _run(smoke_world, tmp_path, objective, f"objective={objective}",
                   "reference.cache=auto", "trainer.max_steps=1")
    assert (summary["reference_cache"] is not None) == cached, summary["reference_cache"]


@pytest.mark.parametrize("name", ["dpo", "ipo", "kldpo", "cdpo", "rdpo"])
def test_cached_sequence_log_probs_give_the_loss_and_gradient_of_reference_logits(name):
    generator = torch.Generator().manual_seed(0)
    policy_logits = torch.randn(8, 6, 11, generator=generator, requires_grad=True)
    ref_logits = torch.randn(8, 6, 11, generator=generator)
    labels = torch.randint(0, 11, (8, 6), generator=generator)
    labels[:, :2] = -100
    objective = objectives.build(name)
    with_logits, _ = objective.loss_from_logits(policy_logits, ref_logits, labels)
    (grad_logits,) = torch.autograd.grad(with_logits, policy_logits)
    cached = sequence_logps(ref_logits, labels)
    with_cache, _ = objective.loss_from_logits(policy_logits, None, labels, ref_logps=cached)
    (grad_cache,) = torch.autograd.grad(with_cache, policy_logits)
    assert torch.allclose(with_cache, with_logits, atol=1e-6)
    assert torch.allclose(grad_cache, grad_logits, atol=1e-6)
