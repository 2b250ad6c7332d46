"""Sampled drift: the sequence KL(π_θ ‖ π_ref) along the policy's own samples."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from riskalign.models.sampling import SampleBatch, position_ids


@torch.no_grad()
def sampled_sequence_kl(
    policy: PreTrainedModel, reference: PreTrainedModel, batch: SampleBatch
) -> torch.Tensor:
    """Σ_t KL(π_θ(·|s_t) ‖ π_ref(·|s_t)) over each sample's generated tokens: [n].

    Exact per step over the vocabulary (docs/objectives.md §7), in float32.
    """
    mask, ids = batch.attention_mask, batch.input_ids
    positions = position_ids(mask)
    # The logits at t predict token t+1: a generated token's state is one step earlier.
    counted = batch.completion_mask[:, 1:].float()
    policy_logp, reference_logp = (
        torch.log_softmax(
            model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1],
            dim=-1,
            dtype=torch.float32,
        )
        for model in (policy, reference)
    )
    per_step = (policy_logp.exp() * (policy_logp - reference_logp)).sum(-1)
    return (per_step * counted).sum(-1)
