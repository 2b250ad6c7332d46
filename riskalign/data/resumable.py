"""A training data loader that resumes part-way through an epoch.

Lightning saves the `state_dict()` of every training loader that has one in its
checkpoints and, on resume, hands it back through `load_state_dict()` before the
first batch. The loader counts the batches it has handed out in the current pass
(Lightning does not prefetch from loaders with a length, so that is exactly the
batches trained on); on resume its sampler skips them, without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """A DistributedSampler (one seeded order per epoch, process r taking every W-th
    element) whose next pass can start `skip` elements in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.skip = self.skip, 0  # only the pass right after a resume starts late
        return iter(indices[start:])


class ResumableLoader(DataLoader):
    """A DataLoader over a `ResumableSampler` that Lightning can checkpoint mid-epoch.

    It draws nothing from the global random generator (its own seeded generator
    seeds any workers), so creating an iterator does not move the random state
    that a resumed run restores.
    """

    def __init__(self, dataset: Any, *, sampler: ResumableSampler, seed: int,
                 **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler,
                         generator=torch.Generator().manual_seed(seed), **kwargs)
        self.batches_served = 0

    def __iter__(self) -> Iterator[Any]:
        self.batches_served = self.sampler.skip // self.batch_size  # resumed pass: counted
        for batch in super().__iter__():
            self.batches_served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.batches_served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        batches = state["batches"]
        # a checkpoint at the last batch of an epoch resumes at the next epoch's start
        self.sampler.skip = 0 if batches >= len(self) else batches * self.batch_size
