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
CHECK_POSITIONS = 8  # their first counted positions compared: no [rows, R, V] logits twice
# model -> parameters per layer outside the embeddings (for packing's cost rule)
_LAYER_PARAMETERS: weakref.WeakKeyDictionary[torch.nn.Module, float] = \
    weakref.WeakKeyDictionary()


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
    if not isinstance(module, torch.nn.Module) or not packing_pays(module,
                                                                    batch["attention_mask"]):
        return False
    if module not in _PACKS_EXACTLY:
        _PACKS_EXACTLY[module] = _check(model, module, batch, positions, padded_forward)
    return _PACKS_EXACTLY[module]


def packing_pays(module: torch.nn.Module, attention_mask: torch.Tensor) -> bool:
    """Whether packing this batch costs fewer FLOPs than padding it. Packed, no padding runs
    through the layers' matmuls, but attention spans the whole packed sequence (L² query-key
    pairs instead of each row's T²): short rows with much padding gain, long full rows lose.
    Per layer: 2·P FLOPs per token (P its parameters) and 4·H per query-key pair."""
    config = getattr(module, "config", None)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    hidden = getattr(config, "hidden_size", None)
    if not hidden:
        return False
    if module not in _LAYER_PARAMETERS:
        layers = getattr(config, "num_hidden_layers", None) or 1
        embeddings = module.get_input_embeddings().weight.numel()
        total = sum(p.numel() for p in module.parameters())
        _LAYER_PARAMETERS[module] = (total - embeddings) / layers
    rows, width = attention_mask.shape
    tokens = int(attention_mask.sum())

    def cost(tokens: int, pairs: int) -> float:
        return 2 * _LAYER_PARAMETERS[module] * tokens + 4 * hidden * pairs

    return cost(tokens, tokens**2) < cost(rows * width, rows * width**2)


def _check(model, module: torch.nn.Module, batch, positions, padded_forward) -> bool:
    """Packed against padded logits of `batch`'s first rows; `module` holds `model`'s weights
    (the policy of an adapter-disabled reference)."""
    rows = slice(0, min(CHECK_ROWS, positions.size(0)))
    few = {key: value[rows] for key, value in batch.items() if torch.is_tensor(value)}
    kept = within_rows(few["attention_mask"], positions[rows])[:, :CHECK_POSITIONS]
    was_training = module.training
    # eval mode (no dropout: both sides must be deterministic) and the random state restored,
    # so a run's random stream does not depend on when this check ran (resumed runs)
    module.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            padded = padded_forward(model, few, kept)
            packed = model(**packed_inputs(few, kept), use_cache=False).logits
    finally:
        module.train(was_training)
    packed = packed.reshape(padded.shape)
    tolerance = 1e-3 if padded.dtype == torch.float32 else 5e-2
    if torch.allclose(packed.float(), padded.float(), rtol=tolerance, atol=tolerance):
        return True
    log.warning("%s does not keep packed rows apart (logits differ by %.2g from padded rows): "
                "its batches stay padded", type(module).__name__,
                float((packed.float() - padded.float()).abs().max()))
    return False
