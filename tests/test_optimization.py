"""Optimizers, schedules and learning rates from config (issue 15): the rates follow the
schedule formulas step by step, Adafactor keeps far less state than AdamW, every model
config carries its own rates, and a rate far too high for the model is warned about."""

from __future__ import annotations

import math

import pytest
import torch

from riskalign.config.checks import check_config, resolve_learning_rate
from riskalign.errors import ConfigError
from riskalign.modules.optimization import build_optimizer, learning_rate_warning, warmup_steps
from tests.conftest import CONF, compose_config

BASE = {"lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999]}
TOTAL, WARMUP = 20, 4


def _rates(scheduler: str, total: int = TOTAL, **optim) -> list[float]:
    """The learning rate applied at each of `total` optimizer steps."""
    weight = torch.nn.Parameter(torch.ones(3))
    built = build_optimizer([weight], {**BASE, "scheduler": scheduler, **optim}, total)
    optimizer, schedule = built["optimizer"], built["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones(3)
        optimizer.step()
        schedule.step()
    return rates


def _expected(scheduler: str, step: int) -> float:
    """The textbook schedules: linear warm-up from 0, then constant, linear or cosine to 0."""
    if step < WARMUP:
        return 1e-3 * step / WARMUP
    progress = (step - WARMUP) / (TOTAL - WARMUP)
    decay = {"constant": 1.0, "linear": 1.0 - progress,
             "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[scheduler]
    return 1e-3 * decay


@pytest.mark.parametrize("scheduler", ["constant", "linear", "cosine"])
def test_each_schedule_warms_up_then_follows_its_formula(scheduler):
    rates = _rates(scheduler, warmup_steps=WARMUP)
    expected = [_expected(scheduler, step) for step in range(TOTAL)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_warmup_ratio_applies_unless_warmup_steps_is_set():
    assert warmup_steps({"warmup_ratio": 0.1, "warmup_steps": None}, 100) == 10
    assert warmup_steps({"warmup_ratio": 0.1, "warmup_steps": 3}, 100) == 3
    assert warmup_steps({"warmup_ratio": 0.1, "warmup_steps": 0}, 100) == 0
    assert warmup_steps({"warmup_ratio": None, "warmup_steps": None}, 100) == 0
    # the ratio of the run's steps, as in the schedule itself
    assert _rates("constant", warmup_ratio=0.2, warmup_steps=None)[:5] == pytest.approx(
        [0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])


def test_adafactor_keeps_a_fraction_of_adamws_state():
    def state_floats(name: str) -> int:
        weight = torch.nn.Parameter(torch.randn(256, 512))
        optimizer = build_optimizer([weight], {**BASE, "optimizer": name}, 10)["optimizer"]
        weight.grad = torch.randn(256, 512)
        optimizer.step()
        return sum(t.numel() for state in optimizer.state.values() for t in state.values()
                   if torch.is_tensor(t) and t.dim() > 0)

    adamw, adafactor = state_floats("adamw"), state_floats("adafactor")
    assert adamw == 2 * 256 * 512
    assert adafactor == 256 + 512  # one row and one column factor of the second moment


def test_adamw_is_fused_except_under_mixed_precision():
    weight = torch.nn.Parameter(torch.ones(2))
    assert build_optimizer([weight], BASE, 5, "32-true")["optimizer"].defaults["fused"]
    assert not build_optimizer([weight], BASE, 5, "bf16-mixed")["optimizer"].defaults["fused"]


@pytest.mark.parametrize("model", sorted(path.stem for path in (CONF / "model").glob("*.yaml")))
def test_every_model_config_has_full_and_lora_rates_and_optim_lr_defaults_to_them(model):
    cfg = compose_config(f"model={model}")
    assert cfg.optim.lr is None
    resolve_learning_rate(cfg)
    assert cfg.optim.lr == cfg.model.lr.full
    lora = compose_config(f"model={model}", "model.lora.enabled=true")
    resolve_learning_rate(lora)
    assert lora.optim.lr == lora.model.lr.lora > lora.model.lr.full


def test_an_explicit_rate_wins_and_a_model_without_rates_needs_one():
    cfg = compose_config("model=smollm2-135m", "optim.lr=3e-6")
    resolve_learning_rate(cfg)
    assert cfg.optim.lr == 3e-6
    cfg = compose_config("model=smollm2-135m")
    resolve_learning_rate(cfg)
    assert cfg.optim.lr == 1e-6
    bare = compose_config("~model.lr")
    with pytest.raises(ConfigError, match=r"optim.lr=null needs model.lr.full \(model=tiny"):
        resolve_learning_rate(bare)


@pytest.mark.parametrize(
    ("lr", "mode", "parameters", "model_rate", "fragment"),
    [
        (2e-4, "full", 134_515_008, 1e-6, "200x model=m's full fine-tuning rate"),
        (1e-5, "full", 134_515_008, 1e-6, "10x model=m's full"),
        (1e-4, "full", 134_515_008, None, "above 5e-05, 10x the top of published full DPO"),
        (1e-3, "lora", 134_515_008, None, "above 0.0005"),
        (1e-6, "full", 134_515_008, 1e-6, None),   # SmolLM2's own rate
        (1e-5, "lora", 134_515_008, 1e-5, None),   # and its LoRA rate
        (2e-4, "full", 260_000, 2e-4, None),       # the embedded world's model
        (5e-3, "full", 260_000, None, None),       # small models train fast: no size rule
    ],
)
def test_a_rate_ten_times_too_high_for_the_model_is_warned_about(lr, mode, parameters,
                                                                  model_rate, fragment):
    warning = learning_rate_warning(lr, mode, parameters, "m", model_rate)
    if fragment is None:
        assert warning is None
    else:
        assert fragment in warning and "\n" not in warning


def test_the_run_config_checks_the_new_optim_keys():
    for override, message in [
        ("optim.scheduler=exponential", "optim.scheduler='exponential' is not one of: constant"),
        ("optim.optimizer=sgd", "optim.optimizer='sgd' is not one of: adamw, adafactor"),
        ("optim.warmup_ratio=1", "optim.warmup_ratio=1 is out of range: must be in [0, 1)"),
        ("optim.warmup_steps=-1", "optim.warmup_steps=-1 is out of range"),
    ]:
        cfg = compose_config(override)
        resolve_learning_rate(cfg)
        with pytest.raises(ConfigError, match=None) as error:
            check_config(cfg)
        assert message in str(error.value)
