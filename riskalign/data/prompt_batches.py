"""Batches of prompt strings for online RL: one batch of B prompts per PPO iteration."""

from __future__ import annotations

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from riskalign.data.resumable import ResumableLoader, ResumableSampler
from riskalign.errors import ConfigError


def prompt_schedule(count: int, batch_size: int, iterations: int, seed: int) -> list[int]:
    """Indices of `iterations` batches: seeded passes over the prompts, each a permutation,
    so every prompt is seen once per pass whatever B is."""
    order: list[int] = []
    generator = torch.Generator().manual_seed(seed)
    while len(order) < batch_size * iterations:
        order.extend(torch.randperm(count, generator=generator).tolist())
    return order[: batch_size * iterations]


class PromptDataModule(LightningDataModule):
    """`iterations` batches of `batch_size` training prompts, in a seeded order."""

    def __init__(self, prompts: list[str], batch_size: int, iterations: int, seed: int) -> None:
        super().__init__()
        if not prompts:
            raise ConfigError("data: the train split has no prompts")
        self.prompts = prompts
        self.batch_size = batch_size
        self.iterations = iterations
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        order = prompt_schedule(len(self.prompts), self.batch_size, self.iterations, self.seed)
        scheduled = [self.prompts[i] for i in order]
        # in schedule order; resumable part-way through after a checkpoint
        in_order = ResumableSampler(scheduled, num_replicas=1, rank=0, shuffle=False)
        return ResumableLoader(scheduled, sampler=in_order, seed=self.seed,
                               batch_size=self.batch_size, collate_fn=list)
