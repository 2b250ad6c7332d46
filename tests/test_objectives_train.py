"""Every named objective trains a few steps on the embedded world with a finite loss."""

from __future__ import annotations

import math

import lightning
import pytest
import torch
from datasets import DatasetDict, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from riskalign import objectives
from riskalign.data.preference import PreferenceDataModule
from riskalign.modules.alignment import AlignmentModule
from tests.conftest import OPTIM as BASE_OPTIM

OPTIM = {**BASE_OPTIM, "lr": 1e-3}


class LossRecorder(lightning.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("name", objectives.names())
def test_objective_trains_on_the_embedded_world(name, smoke_world, tmp_path):
    _, world = smoke_world
    objective = objectives.build(name)
    policy = AutoModelForCausalLM.from_pretrained(world.model_dir)
    reference = AutoModelForCausalLM.from_pretrained(world.model_dir)
    module = AlignmentModule(
        policy, reference if objective.requires_reference else None, objective, OPTIM
    )
    if objective.requires_input_embeddings:
        assert policy.config._attn_implementation == "eager", "WDPO needs 2nd derivatives"
    splits = load_from_disk(str(world.dataset_dir))
    datamodule = PreferenceDataModule(
        DatasetDict(train=splits["train"], eval=splits["test"]),
        AutoTokenizer.from_pretrained(world.model_dir),
        max_length=48, max_prompt_length=16, batch_size=4, eval_batch_size=4,
    )
    before = [p.detach().clone() for p in policy.parameters()]
    recorder = LossRecorder()
    trainer = lightning.Trainer(max_steps=3, accelerator="cpu", logger=False,
                                enable_progress_bar=False, enable_checkpointing=False,
                                enable_model_summary=False, callbacks=[recorder],
                                default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    assert len(recorder.losses) == 3
    assert all(math.isfinite(loss) for loss in recorder.losses), f"{name}: {recorder.losses}"
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters())), (
        f"{name}: the policy did not change"
    )
