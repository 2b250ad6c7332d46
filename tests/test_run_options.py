"""Run options a TRL user expects (issue 15): dropout off in the policy, the logged rate
following its schedule, user callbacks from config, no policy written on request, a
held-out fraction for single-file datasets with evaluation sizes capped, and files that
follow the umask."""

from __future__ import annotations

import csv
import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from riskalign.data.loading import load_raw_splits
from riskalign.models.loading import load_policy
from riskalign.runs.artifacts import build_atomically
from tests.conftest import compose_config, run_here


def _policy_config(path: Path, **model) -> OmegaConf:
    cfg = compose_config("model=gpt2").model
    cfg.name_or_path, cfg.attn_implementation = str(path), "eager"
    for key, value in model.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def models_with_dropout(tmp_path_factory):
    """A GPT-2 (nn.Dropout modules) and a Llama (a float attention_dropout), dropout 0.3."""
    root = tmp_path_factory.mktemp("dropout")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                               resid_pdrop=0.3, embd_pdrop=0.3, attn_pdrop=0.3)
                    ).save_pretrained(root / "gpt2")
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, attention_dropout=0.3)
                     ).save_pretrained(root / "llama")
    return root


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_policy_dropout_is_off_by_default_and_back_on_when_asked(models_with_dropout,
                                                                  architecture):
    path = models_with_dropout / architecture
    ids = torch.arange(12).reshape(2, 6)

    def two_train_mode_forwards(**model):
        policy = load_policy(str(path), _policy_config(path, **model)).train()
        return policy(ids).logits, policy(ids).logits

    first, second = two_train_mode_forwards()
    assert torch.equal(first, second)  # deterministic in train mode: no dropout anywhere
    first, second = two_train_mode_forwards(disable_dropout=False)
    assert not torch.equal(first, second)


def test_lora_keeps_its_own_dropout(models_with_dropout):
    path = models_with_dropout / "gpt2"
    policy = load_policy(str(path), _policy_config(path, **{"lora.enabled": True,
                                                            "lora.dropout": 0.2}))
    rates = {module.p for name, module in policy.named_modules()
             if isinstance(module, torch.nn.Dropout)}
    assert rates == {0.0, 0.2}  # the model's off, the adapters' as model.lora.dropout says


def test_cosine_rate_grad_norm_rate_warning_user_callback_and_no_policy(smoke_env, tmp_path):
    marker = tmp_path / "callback.json"
    result = run_here(
        "debug=smoke", "trainer.max_steps=6", "optim.lr=2e-3", "optim.scheduler=cosine",
        "optim.warmup_steps=2", "checkpoint.save_policy=false", "checkpoint.every_n_steps=null",
        "+callbacks.count._target_=tests.user_callbacks.CountTrainSteps",
        f"+callbacks.count.path={marker}", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "outputs").glob("runs/*/*"))
    with open(run_dir / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("lr")]
    rates = [float(row["lr"]) for row in rows]
    expected = [2e-3 * step / 2 if step < 2
                else 2e-3 * 0.5 * (1 + math.cos(math.pi * (step - 2) / 4)) for step in range(6)]
    assert rates == pytest.approx(expected, rel=1e-6, abs=1e-12)
    norms = [float(row["grad_norm"]) for row in rows]
    assert len(norms) == 6 and all(math.isfinite(n) and n > 0 for n in norms)
    assert json.loads(marker.read_text()) == {"train_batches": 6}
    assert not (run_dir / "policy").exists()
    assert (run_dir / "summary.json").is_file()
    warnings = [line for line in (result.stdout + result.stderr).splitlines()
                if "is 10x model=tiny's full fine-tuning rate model.lr.full=0.0002" in line]
    assert len(warnings) == 1, result.stderr[-3000:]  # 2e-3 is ten times the model's rate


def test_one_file_dataset_holds_out_eval_fraction(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(40)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    splits = load_raw_splits(str(path), subset=None, train_split="train", eval_split="test",
                             eval_fraction=0.2)
    assert (len(splits["train"]), len(splits["eval"])) == (32, 8)
    assert not set(splits["train"]["prompt"]) & set(splits["eval"]["prompt"])


def test_small_dataset_runs_with_the_default_eval_sizes_capped_in_one_warning(
        smoke_world, smoke_env, tmp_path):
    _, world = smoke_world
    train = load_from_disk(str(world.dataset_dir))["train"].select(range(40))
    path = tmp_path / "pairs.jsonl"
    train.to_json(str(path))
    result = run_here("debug=smoke", "data=local", f"data.path={path}", "trainer.max_steps=2",
                      f"model.name_or_path={world.model_dir}", "checkpoint.every_n_steps=null",
                      "data.max_length=64", "data.max_prompt_length=16",  # 64 positions
                      env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in (result.stdout + result.stderr).splitlines()
                if "capping" in line]
    assert len(warnings) == 1, warnings
    assert ("the held-out split has 2 distinct prompts and 2 rows: capping "
            "eval.num_prompts=16 to 2 and eval.num_pairs=16 to 2") in warnings[0]
    summary = json.loads(next((tmp_path / "outputs").glob("runs/*/*/summary.json")).read_text())
    assert summary["steps"] == 2


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_cached_artifacts_follow_the_umask(tmp_path, umask):
    def build(staging: Path) -> dict:
        (staging / "weights").mkdir()
        (staging / "weights" / "model.bin").write_bytes(b"x")
        os.chmod(staging / "weights" / "model.bin", 0o600)  # as safetensors writes them
        return {}

    previous = os.umask(umask)
    try:
        target = build_atomically(tmp_path / "artifact", "done.json", build)
    finally:
        os.umask(previous)
    modes = {path.relative_to(tmp_path): stat.S_IMODE(path.stat().st_mode)
             for path in [target, *target.rglob("*")]}
    directories, files = 0o777 & ~umask, 0o666 & ~umask
    assert modes == {Path("artifact"): directories, Path("artifact/weights"): directories,
                     Path("artifact/weights/model.bin"): files, Path("artifact/done.json"): files}
