"""VADER's compound sentiment score in [-1, 1]: the embedded world's reward model."""

from __future__ import annotations

import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


class VaderReward:
    """Rule-based sentiment (Hutto & Gilbert 2014); the lexicon ships with the package."""

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, texts: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        # Sentiment is a property of the text alone: prompts are accepted and ignored.
        scores = [self._analyzer.polarity_scores(text)["compound"] for text in texts]
        return torch.tensor(scores, dtype=torch.float32)
