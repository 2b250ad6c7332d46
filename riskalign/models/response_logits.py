"""Logits at response positions only: the LM head never projects prompt or padding tokens.

A pair batch's rows are prompt + response + padding, and only the response positions
have labels. Projecting every position onto a 32k-150k vocabulary wastes most of the
LM head's work and memory, and slicing [:, :-1] off full logits forces a copy of the
largest tensor of the step. Instead each row's counted positions are gathered, left-
aligned, into [N, R] (R = the longest response) and passed to the model as
`logits_to_keep`, so the head runs on those hidden states alone.

Where the model allows, the rows run packed into one sequence without their padding
(riskalign.models.packing). `response_projection` goes one step further: it keeps
those hidden states and the head's weight (an objectives `Projection`), so the token
statistics project a chunk of positions at a time and no [N, R, V] logits exist at all.
"""

from __future__ import annotations

import logging
import weakref

import torch

from riskalign.models.packing import packed_inputs, packs_exactly
from riskalign.models.sampling import position_ids
from riskalign.objectives.tokens import IGNORE_INDEX, Projection

log = logging.getLogger(__name__)

# Config entries of models whose logits are more than hidden @ W.T + b, with the value that
# makes them a no-op: final softcapping (gemma2/3), a logit scale (cohere), a divisor
# (granite), a multiplier (falcon-h1). Such models keep the logits path; so does any other
# whose output differs from our own projection (checked on one position every call).
LOGIT_TRANSFORMS = {
    "final_logit_softcapping": None,
    "logit_scale": 1.0,
    "logits_scaling": 1.0,
    "lm_head_multiplier": 1.0,
}
# Heads found to be followed by more than a matmul: not tried again.
_NOT_PLAIN: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def response_layout(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [N, R], labels [N, R]) for unshifted labels [N, T].

    positions[i, j] is the j-th position of row i whose next token is counted (the
    logits there predict labels[i, position + 1]); rows shorter than R repeat a valid
    position and get label -100 there.
    """
    counted = labels[:, 1:] != IGNORE_INDEX
    lengths = counted.sum(1)
    width = max(1, int(lengths.max()))
    # a stable sort of "not counted" puts each row's counted positions first, in order
    positions = torch.sort((~counted).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    compact = labels[:, 1:].gather(1, positions)
    padding = torch.arange(width, device=labels.device)[None, :] >= lengths[:, None]
    return positions, compact.masked_fill(padding, IGNORE_INDEX)


def response_logits(
    model,
    batch: dict[str, torch.Tensor],
    positions: torch.Tensor,
    inputs_embeds: torch.Tensor | None = None,
    pack: bool = True,
) -> torch.Tensor:
    """Logits [N, R, V] at `positions` (from response_layout) of the rows of `batch`; the rows
    packed into one sequence where `pack` and the model allows (riskalign.models.packing)."""
    if inputs_embeds is not None:
        return _padded_logits(model, batch, positions, inputs_embeds)
    return model(**_inputs(model, batch, positions, pack)).logits.reshape(*positions.shape, -1)


def _padded_logits(model, batch, positions, inputs_embeds=None) -> torch.Tensor:
    return model(**_padded_inputs(batch, positions, inputs_embeds)).logits


def _padded_inputs(batch, positions, inputs_embeds=None) -> dict[str, torch.Tensor | bool]:
    tokens = ({"input_ids": batch["input_ids"]} if inputs_embeds is None
              else {"inputs_embeds": inputs_embeds})
    return {**tokens, "attention_mask": batch["attention_mask"],
            "position_ids": position_ids(batch["attention_mask"]), "logits_to_keep": positions,
            "use_cache": False}


def _inputs(model, batch, positions, pack: bool) -> dict[str, torch.Tensor | bool]:
    """The model's keyword arguments for logits at `positions`: packed rows, or padded ones."""
    if pack and not _sharded_model(model) and packs_exactly(model, batch, positions,
                                                            _padded_logits):
        return {**packed_inputs(batch, positions), "use_cache": False}
    return _padded_inputs(batch, positions)


