"""OnlineRLModule: PPO and RA-RLHF's CVaR PPO (docs/objectives.md §6) as a LightningModule.

One training step is one PPO iteration on a batch of B prompts: sample one completion
each (KV-cached sampler, seeded generator), score it with the reward model, shape
per-token rewards with the frozen reference's KL penalty, compute values with a value
head on the policy and GAE, keep the lowest-return episodes (all of them for PPO,
the soft-risk schedule for RA-RLHF), then run `ppo_epochs` of clipped policy and
value updates over minibatches of the kept episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor, nn
from transformers import PreTrainedModel

from riskalign.evaluation.statistics import lower_tail_mean
from riskalign.models.loading import disable_dropout, freeze
from riskalign.models.sampling import position_ids, sample_batch
from riskalign.modules.common import FrozenReference, trainer_precision
from riskalign.modules.optimization import build_optimizer
from riskalign.objectives.online import OnlineSettings
from riskalign.objectives.ppo import (
    AdaptiveKLController,
    entropy_from_logits,
    episode_returns,
    gae,
    masked_mean,
    masked_whiten,
    ppo_losses,
    risk_mask,
    shaped_rewards,
)

VALUE_HEAD_FILE = "value_head.pt"


class PolicyWithValueHead(nn.Module):
    """A causal LM and a linear value head on its last hidden state."""

    def __init__(self, policy: PreTrainedModel) -> None:
        super().__init__()
        self.policy = policy
        hidden = policy.get_output_embeddings().in_features
        self.value_head = nn.Linear(hidden, 1, dtype=policy.dtype)
        nn.init.zeros_(self.value_head.weight)  # start from V = 0: no prior on the returns
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            output_hidden_states=True,
        )
        return out.logits, self.value_head(out.hidden_states[-1]).squeeze(-1)

    def save_pretrained(self, directory: str | Path) -> None:
        """The policy as an HF checkpoint, the value head beside it."""
        self.policy.save_pretrained(directory)
        torch.save(self.value_head.state_dict(), Path(directory) / VALUE_HEAD_FILE)


@dataclass
class Rollout:
    """One iteration's episodes; response tensors are [B, G] (G generated positions)."""

    prompts: list[str]
    completions: list[str]
    input_ids: Tensor  # [B, P + G]
    attention_mask: Tensor
    prompt_width: int  # P
    mask: Tensor  # [B, G] 1 on generated tokens up to and including EOS
    scores: Tensor  # [B] reward-model scores
    logps: Tensor  # [B, G] log π_θ of the sampled tokens, at sampling time
    ref_logps: Tensor
    values: Tensor


@dataclass
class PPOBatch:
    """A rollout made ready for the updates: advantages, returns and the kept episodes."""

    rollout: Rollout
    advantages: Tensor  # whitened over the kept episodes' tokens
    returns: Tensor
    train_mask: Tensor  # token mask × kept episodes
    kept: Tensor  # [B] bool
    kl: Tensor  # [B, G] per-token log π_θ − log π_ref


