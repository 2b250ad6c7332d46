"""Padding-free forwards: a batch's rows packed end to end into one sequence.

A pair batch is 2B right-padded rows of prompt + response; on short pairs a quarter of its
positions can be padding, and every layer computes them. Packed, the rows' real tokens form
one [1, L] sequence (L the batch's token count) with positions that restart at each row;
transformers builds a block-diagonal causal mask from such position ids when no attention
mask is given (`masking_utils.find_packed_sequence_indices`), so no row attends to another
and each token sees exactly what it saw padded. The counted positions of row i (from
`response_layout`) become offset_i + position in the packed sequence.

Whether a model honours packed position ids is an architecture's business, so it is checked
once per model: the first packed batch also runs padded (its first rows, without
gradients) and the two sets of logits must agree; a model where they do not keeps padded
batches, with one warning.
"""

from __future__ import annotations

import logging
import weakref

import torch

log = logging.getLogger(__name__)

# model -> whether packing gives it the logits padding does (checked on first use)
_PACKS_EXACTLY: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()
CHECK_ROWS = 4  # rows of the first batch that also run padded: enough to see rows isolated


def right_padded(attention_mask: torch.Tensor) -> bool:
    """Whether every row's real tokens come first (ones, then only zeros)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def within_rows(attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`positions` [N, R] with each row's filler entries (past its counted ones, labelled
    -100, which may point at padding) moved onto its last real token: packed, a position past
    a row's end would be the next row's."""
    return torch.minimum(positions, attention_mask.sum(1, keepdim=True) - 1)


def packed_inputs(
    batch: dict[str, torch.Tensor], positions: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The model inputs of `batch`'s rows packed into one sequence, with the counted
    `positions` [N, R] of each row as `logits_to_keep` positions [1, N·R] of the packed one."""
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(1)
    offsets = torch.cumsum(lengths, 0) - lengths
    starts = torch.repeat_interleave(offsets, lengths)
    position_ids = torch.arange(int(lengths.sum()), device=mask.device) - starts
    kept = offsets[:, None] + within_rows(batch["attention_mask"], positions)
    return {
        "input_ids": batch["input_ids"][mask][None],
        "position_ids": position_ids[None],
        "logits_to_keep": kept.reshape(1, -1),
    }


def packs_exactly(model, batch: dict[str, torch.Tensor], positions: torch.Tensor,
                  padded_forward) -> bool:
    """Whether `model` may run `batch` packed: a right-padded batch, and a model whose packed
    logits matched its padded ones the first time (`padded_forward(model, batch, positions)`
    gives the padded logits [N, R, V])."""
    if not right_padded(batch["attention_mask"]):
        return False
    module = getattr(model, "policy", model)  # the adapter-disabled reference: its policy
    if not isinstance(module, torch.nn.Module):
        return False
    if module not in _PACKS_EXACTLY:
        _PACKS_EXACTLY[module] = _check(model, batch, positions, padded_forward)
    return _PACKS_EXACTLY[module]


def _check(model, batch, positions, padded_forward) -> bool:
    rows = slice(0, min(CHECK_ROWS, positions.size(0)))
    few = {key: value[rows] for key, value in batch.items() if torch.is_tensor(value)}
    kept = within_rows(few["attention_mask"], positions[rows])  # real tokens on both sides
    with torch.no_grad():
        padded = padded_forward(model, few, kept)
        packed = model(**packed_inputs(few, kept), use_cache=False).logits
    packed = packed.reshape(padded.shape)
    tolerance = 1e-3 if padded.dtype == torch.float32 else 5e-2
    if torch.allclose(packed.float(), padded.float(), rtol=tolerance, atol=tolerance):
        return True
    log.warning("%s does not keep packed rows apart (logits differ by %.2g from padded rows): "
                "its batches stay padded", type(getattr(model, "policy", model)).__name__,
                float((packed.float() - padded.float()).abs().max()))
    return False
