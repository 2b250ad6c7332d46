"""AlpacaEval-style win rate: the policy's answer against a reference answer, judged by a reward.

One seeded completion per prompt; a win is a higher reward than the reference output
for the same prompt, a tie counts half. The reward sees the prompts, so question/answer
reward models (oasst-deberta) judge each answer against its question.
"""

from __future__ import annotations

from typing import Any

import torch
from rich.progress import Progress
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from riskalign.errors import ConfigError
from riskalign.evaluation.alignment import EvalSettings
from riskalign.rewards import RewardModel


def win_scores(rewards: torch.Tensor, reference_rewards: torch.Tensor) -> torch.Tensor:
    """1 where the policy scores higher, 0.5 on a tie, 0 where it scores lower."""
    return (rewards > reference_rewards).float() + 0.5 * (rewards == reference_rewards).float()


def win_rate(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    references: list[str],
    reward: RewardModel,
    settings: EvalSettings,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Win rate of sampled completions over reference outputs, and one row per prompt."""
    prompts, references = list(prompts), list(references)  # e.g. a datasets Column
    if not prompts:
        raise ConfigError("win_rate: prompts is empty: need at least one prompt and its reference")
    if len(references) != len(prompts):
        raise ConfigError(
            f"win_rate: {len(prompts)} prompts but {len(references)} references: "
            "need exactly one reference output per prompt"
        )
    batches = settings.sample(policy, tokenizer, prompts)
    completions: list[str] = []
    rewards, reference_rewards = [], []
    with Progress(transient=True) as progress:
        task = progress.add_task("eval: win rate", total=len(prompts))
        for batch in batches:
            start = len(completions)
            batch_references = references[start:start + len(batch.prompts)]
            rewards.append(reward.score(batch.completions, prompts=batch.prompts).float().cpu())
            reference_rewards.append(
                reward.score(batch_references, prompts=batch.prompts).float().cpu()
            )
            completions.extend(batch.completions)
            progress.advance(task, len(batch.prompts))
    policy_values, reference_values = torch.cat(rewards), torch.cat(reference_rewards)
    wins = win_scores(policy_values, reference_values)
    rows = [
        {
            "prompt": prompt,
            "completion": completion,
            "reference": reference,
            "reward": value,
            "reference_reward": reference_value,
            "win": win,
        }
        for prompt, completion, reference, value, reference_value, win in zip(
            prompts, completions, references,
            policy_values.tolist(), reference_values.tolist(), wins.tolist(),
        )
    ]
    summary = {
        "win_rate": wins.mean().item(),
        "reward_mean": policy_values.mean().item(),
        "reference_reward_mean": reference_values.mean().item(),
        "num_prompts": len(prompts),
    }
    return summary, rows
