"""AlignmentModule: the reference stays frozen and out of checkpoints; log-probs are exact."""

from __future__ import annotations

import copy

import lightning
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from riskalign import objectives
from riskalign.data.preference import PreferenceDataModule, collate_pairs, tokenize_pair
from riskalign.modules.alignment import AlignmentModule
from tests.conftest import OPTIM


def _module(world, objective="dpo"):
    policy = AutoModelForCausalLM.from_pretrained(world.model_dir)
    reference = AutoModelForCausalLM.from_pretrained(world.model_dir)
    return AlignmentModule(policy, reference, objectives.build(objective), OPTIM)


def _datamodule(world):
    tokenizer = AutoTokenizer.from_pretrained(world.model_dir)
    splits = load_from_disk(str(world.dataset_dir))
    splits = {"train": splits["train"], "eval": splits["test"]}
    from datasets import DatasetDict

    return PreferenceDataModule(DatasetDict(splits), tokenizer, max_length=48,
                                max_prompt_length=16, batch_size=4, eval_batch_size=4)


def test_reference_is_unchanged_by_training_and_absent_from_checkpoints(smoke_world, tmp_path):
    _, world = smoke_world
    module = _module(world)
    reference_before = copy.deepcopy(module.reference.state_dict())
    policy_before = copy.deepcopy(module.policy.state_dict())
    trainer = lightning.Trainer(max_steps=3, accelerator="cpu", logger=False,
                                enable_progress_bar=False, default_root_dir=tmp_path,
                                enable_model_summary=False)
    trainer.fit(module, datamodule=_datamodule(world))

    assert not module.reference.training, "the reference must stay in eval mode"
    for name, value in module.reference.state_dict().items():
        assert torch.equal(value, reference_before[name]), f"reference weight {name} changed"
    assert any(not torch.equal(value, policy_before[name])
               for name, value in module.policy.state_dict().items()), "the policy did not train"
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.policy.parameters()}

    path = tmp_path / "module.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert not [key for key in state if key.startswith("reference.")], "reference was saved"
    assert any(key.startswith("policy.") for key in state)


def test_mixed_precision_trains_with_gradient_clipping(smoke_world, tmp_path):
    """Lightning refuses to clip gradients for a fused AdamW under mixed precision, so the
    optimizer is fused only without it (a GPU run's default is bf16-mixed, clip 1.0)."""
    _, world = smoke_world
    module = _module(world)
    trainer = lightning.Trainer(max_steps=2, accelerator="cpu", precision="bf16-mixed",
                                gradient_clip_val=1.0, logger=False, enable_progress_bar=False,
                                enable_checkpointing=False, enable_model_summary=False,
                                default_root_dir=tmp_path)
    trainer.fit(module, datamodule=_datamodule(world))
    assert trainer.global_step == 2
    assert not trainer.optimizers[0].defaults["fused"]
    assert _module(world).configure_optimizers()["optimizer"].defaults["fused"]  # no trainer


def test_response_logits_give_each_rows_exact_log_probs(smoke_world):
    """Logits gathered at response positions (rows with different prompt and response
    lengths) give the log-probabilities of a token-by-token computation."""
    from riskalign.models.response_logits import response_layout, response_logits

    _, world = smoke_world
    tokenizer = AutoTokenizer.from_pretrained(world.model_dir)
    model = AutoModelForCausalLM.from_pretrained(world.model_dir).eval()
    pairs = [tokenize_pair(tokenizer, "the movie was", "really good .", "not good at all .",
                           max_length=32, max_prompt_length=16),
             tokenize_pair(tokenizer, "i think the plot of this film", "bad .",
                           "it was a fine and moving story .", max_length=32,
                           max_prompt_length=16)]
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    positions, labels = response_layout(batch["labels"])
    with torch.no_grad():
        logits = response_logits(model, batch, positions)
    width = max(len(p[key]) for p in pairs for key in ("chosen_ids", "rejected_ids"))
    assert logits.shape[:2] == labels.shape == (4, width), "response positions only"
    got = objectives.functional.sequence_logps(logits, labels)

    rows = [(p, p[key]) for key in ("chosen_ids", "rejected_ids") for p in pairs]
    for row, (pair, response) in enumerate(rows):
        ids = pair["prompt_ids"] + response
        expected = 0.0
        with torch.no_grad():
            for t in range(len(pair["prompt_ids"]), len(ids)):
                step_logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
                expected += torch.log_softmax(step_logits, -1)[ids[t]].item()
        assert abs(got[row].item() - expected) < 1e-4, f"row {row}: {got[row]} != {expected}"


def test_non_reentrant_gradient_checkpointing_gives_wdpo_the_same_loss_and_gradient(smoke_world):
    """WDPO differentiates a gradient (double backprop): checkpointing must not change it."""
    from omegaconf import OmegaConf

    from riskalign.models.loading import load_policy

    _, world = smoke_world
    dm = _datamodule(world)
    dm.setup("fit")
    batch = next(iter(dm.ordered_loader("train")))
    results = []
    for checkpointing in (False, True):
        model_cfg = OmegaConf.create({"dtype": "float32", "attn_implementation": "eager",
                                      "gradient_checkpointing": checkpointing})
        policy = load_policy(str(world.model_dir), model_cfg)
        assert policy.is_activation_checkpointing == checkpointing
        reference = AutoModelForCausalLM.from_pretrained(world.model_dir)
        module = AlignmentModule(policy, reference, objectives.build("wdpo"), OPTIM).train()
        loss, metrics = module.loss_and_metrics(batch)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in module.policy.parameters()])
        results.append((loss.detach(), metrics["penalty/wasserstein"], grads))
    (loss_a, penalty_a, grads_a), (loss_b, penalty_b, grads_b) = results
    assert penalty_a > 0
    assert torch.allclose(loss_a, loss_b, atol=1e-6) and torch.allclose(penalty_a, penalty_b)
    assert torch.allclose(grads_a, grads_b, atol=1e-5)
