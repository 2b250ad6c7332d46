"""Seeded, batched sampling of completions with a KV cache.

A small loop of our own rather than `generate`: it passes explicit position ids
for left-padded prompts (so a batch gives the same samples as one prompt at a
time) and draws from an explicit `torch.Generator`, leaving the global RNG of
training untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from riskalign.data.formats import encode_prompt


@dataclass
class SampleBatch:
    """Prompts and sampled completions, left-padded prompt then completion.

    input_ids, attention_mask, completion_mask: [n, P + G]; completion_mask marks
    generated tokens up to and including EOS.
    """

    prompts: list[str]
    completions: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask [n, P]."""
    encoded = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, width - len(tokens):] = torch.tensor(tokens)
        mask[row, width - len(tokens):] = 1
    return ids.to(device), mask.to(device)


def _forward_parameters(model: PreTrainedModel):
    # a PEFT wrapper's forward takes **kwargs and passes them on: ask the model it wraps
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(base.forward).parameters


def _cache_argument(model: PreTrainedModel) -> str:
    """The KV cache's keyword: `cache` from transformers 5.24 (which deprecates the old name
    until 5.40 removes it), `past_key_values` before."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


def _last_logits_only(model: PreTrainedModel) -> dict[str, int]:
    """`logits_to_keep=1` where the model takes it: sampling reads the last position's logits
    only, so the prompt's other positions need no LM head (a [n, P, V] tensor at prefill)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(model) else {}


@torch.no_grad()
def sample_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
) -> SampleBatch:
    """Sample one completion per prompt (temperature 0 means greedy)."""
    device = next(model.parameters()).device
    prompt_ids, mask = encode_prompts(tokenizer, prompts, device)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    step_ids, cache, tokens, alive_cols = prompt_ids, None, [], []
    cache_argument = _cache_argument(model)  # once: inspect is not free, the loop is hot
    last_only = _last_logits_only(model)
    for _ in range(max_new_tokens):
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=position_ids(mask)[:, -step_ids.size(1):],
            **{cache_argument: cache},
            **last_only,
            use_cache=True,
        )
        cache = out.get("cache", out.get("past_key_values"))
        logits = out.logits[:, -1].float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            next_ids = logits.argmax(-1)
        alive = ~finished
        next_ids = torch.where(alive, next_ids, torch.full_like(next_ids, pad))
        tokens.append(next_ids)
        alive_cols.append(alive.long())
        mask = torch.cat([mask, alive.long()[:, None]], dim=1)
        finished |= next_ids == eos
        step_ids = next_ids[:, None]
        if finished.all():
            break
    generated, completion = torch.stack(tokens, 1), torch.stack(alive_cols, 1)
    texts = [
        tokenizer.decode(row[keep.bool()], skip_special_tokens=True).strip()
        for row, keep in zip(generated, completion)
    ]
    return SampleBatch(
        prompts=list(prompts),
        completions=texts,
        input_ids=torch.cat([prompt_ids, generated], 1),
        attention_mask=mask,
        completion_mask=torch.cat([torch.zeros_like(prompt_ids), completion], 1),
    )


def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
) -> Iterator[SampleBatch]:
    """Sample one completion per prompt in batches; the same seed gives the same samples."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            yield sample_batch(
                model,
                tokenizer,
                prompts[start:start + batch_size],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                generator=generator,
            )
    finally:
        model.train(was_training)
