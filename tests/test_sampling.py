"""Sampling with left-padded prompts, and the sampled sequence KL."""

from __future__ import annotations

import copy
import functools

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from riskalign.evaluation.drift import sampled_sequence_kl
from riskalign.evaluation.statistics import lower_tail_mean
from riskalign.models.sampling import sample_completions
from riskalign.worlds.grammar import vocabulary
from riskalign.worlds.tokenizer import word_level_tokenizer

PROMPTS = ["the movie was", "this is a film about a small town . the plot", "i loved"]


def _tiny_model(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    return GPT2LMHeadModel(config).eval()


def _samples(model, tokenizer, prompts, batch_size, seed=7, temperature=1.0):
    return [
        batch
        for batch in sample_completions(
            model, tokenizer, prompts, max_new_tokens=10, temperature=temperature,
            seed=seed, batch_size=batch_size,
        )
    ]


def test_left_padding_does_not_change_greedy_completions():
    tokenizer = word_level_tokenizer(vocabulary())
    model = _tiny_model(len(tokenizer))
    batched = _samples(model, tokenizer, PROMPTS, batch_size=3, temperature=0.0)[0].completions
    alone = [
        _samples(model, tokenizer, [prompt], batch_size=1, temperature=0.0)[0].completions[0]
        for prompt in PROMPTS
    ]
    assert batched == alone, "a left-padded batch must decode exactly as prompts one at a time"


def test_same_seed_same_samples_and_other_seed_differs():
    tokenizer = word_level_tokenizer(vocabulary())
    model = _tiny_model(len(tokenizer))
    first = _samples(model, tokenizer, PROMPTS * 4, batch_size=5)
    again = _samples(model, tokenizer, PROMPTS * 4, batch_size=5)
    other = _samples(model, tokenizer, PROMPTS * 4, batch_size=5, seed=8)
    texts = [text for batch in first for text in batch.completions]
    assert texts == [text for batch in again for text in batch.completions]
    assert texts != [text for batch in other for text in batch.completions]


def test_completion_mask_stops_after_eos():
    tokenizer = word_level_tokenizer(vocabulary())
    model = _tiny_model(len(tokenizer))
    for batch in _samples(model, tokenizer, PROMPTS * 5, batch_size=15):
        generated = batch.input_ids[:, -batch.completion_mask.size(1):]
        for row, mask in zip(batch.input_ids, batch.completion_mask):
            kept = row[mask.bool()].tolist()
            assert tokenizer.eos_token_id not in kept[:-1], "no token may follow EOS"
        assert generated.shape == batch.input_ids.shape


def test_sampled_kl_is_zero_against_itself_and_positive_against_another_model():
    tokenizer = word_level_tokenizer(vocabulary())
    policy = _tiny_model(len(tokenizer), seed=0)
    same = copy.deepcopy(policy)
    different = _tiny_model(len(tokenizer), seed=1)
    batch = _samples(policy, tokenizer, PROMPTS, batch_size=3)[0]
    assert torch.allclose(sampled_sequence_kl(policy, same, batch), torch.zeros(3), atol=1e-5)
    assert (sampled_sequence_kl(policy, different, batch) > 0).all()


def test_sampled_kl_matches_a_hand_computation_for_one_sequence():
    tokenizer = word_level_tokenizer(vocabulary())
    policy, reference = _tiny_model(len(tokenizer), 0), _tiny_model(len(tokenizer), 1)
    batch = _samples(policy, tokenizer, ["the movie was"], batch_size=1)[0]
    ids = batch.input_ids[0][batch.attention_mask[0].bool()]
    prompt_length = int((batch.attention_mask[0] - batch.completion_mask[0]).sum())
    expected = 0.0
    with torch.no_grad():
        for t in range(prompt_length, ids.numel()):  # state before each generated token
            q = torch.softmax(policy(input_ids=ids[None, :t]).logits[0, -1], -1)
            p = torch.softmax(reference(input_ids=ids[None, :t]).logits[0, -1], -1)
            expected += float((q * (q.log() - p.log())).sum())
    got = float(sampled_sequence_kl(policy, reference, batch)[0])
    assert abs(got - expected) < 1e-4, f"sequence KL {got} != step-by-step {expected}"


def test_lower_tail_mean_is_the_mean_of_the_worst_fraction():
    values = torch.tensor([5.0, -1.0, 3.0, -4.0, 0.0, 2.0, 1.0, 7.0, -2.0, 6.0])
    assert lower_tail_mean(values, 0.1) == -4.0
    assert abs(lower_tail_mean(values, 0.25) - (-4.0 - 2.0 - 1.0) / 3) < 1e-6  # ceil(2.5) = 3
    assert abs(lower_tail_mean(values, 1.0) - values.mean().item()) < 1e-6
    # 0.07 * 100 is 7.000000000000001 in floats: still the worst 7, not 8
    hundred = torch.arange(100, dtype=torch.float32)
    assert lower_tail_mean(hundred, 0.07) == hundred[:7].mean().item()


def test_the_closing_table_names_the_configured_tail_fraction():
    from rich.console import Console

    from riskalign.evaluation.report import closing_table

    point = {"step": 0, "reward_mean": 0.5, "reward_tail": -0.2, "kl": 0.0}
    console = Console(width=200, record=True)
    console.print(closing_table(point, {**point, "step": 10}, tail_fraction=0.25))
    text = console.export_text()
    assert "worst 25%" in text and "worst 10%" not in text


def test_prefill_projects_the_last_position_only_and_samples_as_full_logits_do():
    """The sampler asks for logits_to_keep=1; a model that projects every position (as before)
    draws the same samples from the same seed."""
    tokenizer = word_level_tokenizer(vocabulary())
    model = _tiny_model(len(tokenizer))
    widths: list[int] = []
    forward = model.forward

    @functools.wraps(forward)  # the sampler reads the forward's signature
    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        widths.append(out.logits.size(1))
        return out

    model.forward = recording
    last_only = _samples(model, tokenizer, PROMPTS, batch_size=3)[0]
    assert widths and set(widths) == {1}, f"logits widths per step: {widths}"

    @functools.wraps(forward)
    def every_position(*args, **kwargs):
        kwargs.pop("logits_to_keep", None)
        return forward(*args, **kwargs)

    model.forward = every_position
    full = _samples(model, tokenizer, PROMPTS, batch_size=3)[0]
    assert last_only.completions == full.completions
    assert torch.equal(last_only.input_ids, full.input_ids)
