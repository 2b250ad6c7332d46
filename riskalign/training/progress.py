"""The training progress bar: one bar for the whole run, in steps, with a few short metrics.

Lightning's RichProgressBar counts batches per epoch and names the epoch out of
`max_epochs - 1`: "Epoch 0/-2" for a run bounded by max_steps (max_epochs=-1), a new bar
each epoch, and every metric at full length and name, wrapped over several lines.
This one reads

    train ━━━━━━━━━━━━━━━━━━━━ 120/500 0:00:41 • 0:02:10 loss: 0.671 acc: 0.625 margin: 0.0412

and keeps to one line of an 80-column terminal. While it is live in a terminal, log
lines print above it instead of through it.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import (
    BatchesProcessedColumn,
    CustomBarColumn,
    CustomTimeColumn,
)
from rich.file_proxy import FileProxy
from rich.progress import ProgressColumn, TextColumn
from rich.table import Column

from riskalign.modules.common import progress_step

# Short names of the metrics modules put on the bar (self.log(..., prog_bar=True)), in
# the order shown; any other keeps the last part of its name.
SHORT_NAMES = {"loss": "loss", "rewards/accuracies": "acc", "rewards/margins": "margin",
               "reward": "reward"}
DESCRIPTION = "train"
MAX_BAR_WIDTH = 40


class StepProgressBar(RichProgressBar):
    """Progress in optimizer steps (PPO: iterations, what checkpoints and evaluations
    count) out of the run's total, across epochs and from a resumed step."""

    def __init__(self) -> None:
        super().__init__(leave=True)
        self._rerouted: list[tuple[logging.StreamHandler, Any]] = []

    def configure_columns(self, trainer: Trainer) -> list:
        # Only the bar may shrink: it takes the width the others leave (up to
        # MAX_BAR_WIDTH), so the line fits the terminal instead of wrapping.
        return [
            _no_wrap(TextColumn("[progress.description]{task.description}")),
            CustomBarColumn(bar_width=None, complete_style=self.theme.progress_bar,
                            finished_style=self.theme.progress_bar_finished,
                            pulse_style=self.theme.progress_bar_pulse,
                            table_column=Column(max_width=MAX_BAR_WIDTH)),
            _no_wrap(BatchesProcessedColumn(style=self.theme.batch_progress)),
            _no_wrap(CustomTimeColumn(style=self.theme.time)),
        ]

    def _init_progress(self, trainer: Trainer) -> None:
        super()._init_progress(trainer)
        if self._metric_component is not None:  # Lightning's, added after configure_columns
            _no_wrap(self._metric_component)
        self._route_log_lines_above_the_bar()

    def _stop_progress(self) -> None:
        self._restore_log_lines()
        super()._stop_progress()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning's starts a new bar each epoch; this one goes on.
        self._ensure_task(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any,
                           **kwargs: Any) -> None:
        self._ensure_task(trainer, pl_module)
        self._update(self.train_progress_bar_id, progress_step(trainer, pl_module))
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The module's progress-bar metrics under short names, to 3 significant digits;
        not the logger's version (v_num)."""
        metrics = trainer.progress_bar_metrics
        order = {name: index for index, name in enumerate(SHORT_NAMES)}
        shown = {}
        for name in sorted(metrics, key=lambda name: order.get(name, len(order))):
            shown[SHORT_NAMES.get(name, name.rsplit("/", 1)[-1])] = _short(metrics[name])
        return shown

    def _ensure_task(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.is_disabled or self.progress is None or self.train_progress_bar_id is not None:
            return
        # a resumed run starts at its step (not a jump from 0 that would skew the rate)
        self.train_progress_bar_id = self.progress.add_task(
            DESCRIPTION, total=total_steps(trainer), completed=progress_step(trainer, pl_module))

    def _route_log_lines_above_the_bar(self) -> None:
        """In a terminal, Rich's live display swaps sys.stdout and sys.stderr for proxies
        that print above the bar; a logging handler still holds the real stream and would
        write through the bar. Point such handlers at the proxies while the bar is live."""
        proxies = {id(stream.rich_proxied_file): stream for stream in (sys.stdout, sys.stderr)
                   if isinstance(stream, FileProxy)}
        for handler in logging.getLogger().handlers:
            # FileHandler is a StreamHandler too: only the console's are rerouted
            if type(handler) is logging.StreamHandler and id(handler.stream) in proxies:
                self._rerouted.append((handler, handler.setStream(proxies[id(handler.stream)])))

    def _restore_log_lines(self) -> None:
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted.clear()


def total_steps(trainer: Trainer) -> float:
    """The run's steps: max_steps, else its epochs' optimizer steps (inf if unbounded)."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return trainer.max_steps
    batches = trainer.num_training_batches
    if trainer.max_epochs is None or trainer.max_epochs < 0 or not math.isfinite(batches):
        return math.inf
    return trainer.max_epochs * math.ceil(batches / trainer.accumulate_grad_batches)


def _short(value: Any) -> str:
    """3 significant digits: 0.693, 0.0412, 1.00, 123, 1.23e+03."""
    try:
        return f"{float(value):#.3g}".rstrip(".")
    except (TypeError, ValueError):
        return str(value)


def _no_wrap(column: ProgressColumn) -> ProgressColumn:
    """A column cut short (…) rather than wrapped when the line is too long. Rich keeps a
    column's table settings in `_table_column`; some of Lightning's columns take none."""
    column._table_column = Column(no_wrap=True, overflow="ellipsis")
    return column