def response_logps(logits: Tensor, input_ids: Tensor, prompt_width: int) -> Tensor:
    """log π(y_t | s_t) of the response tokens: positions P-1 ... predict P ..."""
    predicting = logits[:, prompt_width - 1:-1].float()
    tokens = input_ids[:, prompt_width:]
    return torch.log_softmax(predicting, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class OnlineRLModule(FrozenReference, LightningModule):
    """PPO / RA-RLHF. `total_iterations` is M of the soft-risk schedule (trainer.max_steps)."""

    def __init__(
        self,
        policy: PreTrainedModel,
        reference: PreTrainedModel,
        tokenizer: Any,
        reward: Any,
        settings: OnlineSettings,
        optim: dict[str, Any],
        total_iterations: int,
        gradient_clip_val: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # several PPO updates per training step
        disable_dropout(policy)  # log-probs at update time must match those at sampling
        self.actor = PolicyWithValueHead(policy.train())
        self.reference = freeze(reference)
        self.tokenizer = tokenizer
        self.reward = reward
        self.settings = settings
        self.optim = optim
        self.total_iterations = total_iterations
        self.gradient_clip_val = gradient_clip_val
        self.kl_controller = AdaptiveKLController(
            settings.kl_coef, settings.kl_target, settings.kl_horizon
        )
        self.iteration = 0
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_state: Tensor | None = None  # from a checkpoint, until first use

    @property
    def policy(self) -> PreTrainedModel:
        return self.actor.policy

    @property
    def progress_step(self) -> int:
        """Evaluation curves count PPO iterations, not optimizer steps."""
        return self.iteration

    def _sampling_generator(self) -> torch.Generator:
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        if self._generator_state is not None:
            self._generator.set_state(self._generator_state)
            self._generator_state = None
        return self._generator

    def keep_count(self) -> int:
        """Episodes kept at this iteration; `risk.index_base` numbers the first one m = 1
        (paper) or m = 0 (the released scripts)."""
        return self.settings.risk.keep(self.iteration, self.settings.batch_size,
                                       self.total_iterations)

    @torch.no_grad()
    def rollout(self, prompts: list[str]) -> Rollout:
        was_training = self.actor.training
        self.actor.eval()
        samples = sample_batch(
            self.policy, self.tokenizer, prompts, max_new_tokens=self.settings.max_new_tokens,
            temperature=self.settings.temperature, generator=self._sampling_generator(),
        )
        # the prompt columns: those before the first generated token of every row
        prompt_width = int((samples.completion_mask.cumsum(1) == 0).all(0).sum())
        logits, values = self.actor(samples.input_ids, samples.attention_mask)
        ref_logits = self.reference(
            input_ids=samples.input_ids, attention_mask=samples.attention_mask,
            position_ids=position_ids(samples.attention_mask),
        ).logits
        self.actor.train(was_training)
        scores = self.reward.score(samples.completions, prompts=samples.prompts)
        return Rollout(
            prompts=samples.prompts,
            completions=samples.completions,
            input_ids=samples.input_ids,
            attention_mask=samples.attention_mask,
            prompt_width=prompt_width,
            mask=samples.completion_mask[:, prompt_width:].float(),
            scores=scores.to(self.device, torch.float32),
            logps=response_logps(logits, samples.input_ids, prompt_width),
            ref_logps=response_logps(ref_logits, samples.input_ids, prompt_width),
            values=values[:, prompt_width - 1:-1].float(),
        )

    def prepare(self, rollout: Rollout, keep: int) -> PPOBatch:
        """Shaped rewards, GAE, the `keep` lowest-return episodes, whitened advantages."""
        s = self.settings
        rewards, kl = shaped_rewards(rollout.scores, rollout.logps, rollout.ref_logps,
                                     rollout.mask, self.kl_controller.value)
        advantages, returns = gae(rewards, rollout.values, rollout.mask, s.gamma, s.lam)
        kept = risk_mask(episode_returns(returns), keep)  # exactly `keep`, even under ties
        train_mask = rollout.mask * kept[:, None]
        whitened = masked_whiten(advantages, train_mask, unbiased=s.whiten_unbiased)
        return PPOBatch(rollout, whitened, returns, train_mask, kept, kl)

    def minibatch_loss(self, batch: PPOBatch, index: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The clipped PPO loss on the episodes `index` (only kept tokens count)."""
        r, s = batch.rollout, self.settings
        logits, values = self.actor(r.input_ids[index], r.attention_mask[index])
        new_logps = response_logps(logits, r.input_ids[index], r.prompt_width)
        new_values = values[:, r.prompt_width - 1:-1].float()
        loss, stats = ppo_losses(
            new_logps, r.logps[index], batch.advantages[index], new_values, r.values[index],
            batch.returns[index], batch.train_mask[index], clip_range=s.clip_range,
            value_clip_range=s.value_clip_range, value_coef=s.value_coef,
        )
        with torch.no_grad():
            response_logits = logits[:, r.prompt_width - 1:-1]
            stats["entropy"] = entropy_from_logits(response_logits, batch.train_mask[index])
        return loss, stats

    def training_step(self, prompts: list[str], batch_idx: int) -> None:
        keep = self.keep_count()
        batch = self.prepare(self.rollout(prompts), keep)
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        kept_index = batch.kept.nonzero().squeeze(-1)
        order = torch.Generator().manual_seed(self.seed * 100_003 + self.iteration)
        totals: dict[str, float] = {}
        updates = 0
        for _ in range(self.settings.ppo_epochs):
            shuffled = kept_index[torch.randperm(len(kept_index), generator=order)]
            for start in range(0, len(shuffled), self.settings.minibatch_size):
                loss, stats = self.minibatch_loss(
                    batch, shuffled[start:start + self.settings.minibatch_size]
                )
                optimizer.zero_grad()
                self.manual_backward(loss)
                if self.gradient_clip_val:
                    self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val,
                                        gradient_clip_algorithm="norm")
                optimizer.step()
                schedule.step()
                for name, value in stats.items():
                    totals[name] = totals.get(name, 0.0) + float(value)
                updates += 1
        # The controller sees the KL of the episodes trained on (the released code divides
        # by all B, which underestimates it).
        kept_kl = float(batch.kl.sum(1)[batch.kept].mean())
        self.kl_controller.update(kept_kl, self.settings.batch_size)
        self.iteration += 1
        self._log_iteration(batch, keep, kept_kl, {k: v / updates for k, v in totals.items()})

    def _log_iteration(self, batch: PPOBatch, keep: int, kept_kl: float,
                       update_stats: dict[str, float]) -> None:
        scores = batch.rollout.scores
        metrics = {
            "ppo/iteration": float(self.iteration),
            "ppo/reward_mean": float(scores.mean()),
            "ppo/reward_cvar": lower_tail_mean(scores, 0.1),  # CVaR_0.1: the worst 10 %
            "ppo/kl": kept_kl,
            "ppo/kl_all": float(batch.kl.sum(1).mean()),
            "ppo/kl_coef": self.kl_controller.value,
            "ppo/kept": keep / self.settings.batch_size,  # α′ of the soft-risk schedule
            "ppo/response_length": float(batch.rollout.mask.sum(1).mean()),
            "ppo/return_kept_mean": float(masked_mean(batch.returns[:, 0], batch.kept)),
            **{f"ppo/{name}": value for name, value in update_stats.items()},
        }
        self.log_dict(metrics, on_step=True, batch_size=self.settings.batch_size,
                      prog_bar=False)
        self.log("reward", metrics["ppo/reward_mean"], prog_bar=True, on_step=True,
                 batch_size=self.settings.batch_size)
        self.log("lr", self.lr_schedulers().get_last_lr()[0], on_step=True,
                 batch_size=self.settings.batch_size)

    def configure_optimizers(self):
        # the schedule steps once per minibatch update: at most this many in the run
        minibatches = -(-self.settings.batch_size // self.settings.minibatch_size)
        updates = self.total_iterations * self.settings.ppo_epochs * minibatches
        return build_optimizer(self.actor.parameters(), self.optim, updates,
                               trainer_precision(self))

    def save_policy(self, directory: str | Path) -> None:
        self.actor.save_pretrained(directory)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ppo"] = {"iteration": self.iteration,
                             "kl_controller": self.kl_controller.state_dict(),
                             "sampling_generator": self._sampling_generator().get_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "ppo" in checkpoint:
            self.iteration = checkpoint["ppo"]["iteration"]
            self.kl_controller.load_state_dict(checkpoint["ppo"]["kl_controller"])
            self._generator_state = checkpoint["ppo"].get("sampling_generator")

