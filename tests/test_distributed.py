"""DDP on 2 CPU processes (gloo) equals one process with the same global batch; a multirun of
DDP jobs runs each job once; strategy configs build what Lightning needs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from riskalign.config.checks import check_config
from riskalign.config.plan import check_run
from riskalign.errors import ConfigError
from riskalign.train import train
from riskalign.training.strategies import build_strategy
from tests.conftest import compose_config, run_train

STEPS = 4
GLOBAL_BATCH = 8
COMMON = ("debug=smoke", f"trainer.max_steps={STEPS}", "optim.warmup_steps=0",
          "optim.lr=5e-3", "eval.num_prompts=8", "trainer.enable_checkpointing=false")
SWEEP = [("dpo", "local"), ("dpo", "global"), ("kldpo", "local"), ("kldpo", "global")]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The trained policy's weights, without GPT-2's attention key biases: softmax ignores
    them, so their gradient is 0 in exact arithmetic and ~1e-9 of rounding noise in float,
    which Adam scales up to a learning-rate-sized step whose sign is the noise's."""
    weights = load_file(run_dir / "policy" / "model.safetensors")
    for name, value in weights.items():
        if name.endswith("attn.c_attn.bias"):
            width = value.numel() // 3  # [query | key | value]
            weights[name] = torch.cat([value[:width], value[2 * width:]])
    return weights


def _step_losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle) if row.get("loss")]


@pytest.fixture(scope="module")
def ddp_sweep(smoke_world, tmp_path_factory):
    """One multirun: {dpo, kldpo} x {scope local, global}, each job DDP on 2 processes with
    GLOBAL_BATCH / 2 pairs per process."""
    cache, _ = smoke_world
    root = tmp_path_factory.mktemp("ddp")
    env = {"RISKALIGN_CACHE_DIR": str(cache), "RISKALIGN_OUTPUT_ROOT": str(root),
           "WANDB_SILENT": "true"}
    result = run_train(
        "-m", *COMMON, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.precision=32-true", f"data.batch_size={GLOBAL_BATCH // 2}",
        "objective=dpo,kldpo", "objective.reducer.scope=local,global", env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for summary in root.glob("multirun/*/*/*/summary.json"):
        config = json.loads(summary.read_text())["config"]
        runs[(config["objective"]["name"], config["objective"]["reducer"]["scope"])] = \
            summary.parent
    return root, runs


def test_a_multirun_of_ddp_jobs_runs_each_job_once(ddp_sweep):
    root, runs = ddp_sweep
    assert sorted(runs) == sorted(SWEEP)
    sweeps = list(root.glob("multirun/*/*"))
    assert len(sweeps) == 1, f"the DDP children launched sweeps of their own: {sweeps}"
    assert not (root / "runs").exists(), "a DDP child ran outside its job's directory"
    for run_dir in runs.values():
        assert (run_dir / "train_ddp_process_1.log").is_file(), "job did not run on 2 processes"


@pytest.mark.parametrize(("objective", "scope"), SWEEP)
def test_two_ddp_processes_match_one_process_with_the_same_global_batch(
        ddp_sweep, smoke_world, tmp_path, objective, scope):
    _, runs = ddp_sweep
    cache, _ = smoke_world
    single = tmp_path / "single"
    train(compose_config(*COMMON, f"paths.cache_dir={cache}", "logger.wandb.mode=disabled",
                         f"objective={objective}", f"objective.reducer.scope={scope}",
                         f"data.batch_size={GLOBAL_BATCH}"), single)
    distributed = runs[(objective, scope)]
    ddp_weights, one_weights = _weights(distributed), _weights(single)
    gap = max((ddp_weights[name] - one_weights[name]).abs().max().item() for name in one_weights)
    loss_gap = max(abs(a - b) for a, b in zip(_step_losses(distributed), _step_losses(single)))
    assert len(_step_losses(distributed)) == len(_step_losses(single)) == STEPS
    if objective == "kldpo" and scope == "local":
        # KL-DRO weights over each process's 4 pairs are not those over all 8: the test
        # must be able to tell the two apart, and scope: global exists for this reason
        assert gap > 1e-4 and loss_gap > 1e-4
    else:
        assert gap < 1e-5, f"weights differ by {gap}"
        assert loss_gap < 1e-5, f"logged losses differ by {loss_gap}"


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed"])
def test_strategy_configs_compose_and_pass_the_checks(name, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec  # deepspeed is an optional extra: pretend it is there
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda module, *a: object() if module == "deepspeed" else real(module, *a))
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a GPU machine
    cfg = compose_config(f"trainer={name}", "model=llama-3.2-1b")
    assert cfg.trainer.strategy.name == name
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    check_config(cfg)


def test_fsdp_wraps_each_decoder_block_and_each_whole_model_apart():
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    cfg = compose_config("trainer=fsdp", "model=gpt2",
                         "trainer.strategy.activation_checkpointing=true")
    strategy = build_strategy(cfg.trainer.strategy, cfg.model.block_class)
    assert isinstance(strategy, FSDPStrategy)
    wrap = strategy.kwargs["auto_wrap_policy"]
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=8, n_head=2, vocab_size=10))
    decides = {name: wrap(module=module, recurse=False, nonwrapped_numel=0)
               for name, module in model.named_modules()}
    assert decides[""] is True, "the whole model (policy or reference) is a unit of its own"
    assert decides["transformer.h.0"] and decides["transformer.h.1"]
    assert not decides["transformer.wte"] and not decides["lm_head"]
    assert strategy.kwargs["use_orig_params"] is True
    checkpointed = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    assert checkpointed._module_classes == {GPT2Block}


def test_deepspeed_without_the_package_is_refused_in_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the deepspeed package: pip install"):
        check_config(compose_config("trainer=deepspeed"))


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.strategy.stage=1", "trainer.strategy.stage=1 is not one of: 2, 3"),
    ("trainer.strategy.name=horovod", "trainer.strategy.name='horovod' is not one of: ddp"),
    ("trainer.accelerator=cpu", "trainer.strategy.name=deepspeed needs GPUs but "
                                "trainer.accelerator=cpu"),
])
def test_bad_strategy_settings_are_refused(override, message, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(ConfigError) as error:
        check_config(compose_config("trainer=deepspeed", override))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_fsdp_on_cpu_is_refused_before_anything_loads():
    with pytest.raises(ConfigError, match="trainer.strategy.name=fsdp needs GPUs but "
                                          "trainer.accelerator=cpu: use trainer=ddp"):
        check_config(compose_config("trainer=fsdp", "trainer.accelerator=cpu"))


def test_online_objectives_refuse_more_than_one_device():
    cfg = compose_config("debug=smoke", "objective=ppo", "trainer=ddp",
                         "trainer.accelerator=cpu", "trainer.devices=2")
    with pytest.raises(ConfigError, match=r"trainer.devices=2 is invalid for objective=ppo: "
                                          "PPO and RA-RLHF run on one process; must be 1"):
        check_run(cfg)
