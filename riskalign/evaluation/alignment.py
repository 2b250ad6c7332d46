"""Alignment versus drift at one point of training (docs/objectives.md §7)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

import torch
from rich.progress import Progress
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from riskalign.evaluation.drift import sampled_sequence_kl
from riskalign.evaluation.samples import ScoredSample
from riskalign.evaluation.statistics import lower_tail_mean
from riskalign.models.sampling import sample_completions
from riskalign.rewards import RewardModel


@dataclass
class EvalSettings:
    """How the sampled part of an evaluation runs (conf/eval/)."""

    max_new_tokens: int
    temperature: float
    seed: int
    batch_size: int
    tail_fraction: float
    tail_threshold: float
    # RA-RLHF's tail: the mean reward over prompts whose own score is <= this (None: off)
    prompt_tail_threshold: float | None = None

    def sample(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
               prompts: list[str]):
        """One seeded completion per prompt, in batches (a generator of SampleBatch)."""
        return sample_completions(
            policy, tokenizer, prompts, max_new_tokens=self.max_new_tokens,
            temperature=self.temperature, seed=self.seed, batch_size=self.batch_size,
        )

    @classmethod
    def from_config(cls, eval_cfg: Mapping[str, Any]) -> EvalSettings:
        return cls(**{field.name: eval_cfg[field.name] for field in fields(cls)
                      if field.name in eval_cfg or field.default is MISSING})


def evaluate_samples(
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    reward: RewardModel,
    settings: EvalSettings,
) -> tuple[dict[str, float], list[ScoredSample]]:
    """Sample one completion per prompt (seeded), score it, and measure its KL drift
    (NaN without a reference): the summary metrics and every scored sample."""
    samples = score_samples(policy, reference, tokenizer, prompts, reward, settings)
    reward_values = torch.tensor([sample.reward for sample in samples])
    kls = [sample.kl for sample in samples if sample.kl is not None]
    result = {
        "reward_mean": reward_values.mean().item(),
        "reward_tail": lower_tail_mean(reward_values, settings.tail_fraction),
        "reward_below_threshold": (reward_values < settings.tail_threshold).float().mean().item(),
        "kl": sum(kls) / len(kls) if kls else float("nan"),
    }
    if settings.prompt_tail_threshold is not None:
        result.update(prompt_tail(prompts, reward_values, reward, settings.prompt_tail_threshold))
    return result, samples


def score_samples(
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    reward: RewardModel,
    settings: EvalSettings,
) -> list[ScoredSample]:
    """One seeded completion per prompt with its reward and sequence KL, in prompt order."""
    samples: list[ScoredSample] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("eval: sampling", total=len(prompts))
        for batch in settings.sample(policy, tokenizer, prompts):
            rewards = reward.score(batch.completions).tolist()
            kls = (sampled_sequence_kl(policy, reference, batch).cpu().tolist()
                   if reference is not None else [None] * len(rewards))
            for prompt, completion, value, kl in zip(batch.prompts, batch.completions,
                                                     rewards, kls):
                samples.append(ScoredSample(len(samples), prompt, completion, value, kl))
            progress.advance(task, len(batch.prompts))
    return samples


def prompt_tail(
    prompts: list[str], rewards: torch.Tensor, reward: RewardModel, threshold: float
) -> dict[str, float]:
    """RA-RLHF's tail metric: the mean reward of the completions of the prompts that the
    reward model itself scores at or below `threshold` (NaN if there are none)."""
    hard = reward.score(prompts) <= threshold
    tail = rewards[hard].mean().item() if hard.any() else float("nan")
    return {"reward_prompt_tail": tail, "prompt_tail_count": int(hard.sum())}


def evaluate_pairs(
    metrics_of_batch: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    batches: Iterable[dict[str, torch.Tensor]],
    limit: int,
) -> dict[str, float]:
    """Teacher-forced objective metrics averaged over the first batches holding >= `limit` pairs."""
    sums: dict[str, float] = defaultdict(float)
    seen = 0
    for batch in batches:
        pairs = batch["input_ids"].size(0) // 2
        for name, value in metrics_of_batch(batch).items():
            sums[name] += float(value) * pairs
        seen += pairs
        if seen >= limit:
            break
    return {name: total / seen for name, total in sums.items()}
