"""Wall time of every training step, for the run's summary and the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Any

from lightning import Callback


class StepTimer(Callback):
    """Seconds from each training batch's start to its end (forward, backward, optimizer;
    not the evaluations, which run between steps and are timed on their own)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        if self._started is not None:
            self.seconds.append(time.perf_counter() - self._started)
            self._started = None

    def summary(self, warmup: int = 1) -> dict[str, float | int | None]:
        """Median and mean step time after `warmup` steps (the first pays one-off costs), and
        every step's seconds."""
        steady = self.seconds[warmup:] or self.seconds
        return {
            "steps_timed": len(steady),
            "step_seconds_median": round(statistics.median(steady), 4) if steady else None,
            "step_seconds_mean": round(statistics.fmean(steady), 4) if steady else None,
            "step_seconds": [round(seconds, 4) for seconds in self.seconds],  # every step
        }
