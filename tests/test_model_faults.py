"""Combinations that failed after the models loaded or mid-training (issue #17, item 6): each
is now refused in one line before any weights load, or works (WDPO with LoRA).

The refusals run `python -m riskalign.train <overrides> debug=smoke` in this process with the
`refused` fixture of tests/test_bad_input.py: exit 2, one error line, no model loaded.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from riskalign import objectives
from riskalign.config.checks import RUN_FIELDS, check_config
from riskalign.config.keys import known_keys
from riskalign.errors import ConfigError
from riskalign.models.loading import load_causal_lm, load_policy
from riskalign.models.references import load_reference
from riskalign.modules.alignment import AlignmentModule
from riskalign.worlds.settings import check_world_settings
from tests.conftest import CONF, OPTIM, compose_config
from tests.test_lora import _batch, _lora_model_cfg, _perturb_adapters

ERROR = "riskalign: error: "
LIMIT = "exceeds the model's position limit: n_positions=64"  # the smoke world's GPT-2


# ----- 1. sequences longer than the model's position limit --------------------------------

def test_max_length_above_the_world_models_positions_is_refused(refused):
    assert refused(["data.max_length=100"]) == (
        f"{ERROR}data.max_length=100 {LIMIT} (model.name_or_path='world'); must be <= 64")


def test_evaluation_samples_longer_than_the_positions_are_refused(refused):
    assert refused(["eval.max_new_tokens=60"]) == (
        f"{ERROR}data.max_prompt_length=16 + eval.max_new_tokens=60 = 76 {LIMIT} "
        "(model.name_or_path='world'); must be <= 64")


def test_a_model_directorys_position_limit_is_read_from_its_config(refused, smoke_world):
    """Not the world's own settings: train reads the model's config.json once the source
    exists, before the tokenizer or any weights load."""
    _, world = smoke_world
    model = str(world.model_dir)
    assert refused([f"model.name_or_path={model}", "data.max_length=100"]) == (
        f"{ERROR}data.max_length=100 {LIMIT} (model.name_or_path={model!r}); must be <= 64")


def _compose(config: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=list(overrides))


@pytest.fixture
def no_model_loads(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError(f"a model loaded: {args[0]}")

    monkeypatch.setattr("riskalign.models.loading.load_causal_lm", load)


def test_evaluate_and_pairs_check_their_samplers_lengths(smoke_world, tmp_path, no_model_loads):
    from riskalign.evaluate import evaluate
    from riskalign.pairs import make_pairs

    cache, world = smoke_world
    policy = str(world.model_dir)
    cfg = _compose("evaluate", f"policy={policy}", "debug=smoke", "data=reviews", "reward=vader",
                   f"paths.cache_dir={cache}", "eval.max_new_tokens=60")
    with pytest.raises(ConfigError) as error:
        evaluate(cfg, tmp_path / "eval")
    assert str(error.value) == (f"data.max_prompt_length=16 + eval.max_new_tokens=60 = 76 "
                                f"{LIMIT} (policy={policy!r}); must be <= 64")
    cfg = _compose("pairs", "debug=smoke", f"paths.cache_dir={cache}",
                   "pairs.max_new_tokens=50", f"output={tmp_path / 'pairs'}")
    with pytest.raises(ConfigError) as error:
        make_pairs(cfg)
    assert str(error.value) == (f"data.max_prompt_length=16 + pairs.max_new_tokens=50 = 66 "
                                f"{LIMIT} (model.name_or_path='world'); must be <= 64")


# ----- 2. WDPO with LoRA: the penalty's embedding gradients reach the adapters ------------

def _penalty_and_loss(policy, reference, batch, objective="wdpo"):
    module = AlignmentModule(policy, reference, objectives.build(objective), OPTIM)
    loss, metrics = module.loss_and_metrics(batch)
    return metrics.get("penalty/wasserstein"), loss


def test_wdpo_trains_lora_adapters_through_the_embedding_gradient_penalty(smoke_world):
    _, world = smoke_world
    policy = load_policy(str(world.model_dir), _lora_model_cfg())
    _perturb_adapters(policy)  # B = 0 at the start: make the adapters change the model
    reference = load_reference(str(world.model_dir), _lora_model_cfg(), policy)
    batch = _batch(world)

    penalty, loss = _penalty_and_loss(policy, reference, batch)  # raised before: frozen embeds
    assert penalty > 0
    loss.backward()
    adapters = {name: p for name, p in policy.named_parameters() if "lora_" in name}
    assert adapters and all(p.grad is not None and torch.isfinite(p.grad).all()
                            for p in adapters.values())
    assert any(p.grad.abs().sum() > 0 for p in adapters.values())
    assert all(p.grad is None for name, p in policy.named_parameters() if "lora_" not in name)
    with_penalty = {name: p.grad.clone() for name, p in adapters.items()}

    # the penalty's own gradient reaches the adapters (double backprop): DPO's alone differs
    policy.zero_grad(set_to_none=True)
    _penalty_and_loss(policy, reference, batch, objective="dpo")[1].backward()
    assert any(not torch.allclose(p.grad, with_penalty[name], atol=1e-7)
               for name, p in adapters.items())

    # the same weights merged into a plain GPT-2, whose embeddings train: the same penalty
    merged = copy.deepcopy(policy).merge_and_unload().requires_grad_(True)
    base = load_causal_lm(str(world.model_dir), "float32", "eager")
    merged_penalty, merged_loss = _penalty_and_loss(merged, base, batch)
    assert merged_penalty.item() == pytest.approx(penalty.item(), rel=1e-4)
    assert merged_loss.item() == pytest.approx(loss.item(), rel=1e-5)


# ----- 3. a GPU trainer on a machine without one ------------------------------------------

NO_GPU = "torch.cuda.is_available() is False on this machine: use trainer=cpu"


@pytest.fixture
def without_cuda(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


@pytest.mark.parametrize(("overrides", "line"), [
    (["trainer=fsdp"], f"trainer.strategy.name=fsdp needs CUDA GPUs, and {NO_GPU} (one "
                       "process) or trainer=ddp trainer.accelerator=cpu (several CPU processes)"),
    (["trainer=gpu"], f"trainer.accelerator='gpu' needs a CUDA GPU, and {NO_GPU} (or "
                      "trainer.accelerator=cpu)"),
    (["trainer.accelerator=cuda"], f"trainer.accelerator='cuda' needs a CUDA GPU, and {NO_GPU} "
                                   "(or trainer.accelerator=cpu)"),
    (["trainer.strategy=deepspeed_stage_3", "trainer.accelerator=auto"],
     f"trainer.strategy='deepspeed_stage_3' needs CUDA GPUs, and {NO_GPU} (one process) or "
     "trainer=ddp trainer.accelerator=cpu (several CPU processes)"),
], ids=["fsdp", "gpu", "cuda", "sharded-string-auto"])
def test_a_gpu_trainer_without_a_gpu_is_refused(refused, without_cuda, overrides, line):
    assert refused(overrides) == ERROR + line


@pytest.mark.parametrize("overrides", [["trainer.accelerator=auto"], ["trainer=cpu"],
                                       ["trainer=gpu", "trainer.accelerator=cpu"]])
def test_cpu_and_auto_accelerators_pass_without_a_gpu(without_cuda, overrides):
    check_config(compose_config(*overrides))


# ----- 4. every eval key is typed ----------------------------------------------------------

def test_a_bad_tail_threshold_is_refused(refused):
    assert refused(["eval.tail_threshold=abc"]) == (
        f"{ERROR}eval.tail_threshold='abc' is not a finite number: must be a finite number")


def test_every_eval_key_has_a_typed_field():
    assert sorted(known_keys("eval") - RUN_FIELDS.keys()) == []
    with pytest.raises(ConfigError, match=r"^eval.prompt_tail_threshold='x' is not a finite "
                                          r"number: must be a finite number or null$"):
        check_config(compose_config("eval.prompt_tail_threshold=x"))


# ----- 5. the embedded world's settings ----------------------------------------------------

@pytest.mark.parametrize(("override", "line"), [
    ("+data.world.sizee=3", "data.world.sizee=3 is not a known key: allowed keys are "
                            "corpus_size, model, pairs, seed, sft"),
    ("+data.world.num_reviews=-5", "data.world.num_reviews=-5 is not a known key: allowed "
                                   "keys are corpus_size, model, pairs, seed, sft"),
    ("+data.world.vocab_size=abc", "data.world.vocab_size='abc' is not a known key: allowed "
                                   "keys are corpus_size, model, pairs, seed, sft"),
    ("data.world.corpus_size=-5", "data.world.corpus_size=-5 is out of range: must be >= 1"),
    ("data.world.sft.lr=abc", "data.world.sft.lr='abc' is not a finite number: must be > 0"),
    ("data.world.model.n_head=5", "data.world.model.n_embd=32 is invalid: must be a multiple "
                                  "of data.world.model.n_head=5"),
], ids=["unknown", "unknown-negative", "unknown-text", "corpus-negative", "lr-text", "heads"])
def test_bad_world_settings_are_refused_before_the_world_builds(refused, override, line):
    assert refused([override]) == ERROR + line


def test_the_world_builder_checks_its_settings_itself(tmp_path, monkeypatch):
    """evaluate and pairs build worlds too, without check_config."""
    from riskalign.worlds import reviews

    monkeypatch.setattr(reviews, "_build", lambda *args: pytest.fail("built"))
    settings = OmegaConf.to_container(compose_config("debug=smoke").data.world, resolve=True)
    assert check_world_settings(settings) == settings
    settings["pairs"]["max_new_tokens"] = 60
    with pytest.raises(ConfigError, match=r"^data.world.model.n_positions=64 cannot hold a "
                                          r"prompt of 8 words .* must be >= 69$"):
        reviews.ensure_reviews_world(settings, tmp_path)
