"""Reward models behind one interface: a list of texts in, a float tensor of scores out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class RewardModel(Protocol):
    """Scores texts; higher is better.

    `score(texts, prompts)` returns a float32 tensor [len(texts)]. `prompts`, when given,
    are the prompts the texts answer (one per text); rewards that judge a text alone
    ignore them, question/answer reward models score the pair.
    """

    def score(self, texts: list[str], prompts: list[str] | None = None) -> torch.Tensor: ...
