"""Padding-free batches: rows packed into one sequence give what padded rows give.

Values to 1e-5 and every policy gradient to 1e-4 against the same module with packing off,
on Llama (the packed mask from position ids) and GPT-2 (the world model's class); packing
engages where it should, and falls back (with one warning) where a model would let packed
rows see each other, or a batch is not right-padded.
"""

from __future__ import annotations

import logging

import pytest
import torch

from riskalign import objectives
from riskalign.models import packing
from riskalign.models import response_logits as rl
from riskalign.modules.alignment import AlignmentModule
from tests.conftest import OPTIM
from tests.test_hidden_statistics import MODELS, OBJECTIVES, _batch, _reference


def _step(module, batch, pack: bool, chunked: bool = True):
    module.pack_rows, module.head_in_chunks = pack, chunked
    module.policy.zero_grad(set_to_none=True)
    loss, metrics = module.loss_and_metrics(batch, response_statistics=True)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.policy.named_parameters()}
    return loss.detach(), metrics, grads


def _assert_same(packed, padded):
    (loss, metrics, grads), (loss_padded, metrics_padded, grads_padded) = packed, padded
    torch.testing.assert_close(loss, loss_padded, rtol=1e-5, atol=1e-7)
    for name in metrics:
        torch.testing.assert_close(metrics[name], metrics_padded[name], rtol=1e-5, atol=1e-6,
                                   msg=f"metric {name} differs")
    for name in grads:
        torch.testing.assert_close(grads[name], grads_padded[name], rtol=1e-4, atol=1e-6,
                                   msg=f"gradient of {name} differs")


def _input_shapes(model) -> list[tuple[int, ...]]:
    """Records the input_ids shape of every forward of `model`."""
    shapes: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(
        lambda _m, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True)
    return shapes


@pytest.mark.parametrize("model_name", ["llama-tied", "gpt2-tied"])
@pytest.mark.parametrize("objective_name", ["dpo", "radpo-cvar"])
@pytest.mark.parametrize("chunked", [True, False], ids=["hidden", "logits"])
def test_packed_rows_match_padded_rows(model_name, objective_name, chunked):
    policy = MODELS[model_name]()
    reference = _reference(policy)
    objective = objectives.build(objective_name.split("-")[0], chunk_size=5,
                                 **OBJECTIVES[objective_name])
    module = AlignmentModule(policy, reference, objective, OPTIM)
    batch = _batch(pairs=4)
    shapes = _input_shapes(policy)
    packed = _step(module, batch, pack=True, chunked=chunked)
    tokens = int(batch["attention_mask"].sum())
    assert (1, tokens) in shapes, f"the policy never ran packed: {shapes}"
    assert packing._PACKS_EXACTLY[policy] and packing._PACKS_EXACTLY[reference]
    assert batch["attention_mask"].float().mean() < 0.9, "the batch must hold padding"
    _assert_same(packed, _step(module, batch, pack=False, chunked=chunked))


def test_packed_inputs_restart_positions_and_keep_each_rows_counted_positions():
    batch = {"input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])}
    positions = torch.tensor([[1, 1], [0, 0], [2, 3]])
    inputs = packing.packed_inputs(batch, positions)
    assert inputs["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert inputs["logits_to_keep"].tolist() == [[1, 1, 3, 3, 7, 8]]
    # a filler position past a row's end stays in that row: 3 -> row 1's last token
    filler = packing.packed_inputs(batch, torch.tensor([[0, 2], [0, 3], [0, 3]]))
    assert filler["logits_to_keep"].tolist() == [[0, 2, 3, 4, 5, 8]]


def test_a_model_that_lets_packed_rows_mix_keeps_padded_batches(monkeypatch, caplog):
    """Without the packed mask (as an architecture that ignores packed position ids), rows
    would attend to each other: the first-use check sees it and the model stays padded."""
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    policy = MODELS["llama-tied"]()
    module = AlignmentModule(policy, _reference(policy), objectives.build("dpo"), OPTIM)
    batch = _batch(pairs=4)
    shapes = _input_shapes(policy)
    with caplog.at_level(logging.WARNING, logger="riskalign.models.packing"):
        packed = _step(module, batch, pack=True)
    assert packing._PACKS_EXACTLY[policy] is False
    assert "does not keep packed rows apart" in caplog.text
    assert shapes[-1] == tuple(batch["input_ids"].shape), "training ran padded"
    _assert_same(packed, _step(module, batch, pack=False))


def test_a_left_padded_batch_is_not_packed():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert not packing.right_padded(mask)
    assert packing.right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    policy = MODELS["llama-tied"]()
    batch = {"input_ids": torch.tensor([[0, 3, 4], [5, 6, 7]]), "attention_mask": mask}
    positions = torch.tensor([[1], [1]])
    assert not packing.packs_exactly(policy, batch, positions, rl._padded_logits)
    assert policy not in packing._PACKS_EXACTLY, "a left-padded batch must not decide for the model"


def test_packing_is_chosen_only_where_it_saves_flops():
    """Short rows with much padding gain; long full rows would pay for attention across the
    whole packed sequence (L² pairs) more than the padding costs. A SmolLM2-sized Llama (on
    the meta device: no weights); a toy model's layers are so small that attention always
    dominates and it never packs."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         tie_word_embeddings=True)
    with torch.device("meta"):
        policy = AutoModelForCausalLM.from_config(config)
    short = torch.zeros(16, 32, dtype=torch.long)
    for row in range(16):
        short[row, : 8 + row] = 1
    assert packing.packing_pays(policy, short)
    assert not packing.packing_pays(MODELS["llama-tied"](), short)
    assert not packing.packing_pays(policy, torch.ones(16, 512, dtype=torch.long))


def test_the_first_use_check_leaves_mode_and_random_stream_as_they_were():
    """A resumed run checks at another step than the whole run did: the check must not draw
    on the global generator, and runs without dropout whatever the mode."""
    policy = MODELS["llama-tied"]().train()
    batch = _batch(pairs=4)
    positions, _ = rl.response_layout(batch["labels"])
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    assert packing.packs_exactly(policy, batch, positions, rl._padded_logits)
    assert torch.equal(torch.rand(3), expected)
    assert policy.training
