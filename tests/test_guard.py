"""Numerical guard: non-finite steps are skipped and counted; too many in a row stop the run."""

from __future__ import annotations

import lightning
import pytest
import torch
from lightning import Callback
from transformers import AutoModelForCausalLM

from riskalign import objectives
from riskalign.config.checks import check_config
from riskalign.errors import ConfigError, NumericalGuardError
from riskalign.modules.alignment import AlignmentModule
from riskalign.training.checkpoints import PeriodicCheckpoint, complete_checkpoints
from riskalign.training.guard import NumericalGuard
from tests.conftest import OPTIM, compose_config
from tests.test_module import _datamodule


class NaNLogitsAt:
    """An objective whose policy logits turn to NaN at the given training-step calls."""

    def __init__(self, objective, steps: set[int]) -> None:
        self.objective, self.steps, self.calls = objective, steps, 0

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def loss_from_logits(self, policy_logits, *args, **kwargs):
        if policy_logits.requires_grad:  # training steps, not evaluation
            if self.calls in self.steps:
                policy_logits = policy_logits * float("nan")
            self.calls += 1
        return self.objective.loss_from_logits(policy_logits, *args, **kwargs)


class WeightTrace(Callback):
    def __init__(self) -> None:
        self.after_step: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        weights = [p.detach().flatten() for p in module.policy.parameters()]
        self.after_step.append(torch.cat(weights))


def _fit(world, tmp_path, nan_steps, max_consecutive=3, steps=5, checkpoint_every=None):
    policy = AutoModelForCausalLM.from_pretrained(world.model_dir)
    reference = AutoModelForCausalLM.from_pretrained(world.model_dir)
    module = AlignmentModule(policy, reference,
                             NaNLogitsAt(objectives.build("dpo"), nan_steps), OPTIM)
    guard, trace = NumericalGuard(max_consecutive), WeightTrace()
    checkpoints = ([PeriodicCheckpoint(tmp_path, checkpoint_every, keep_last=2, config={},
                                       guard=guard)] if checkpoint_every else [])
    trainer = lightning.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                                enable_progress_bar=False, enable_checkpointing=bool(checkpoints),
                                enable_model_summary=False, default_root_dir=tmp_path,
                                callbacks=[guard, trace, *checkpoints])
    return trainer, module, guard, trace


def test_a_nan_in_the_logits_is_skipped_counted_and_logged(smoke_world, tmp_path):
    _, world = smoke_world
    trainer, module, guard, trace = _fit(world, tmp_path, nan_steps={2})
    trainer.fit(module, datamodule=_datamodule(world))
    assert guard.skipped_steps == 1
    assert trainer.callback_metrics["guard/skipped_steps"] == 1.0
    assert torch.equal(trace.after_step[2], trace.after_step[1]), "the NaN step changed weights"
    assert not torch.equal(trace.after_step[3], trace.after_step[2]), "training went on"
    assert all(torch.isfinite(weights).all() for weights in trace.after_step)


def test_consecutive_non_finite_steps_stop_with_the_step_and_last_finite_metrics(
        smoke_world, tmp_path):
    _, world = smoke_world
    trainer, module, guard, _ = _fit(world, tmp_path, nan_steps={1, 2, 3}, steps=6)
    with pytest.raises(NumericalGuardError) as error:
        trainer.fit(module, datamodule=_datamodule(world))
    message = str(error.value)
    assert "3 non-finite steps in a row (guard.max_consecutive=3), the last at step 3" in message
    assert "last finite metrics (step 0): loss=" in message and "nan" not in message.lower()


def test_a_stopped_run_keeps_its_last_good_checkpoint(smoke_world, tmp_path):
    _, world = smoke_world
    # training calls 4, 5 and 6 are NaN: steps 5-7 skipped; no checkpoint at step 6
    trainer, module, _, trace = _fit(world, tmp_path, nan_steps={4, 5, 6}, steps=10,
                                     checkpoint_every=2)
    with pytest.raises(NumericalGuardError, match="the last at step 6"):
        trainer.fit(module, datamodule=_datamodule(world))
    kept = complete_checkpoints(tmp_path)
    assert [saved.step for saved in kept] == [2, 4]
    state = torch.load(kept[-1].state_file, weights_only=True)
    saved = torch.cat([value.flatten() for key, value in state["state_dict"].items()
                       if key.startswith("policy.")])
    assert torch.isfinite(saved).all()
    assert torch.equal(trace.after_step[3], torch.cat(
        [p.detach().flatten() for p in module.policy.parameters()]))  # nothing moved since


def test_max_consecutive_must_be_positive():
    with pytest.raises(ConfigError, match=r"guard.max_consecutive=0 is out of range: must be >= 1"):
        check_config(compose_config("guard.max_consecutive=0"))
