"""Token statistics from hidden states and the LM head (Projection) against the logits path.

The chunked projection must give what full logits give: objective values, metrics and the
gradients of every policy parameter (the head tied to the input embeddings or not), with
padding and responses of different lengths; and its peak memory must be clearly lower.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, CohereConfig, GPT2Config, LlamaConfig

from riskalign import objectives
from riskalign.data.preference import collate_pairs
from riskalign.models import response_logits as rl
from riskalign.models.references import AdapterDisabledReference
from riskalign.modules.alignment import AlignmentModule
from riskalign.objectives import functional as F
from riskalign.objectives import tokens
from riskalign.objectives.tokens import Projection
from riskalign.training.reference_cache import compute_sequence_logps
from tests.conftest import OPTIM

VOCAB = 97

OBJECTIVES = {
    "dpo": {},
    "tdpo": {},
    "radpo-cvar": {"drift": {"measure": "cvar", "tail_mass": 0.8}},
    "radpo-erm": {"drift": {"measure": "erm", "mu": 2.0}},
}


def _llama(tied: bool, seed: int = 0, vocab: int = VOCAB, hidden: int = 32, layers: int = 2):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=tied)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def _gpt2(seed: int = 0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


MODELS = {"llama-untied": lambda: _llama(False), "llama-tied": lambda: _llama(True),
          "gpt2-tied": _gpt2}


def _reference(policy, seed: int = 1):
    """A copy of the policy with perturbed weights: drift and KL are not zero."""
    reference = copy.deepcopy(policy)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return reference


def _batch(seed: int = 0, pairs: int = 3, vocab: int = VOCAB):
    """Pairs with prompts and responses of different lengths: right padding in every row
    but the longest, and responses that end at different positions."""
    generator = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(1, vocab, (n,), generator=generator).tolist()

    examples = [{"prompt_ids": ids(3 + 2 * i), "chosen_ids": ids(2 + 3 * i),
                 "rejected_ids": ids(6 - i)} for i in range(pairs)]
    return collate_pairs(examples, pad_token_id=0)


def _step(module, batch, chunked: bool):
    module.head_in_chunks = chunked
    module.policy.zero_grad(set_to_none=True)
    loss, metrics = module.loss_and_metrics(batch, response_statistics=True)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.policy.named_parameters()
             if p.requires_grad}
    return loss.detach(), metrics, grads


def _assert_same(chunked, full):
    (loss, metrics, grads), (loss_full, metrics_full, grads_full) = chunked, full
    torch.testing.assert_close(loss, loss_full, rtol=1e-5, atol=1e-7)
    assert metrics.keys() == metrics_full.keys()
    for name in metrics:
        torch.testing.assert_close(metrics[name], metrics_full[name], rtol=1e-5, atol=1e-6,
                                   msg=f"metric {name} differs")
    assert grads.keys() == grads_full.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_full[name], rtol=1e-4, atol=1e-6,
                                   msg=f"gradient of {name} differs")


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("objective_name", sorted(OBJECTIVES))
def test_hidden_path_matches_the_logits_path(model_name, objective_name):
    policy = MODELS[model_name]()
    reference = _reference(policy)
    name = objective_name.split("-")[0]
    # a small chunk: several chunks per batch, one of them short
    objective = objectives.build(name, chunk_size=5, **OBJECTIVES[objective_name])
    module = AlignmentModule(policy, reference, objective, OPTIM)
    batch = _batch()
    positions, _ = rl.response_layout(batch["labels"])
    assert isinstance(rl.response_projection(policy, batch, positions), Projection), (
        "the hidden-state path must apply to this model"
    )
    _assert_same(_step(module, batch, True), _step(module, batch, False))
    if model_name != "llama-untied":
        assert policy.get_output_embeddings().weight is policy.get_input_embeddings().weight


def test_hidden_path_with_automatic_chunks_and_lora_reference():
    """A LoRA policy (a PeftModel) and its adapter-disabled reference take the hidden path
    too; the adapters' gradients match the logits path's."""
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(_llama(False), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                      target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    reference = AdapterDisabledReference(policy)
    objective = objectives.build("radpo")
    module = AlignmentModule(policy, None, objective, OPTIM)
    module.reference = reference
    batch = _batch(seed=3)
    positions, _ = rl.response_layout(batch["labels"])
    assert isinstance(rl.response_projection(policy, batch, positions), Projection)
    assert isinstance(rl.response_projection(reference, batch, positions), Projection)
    chunked, full = _step(module, batch, True), _step(module, batch, False)
    assert chunked[2] and all("lora" in name for name in chunked[2])
    _assert_same(chunked, full)


@pytest.mark.parametrize("measure", [None, "mean", "cvar", "erm", "uniform"])
def test_projection_statistics_match_logits_with_a_bias(measure):
    """sequence_statistics on a Projection (with a bias, float64, several chunk sizes) gives
    the values and the hidden, weight and bias gradients of its logits."""
    torch.manual_seed(0)
    n, t, h, v = 4, 6, 8, 50
    spec = None if measure is None else (
        F.DriftSpec("cvar", weighting="uniform") if measure == "uniform"
        else F.DriftSpec(measure, tail_mass=0.7, mu=2.0))
    hidden = torch.randn(n, t, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True)
    ref = Projection(torch.randn(n, t, h, dtype=torch.float64),
                     torch.randn(v, h, dtype=torch.float64), torch.randn(v, dtype=torch.float64))
    labels = torch.randint(0, v, (n, t))
    labels[0, :2], labels[3, 4:] = -100, -100
    projection = Projection(hidden, weight, bias)

    def run(policy, reference, chunk_size):
        stats = F.sequence_statistics(policy, reference, labels, spec, chunk_size=chunk_size)
        loss = 0.3 * stats.policy_logps.sum() + (0 if stats.drift is None else stats.drift.sum())
        return stats, torch.autograd.grad(loss, (hidden, weight, bias))

    expected, expected_grads = run(projection.logits(), ref.logits(), 7)
    for chunk_size in (1, 5, 1000, None):
        stats, grads = run(projection, ref, chunk_size)
        for field in ("policy_logps", "ref_logps", "kl", "drift", "lengths"):
            value = getattr(stats, field)
            if value is not None:
                torch.testing.assert_close(value, getattr(expected, field), msg=field)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want)


def test_sequence_logps_entropy_sft_and_the_reference_cache_from_hidden_states():
    policy = _llama(False).eval()
    batch = _batch(seed=5)
    positions, labels = rl.response_layout(batch["labels"])
    with torch.no_grad():
        projection = rl.response_projection(policy, batch, positions)
        logits = rl.response_logits(policy, batch, positions)
    assert isinstance(projection, Projection)
    torch.testing.assert_close(projection.logits(), logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(F.sequence_logps(projection, labels),
                               F.sequence_logps(logits, labels), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rl.response_entropy(projection, labels),
                               rl.response_entropy(logits, labels), rtol=1e-5, atol=1e-6)
    sft = objectives.build("sft")
    torch.testing.assert_close(sft.loss_from_logits(projection, None, labels)[0],
                               sft.loss_from_logits(logits, None, labels)[0])
    cached = compute_sequence_logps(policy, [batch], torch.device("cpu"))
    expected = F.sequence_logps(logits, labels)
    torch.testing.assert_close(cached, torch.stack(expected.chunk(2), dim=1))


def _cohere(logit_scale: float):
    torch.manual_seed(0)
    config = CohereConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                          logit_scale=logit_scale)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


def test_a_head_followed_by_more_than_a_matmul_keeps_the_logits_path(monkeypatch):
    model, batch = _cohere(0.5), _batch()
    positions, _ = rl.response_layout(batch["labels"])
    assert rl.plain_head(model) is None, "cohere's logit_scale is in LOGIT_TRANSFORMS"
    with torch.no_grad():
        expected = rl.response_logits(model, batch, positions)
        assert torch.equal(rl.response_projection(model, batch, positions), expected)
        # a transform the config list does not name is caught by the one-position check
        monkeypatch.setattr(rl, "LOGIT_TRANSFORMS", {})
        assert rl.plain_head(model) is not None
        fallback = rl.response_projection(model, batch, positions)
    assert not isinstance(fallback, Projection) and torch.equal(fallback, expected)
    assert rl.plain_head(model) is None, "the head is remembered as not plain"


def test_wdpo_keeps_the_logits_path():
    """WDPO's penalty differentiates a gradient: AlignmentModule feeds it logits, and an
    objective given a Projection anyway makes the logits itself."""
    policy = _llama(False)
    module = AlignmentModule(policy, _reference(policy), objectives.build("wdpo"), OPTIM)
    batch = _batch()
    loss, _ = module.loss_and_metrics(batch)
    loss.backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)


def _status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _peak_kib(step) -> int:
    """RSS high-water mark of `step` above the RSS before it (Linux: reset by clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    step()
    return _status("VmHWM") - before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_hidden_path_peak_memory_is_clearly_lower(monkeypatch):
    """V = 32k, 8 rows × ~300 response tokens: the logits of one model alone are ~300 MB.
    The hidden path (run first, so memory the allocator keeps can only favour the logits
    path) must peak at under 0.3 of the logits path (it is ~0.1)."""
    vocab = 32768
    policy = _llama(False, vocab=vocab, hidden=64, layers=1)
    # 64 positions per chunk in both paths and 128 per projected block: each chunk's and
    # block's [·, V] tensors (8 and 16 MB) stay far below the [8, 300, V] logits (300 MB), as
    # the automatic sizes do on batches of real size (e.g. 8 pairs of 512 tokens)
    monkeypatch.setitem(tokens._PROJECTED_BLOCK_FLOATS, "cpu", 128 * vocab)
    objective = objectives.build("radpo", chunk_size=64)
    module = AlignmentModule(policy, _reference(policy), objective, OPTIM)
    generator = torch.Generator().manual_seed(0)
    examples = [{"prompt_ids": torch.randint(1, vocab, (8,), generator=generator).tolist(),
                 "chosen_ids": torch.randint(1, vocab, (300 - i,), generator=generator).tolist(),
                 "rejected_ids": torch.randint(1, vocab, (290,), generator=generator).tolist()}
                for i in range(4)]
    batch = collate_pairs(examples, pad_token_id=0)

    def step(chunked):
        def run():
            module.head_in_chunks = chunked
            module.policy.zero_grad(set_to_none=False)
            loss, _ = module.loss_and_metrics(batch)
            loss.backward()
        return run

    step(True)()  # gradients allocated, lazy initialisation done, before any measurement
    hidden = _peak_kib(step(True))
    logits = _peak_kib(step(False))
    print(f"peak above start: hidden path {hidden} KiB, logits path {logits} KiB")
    one_model_logits = 8 * 300 * vocab * 4 / 1024
    assert logits > 2 * one_model_logits, f"the logits path peaked at only {logits} KiB"
    assert hidden < 0.3 * logits, f"hidden path {hidden} KiB vs logits path {logits} KiB"


def test_hidden_path_under_bf16_autocast_projects_in_bf16():
    """Under autocast (trainer.precision=bf16-mixed) the chunks project in bf16 as the model's
    own head does, forward and backward; the fp32 parameters get fp32 gradients."""
    policy = _llama(False)
    module = AlignmentModule(policy, _reference(policy), objectives.build("radpo"), OPTIM)
    batch = _batch()
    results = []
    for chunked in (True, False):
        module.head_in_chunks = chunked
        policy.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = module.loss_and_metrics(batch)
        loss.backward()
        results.append((loss.detach(), policy.lm_head.weight.grad.clone()))
    (loss, grad), (loss_full, grad_full) = results
    assert grad.dtype == torch.float32
    torch.testing.assert_close(loss, loss_full, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(grad, grad_full, rtol=5e-2, atol=5e-3)