def response_projection(
    model,
    batch: dict[str, torch.Tensor],
    positions: torch.Tensor,
    pack: bool = True,
) -> Projection | torch.Tensor:
    """The final hidden states [N, R, H] at `positions` with the model's LM head, as a
    Projection; or the logits [N, R, V] as `response_logits` gives them, where the head
    cannot be used on its own (see `plain_head`).

    The model runs as it always does (any wrapper: a peft LoRA model, the adapter-disabled
    reference), with a pre-hook on its head that keeps the hidden states the head is given
    and hands it one position instead. The logits the model makes of that one position are
    compared with our own projection of it: a model that transforms its logits after the
    head is caught there and falls back (a second forward, once per head).
    """
    head = plain_head(model)
    if head is None:
        return response_logits(model, batch, positions, pack=pack)
    inputs = _inputs(model, batch, positions, pack)  # before the hook: its check runs the head
    seen: list[torch.Tensor | None] = []

    def one_position(_module, args):
        if args and not seen:
            seen.append(args[0])
            return (args[0][:1, :1], *args[1:])
        seen.append(None)  # called again, or by keyword: not the plain head we expect
        return None

    handle = head.register_forward_pre_hook(one_position)
    try:
        logits = model(**inputs).logits
    finally:
        handle.remove()
    hidden = seen[0] if len(seen) == 1 else None
    if hidden is not None:
        projection = Projection(hidden.reshape(*positions.shape, -1), head.weight, head.bias)
        with torch.no_grad():
            ours = projection[:1, :1].logits().to(logits.dtype)
        if logits.shape == ours.shape and torch.allclose(logits, ours, rtol=1e-5, atol=1e-6):
            return projection
    log.warning("The LM head of %s is not used as a plain linear map: its token statistics "
                "go through full logits", type(model).__name__)
    _NOT_PLAIN.add(head)
    return response_logits(model, batch, positions, pack=pack)


def plain_head(model) -> torch.nn.Linear | None:
    """The model's LM head if its logits are hidden @ W.T + b and its weight is whole on
    this process; None otherwise (the caller computes logits the usual way).

    None for: heads that are not exactly nn.Linear (LoRA on the head, quantized layers);
    sharded weights, which the wrapper gathers only inside its own forward (FSDP,
    DeepSpeed ZeRO-3, DTensor); models that transform their logits (LOGIT_TRANSFORMS);
    references that are not modules (a lazily loaded one).
    """
    from riskalign.models.references import AdapterDisabledReference

    module = model.policy if isinstance(model, AdapterDisabledReference) else model
    if not isinstance(module, torch.nn.Module):
        return None
    get_head = getattr(module, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if type(head) is not torch.nn.Linear or head in _NOT_PLAIN or _sharded(module, head):
        return None
    config = getattr(module, "config", None)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name, neutral in LOGIT_TRANSFORMS.items():
        if getattr(config, name, neutral) != neutral:
            return None
    return head


def _sharded_model(model) -> bool:
    """Whether the model's weights are split across processes (FSDP, ZeRO-3, DTensor): such
    models keep padded batches, so every rank runs the same forwards."""
    module = getattr(model, "policy", model)
    if not isinstance(module, torch.nn.Module):
        return True
    get_head = getattr(module, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return isinstance(head, torch.nn.Module) and _sharded(module, head)


def _sharded(module: torch.nn.Module, head: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(child, FullyShardedDataParallel) for child in module.modules()):
        return True
    weight = getattr(head, "weight", None)
    if hasattr(weight, "ds_id"):  # DeepSpeed ZeRO-3 partitions parameters
        return True
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(weight, DTensor)


# Floats per chunk of the entropy pass: small enough to stay in cache-sized pieces.
ENTROPY_CHUNK_FLOATS = 1 << 22


@torch.no_grad()
def response_entropy(logits: torch.Tensor | Projection, labels: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the model's next-token distribution over counted response
    positions: logits [N, R, V] (or a Projection) and labels [N, R] from response_layout.
    A few rows (of a Projection: counted positions) at a time, so the pass adds
    O(chunk · V) memory, not another [N, R, V] tensor."""
    counted = labels != IGNORE_INDEX
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    if isinstance(logits, Projection):
        hidden = logits.hidden[counted]  # [P, H]
        rows = max(1, ENTROPY_CHUNK_FLOATS // logits.shape[-1])
        chunks = (Projection(hidden[start:start + rows], logits.weight, logits.bias).logits()
                  for start in range(0, hidden.shape[0], rows))
        for chunk in chunks:
            total += _entropy(chunk).sum()
        return total / counted.sum().clamp(min=1)
    rows = max(1, ENTROPY_CHUNK_FLOATS // max(1, logits.shape[1] * logits.shape[2]))
    for start in range(0, logits.shape[0], rows):
        entropy = _entropy(logits[start:start + rows])
        total += (entropy * counted[start:start + rows]).sum()
    return total / counted.sum().clamp(min=1)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
