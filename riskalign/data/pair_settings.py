"""How preference pairs are drawn from a model's own scored samples: the settings of
`python -m riskalign.pairs` (conf/pairs.yaml's `pairs` block) and of training on
`data.source=generated` (`data.generate`). Declared here, below the models, so that config
checks read them without loading any; the generation itself is
riskalign.recipes.pair_generation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskalign.config.fields import Choice, Integer, Real, read_settings, setting

SELECTIONS = ("best_worst", "bradley_terry")


@dataclass(frozen=True)
class PairSettings:
    """How pairs are drawn (the `pairs` block of conf/pairs.yaml, `data.generate` in training)."""

    samples_per_prompt: int = setting(4, Integer(minimum=2))
    selection: str = setting("best_worst", Choice(SELECTIONS))
    # Bradley-Terry: P(a > b) = sigmoid((r_a - r_b) / T)
    bt_temperature: float = setting(1.0, Real(low=0.0))
    max_new_tokens: int = setting(24, Integer())
    temperature: float = setting(1.0, Real(low=0.0, low_open=False))  # 0: greedy
    seed: int = setting(0, Integer(minimum=0))
    batch_size: int = setting(64, Integer())  # sequences per sampling batch
    shard_size: int = setting(256, Integer())  # prompts per resumable shard
    max_prompts: int | None = setting(None, Integer(nullable=True))  # per split; None: all

    @classmethod
    def from_config(cls, block: Mapping[str, Any], key: str = "pairs") -> PairSettings:
        return read_settings(cls, key, block)
