"""LoRA: the reference is the policy with its adapter disabled, one copy of the base weights."""

from __future__ import annotations

import gc
import warnings

import lightning
import pytest
import torch
from omegaconf import OmegaConf

from riskalign import objectives
from riskalign.errors import ConfigError
from riskalign.merge import main as merge_main
from riskalign.models.loading import load_causal_lm, load_policy
from riskalign.models.lora import lora_settings
from riskalign.models.references import AdapterDisabledReference, load_reference
from riskalign.modules.alignment import AlignmentModule
from tests.test_module import OPTIM, _datamodule


def _lora_model_cfg(**lora):
    settings = {"enabled": True, "rank": 4, "alpha": 8, "dropout": 0.0,
                "target_modules": ["c_attn", "c_proj"], **lora}
    return OmegaConf.create({"dtype": "float32", "attn_implementation": "eager",
                             "gradient_checkpointing": False, "lora": settings})


def _batch(world, size=4):
    dm = _datamodule(world)
    dm.setup("fit")
    return next(iter(dm.ordered_loader("eval")))


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _perturb_adapters(policy, seed=0):
    """LoRA's B starts at zero (the adapter is the identity); make it matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def test_adapter_disabled_policy_gives_the_base_models_logits(smoke_world):
    _, world = smoke_world
    base = load_causal_lm(str(world.model_dir), "float32", "eager").eval()
    policy = load_policy(str(world.model_dir), _lora_model_cfg()).train()
    _perturb_adapters(policy)
    reference = load_reference(str(world.model_dir), _lora_model_cfg(), policy)
    batch = _batch(world)

    assert isinstance(reference, AdapterDisabledReference)
    policy.eval()
    with_adapter = _logits(policy, batch)
    policy.train()
    without_adapter = reference(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).logits
    assert policy.training, "the reference call must give the policy its mode back"
    assert not without_adapter.requires_grad
    assert torch.allclose(without_adapter, _logits(base, batch), atol=1e-5)
    assert not torch.allclose(with_adapter, without_adapter, atol=1e-3), "adapter had no effect"


def _live_tensors_shaped(shape) -> int:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on some torch objects warns
        return sum(1 for obj in gc.get_objects()
                   if isinstance(obj, torch.Tensor) and obj.shape == shape)


def test_a_lora_module_holds_one_copy_of_the_base_weights(smoke_world):
    _, world = smoke_world
    shape = load_causal_lm(str(world.model_dir), "float32", "eager").get_input_embeddings() \
        .weight.shape
    before = _live_tensors_shaped(shape)
    policy = load_policy(str(world.model_dir), _lora_model_cfg())
    module = AlignmentModule(policy, load_reference(str(world.model_dir), _lora_model_cfg(),
                                                    policy), objectives.build("dpo"), OPTIM)
    added = _live_tensors_shaped(shape) - before
    assert added == 1, f"{added} new tensors shaped like the embedding matrix (one per copy)"
    base_count = sum(p.numel() for p in load_causal_lm(str(world.model_dir), "float32",
                                                       "eager").parameters())
    lora_count = sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)
    assert lora_count > 0
    assert sum(p.numel() for p in module.parameters()) == base_count + lora_count


def test_lora_training_moves_only_the_adapters_and_the_reference_stays_the_base(
        smoke_world, tmp_path):
    _, world = smoke_world
    policy = load_policy(str(world.model_dir), _lora_model_cfg())
    reference = load_reference(str(world.model_dir), _lora_model_cfg(), policy)
    module = AlignmentModule(policy, reference, objectives.build("dpo"), OPTIM)
    before = {name: value.clone() for name, value in policy.state_dict().items()}
    trainer = lightning.Trainer(max_steps=3, accelerator="cpu", logger=False,
                                enable_progress_bar=False, default_root_dir=tmp_path,
                                enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=_datamodule(world))

    changed = {name for name, value in policy.state_dict().items()
               if not torch.equal(value, before[name])}
    assert changed and all("lora_B" in name or "lora_A" in name for name in changed), changed
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for n, p in policy.named_parameters() if "lora_" in n}
    batch = _batch(world)
    base = load_causal_lm(str(world.model_dir), "float32", "eager").eval()
    assert torch.allclose(reference(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).logits,
                          _logits(base, batch), atol=1e-5)


def test_saving_writes_the_adapter_and_merge_writes_a_full_checkpoint(smoke_world, tmp_path):
    from transformers import AutoModelForCausalLM

    _, world = smoke_world
    policy = load_policy(str(world.model_dir), _lora_model_cfg())
    _perturb_adapters(policy, seed=1)
    policy.save_pretrained(tmp_path / "policy")
    assert (tmp_path / "policy" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "policy" / "model.safetensors").exists()

    assert merge_main([str(tmp_path / "policy"), str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    batch = _batch(world)
    policy.eval()
    assert torch.allclose(_logits(merged, batch), _logits(policy, batch), atol=1e-4)
    assert merge_main([str(tmp_path / "policy"), str(tmp_path / "merged")]) == 2  # exists
    assert merge_main([str(world.model_dir), str(tmp_path / "other")]) == 2  # no adapter


@pytest.mark.parametrize(("change", "message"), [
    ({"rank": 0}, "model.lora.rank=0 is out of range: must be >= 1"),
    ({"dropout": 1.0}, "model.lora.dropout=1.0 is out of range: must be in [0, 1)"),
    ({"alpha": 0}, "model.lora.alpha=0 is out of range: must be > 0"),
    ({"target_modules": []}, "model.lora.target_modules is empty"),
    ({"rnak": 8}, "model.lora.rnak=8 is not a known key: allowed keys are rank, alpha"),
    # wrong types: each setting's field refuses them
    ({"rank": 2.0}, "model.lora.rank=2.0 is not an integer: must be >= 1"),
    ({"alpha": "32"}, "model.lora.alpha='32' is not a finite number: must be > 0"),
    ({"dropout": True}, "model.lora.dropout=True is not a finite number"),
    ({"target_modules": [7]}, "model.lora.target_modules[0]=7 is not a name"),
    ({"target_modules": 7}, "model.lora.target_modules=7 is not a list of module names"),
    ({"enabled": "yes"}, "model.lora.enabled='yes' is not a boolean: must be true or false"),
])
def test_bad_lora_settings_are_refused_in_one_line(change, message):
    with pytest.raises(ConfigError) as error:
        lora_settings(_lora_model_cfg(**change))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_lora_settings_are_peft_arguments_and_none_when_off():
    assert lora_settings(_lora_model_cfg(target_modules="c_attn")) == {
        "r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0, "target_modules": ["c_attn"]}
    assert lora_settings(_lora_model_cfg(enabled=False)) is None
    assert lora_settings(OmegaConf.create({"dtype": "float32"})) is None


def test_a_target_module_the_model_lacks_is_refused_with_the_names_it_has(smoke_world):
    _, world = smoke_world
    with pytest.raises(ConfigError, match=r"\['q_proj'\] not found in GPT2LMHeadModel; .*c_attn"):
        load_policy(str(world.model_dir), _lora_model_cfg(target_modules=["q_proj"]))
