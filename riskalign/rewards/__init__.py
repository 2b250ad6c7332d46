"""Reward models behind one interface: a list of texts in, a float tensor of scores out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class RewardModel(Protocol):
    """Scores texts; higher is better. `score(texts)` returns a float32 tensor [len(texts)]."""

    def score(self, texts: list[str]) -> torch.Tensor: ...
