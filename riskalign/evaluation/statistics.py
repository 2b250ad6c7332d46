"""Summary statistics of reward samples."""

from __future__ import annotations

import math

import torch


def lower_tail_mean(values: torch.Tensor, fraction: float) -> float:
    """Mean of the worst ⌈fraction · n⌉ values: the lower-tail CVaR at level `fraction`."""
    count = max(1, math.ceil(fraction * values.numel()))
    return values.float().sort().values[:count].mean().item()
