"""Logits at response positions only: the LM head never projects prompt or padding tokens.

A pair batch's rows are prompt + response + padding, and only the response positions
have labels. Projecting every position onto a 32k-150k vocabulary wastes most of the
LM head's work and memory, and slicing [:, :-1] off full logits forces a copy of the
largest tensor of the step. Instead each row's counted positions are gathered, left-
aligned, into [N, R] (R = the longest response) and passed to the model as
`logits_to_keep`, so the head runs on those hidden states alone.
"""

from __future__ import annotations

import torch

from riskalign.evaluation.sampling import position_ids
from riskalign.objectives.tokens import IGNORE_INDEX


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
) -> torch.Tensor:
    """Logits [N, R, V] at `positions` (from response_layout) of the rows of `batch`."""
    inputs = ({"input_ids": batch["input_ids"]} if inputs_embeds is None
              else {"inputs_embeds": inputs_embeds})
    return model(
        **inputs,
        attention_mask=batch["attention_mask"],
        position_ids=position_ids(batch["attention_mask"]),
        logits_to_keep=positions,
        use_cache=False,
    ).logits


# Floats per chunk of the entropy pass: small enough to stay in cache-sized pieces.
ENTROPY_CHUNK_FLOATS = 1 << 22


@torch.no_grad()
def response_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the model's next-token distribution over counted response
    positions: logits [N, R, V] and labels [N, R] from response_layout. A few rows at a
    time, so the pass adds O(chunk · V) memory, not another [N, R, V] tensor."""
    counted = labels != IGNORE_INDEX
    rows = max(1, ENTROPY_CHUNK_FLOATS // max(1, logits.shape[1] * logits.shape[2]))
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[0], rows):
        logp = torch.log_softmax(logits[start:start + rows].float(), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        total += (entropy * counted[start:start + rows]).sum()
    return total / counted.sum().clamp(min=1)
