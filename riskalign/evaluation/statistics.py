"""Summary statistics of reward samples. Free of a torch import, so that the frontier
report counts its tails with the same rule without loading torch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def lower_tail_mean(values: torch.Tensor, fraction: float) -> float:
    """Mean of the worst ⌈fraction · n⌉ values: the lower-tail CVaR at level `fraction`."""
    count = tail_count(fraction, values.numel())
    return values.float().sort().values[:count].mean().item()


def tail_count(fraction: float, count: int) -> int:
    """⌈fraction · count⌉ in [1, count], immune to float noise (0.07 · 100 = 7.000000000000001
    would otherwise count 8)."""
    return min(count, max(1, math.ceil(round(fraction * count, 9))))
