"""The Lightning callback that traces a run's alignment-vs-drift curve."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from riskalign.evaluation.alignment import EvalSettings, evaluate_pairs, evaluate_samples
from riskalign.evaluation.samples import COLUMNS, ScoredSample, sample_rows, write_samples
from riskalign.models.loading import freeze
from riskalign.modules.common import progress_step
from riskalign.rewards import RewardModel

log = logging.getLogger(__name__)


def evaluation_interval(every_n_steps: int | None, num_points: int, max_steps: int) -> int:
    """Optimizer steps between evaluations: `every_n_steps` if set, else the interval that
    spreads `num_points` evaluations over the run (step 0 and the last step included)."""
    if every_n_steps:
        return every_n_steps
    return max(1, math.ceil(max_steps / (num_points - 1)))


class AlignmentEvaluation(Callback):
    """Evaluates before training, every `every_n_steps` optimizer steps, and at the end.

    Each evaluation appends a point {step, reward_mean, reward_tail, kl, ...} to
    `self.curve`, logs it under `eval/...` to every logger, and keeps its completions
    (`run_dir/samples/step-N.jsonl`, and the W&B table `eval/samples`). With `reference`
    None, KL is not measured (NaN). `offload_reference` moves a reference that only
    the evaluation uses back to the CPU after each evaluation, so training keeps
    the accelerator's memory. Under DDP or FSDP every process evaluates the same
    prompts (sharded weights need every process in each forward); rank 0 logs.
    """

    def __init__(
        self,
        reference: Any,
        tokenizer: Any,
        prompts: list[str],
        reward: RewardModel,
        settings: EvalSettings,
        pair_batches: Any | None,
        num_pairs: int,
        every_n_steps: int | None = None,
        offload_reference: bool = False,
        run_dir: Path | None = None,
    ) -> None:
        self.reference = None if reference is None else freeze(reference)
        self.offload_reference = offload_reference
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.reward = reward
        self.settings = settings
        self.pair_batches = pair_batches
        self.num_pairs = num_pairs
        self.every_n_steps = every_n_steps
        self.run_dir = run_dir
        self.curve: list[dict[str, float]] = []

    def _evaluate(self, trainer: Trainer, module: LightningModule) -> None:
        step = progress_step(trainer, module)
        if self.curve and self.curve[-1]["step"] == step:
            return
        started = time.perf_counter()
        was_training = module.training
        module.eval()
        if self.reference is not None:
            self.reference.to(module.device)
        point: dict[str, float] = {"step": step}
        metrics, samples = evaluate_samples(
            module.policy, self.reference, self.tokenizer, self.prompts, self.reward,
            self.settings,
        )
        point.update(metrics)
        if self.pair_batches is not None:
            point.update(self._pair_metrics(module))
        module.train(was_training)
        if self.offload_reference and self.reference is not None:
            self.reference.to("cpu")
        self.curve.append(point)
        metrics = {f"eval/{name}": value for name, value in point.items() if name != "step"}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if trainer.is_global_zero:
            self._keep_samples(trainer, step, samples)
        log.info(
            "eval @ step %d: reward %.3f (tail %.3f), KL %.3f  [%.1fs]",
            step, point["reward_mean"], point["reward_tail"], point["kl"],
            time.perf_counter() - started,
        )

    def _keep_samples(self, trainer: Trainer, step: int, samples: list[ScoredSample]) -> None:
        """The completions as JSONL in the run directory and as a W&B table."""
        if self.run_dir is not None:
            write_samples(self.run_dir, step, samples)
        rows = sample_rows(step, samples)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="eval/samples", columns=list(COLUMNS),
                                 data=[[row[column] for column in COLUMNS] for row in rows],
                                 step=step)

    def _pair_metrics(self, module: LightningModule) -> dict[str, float]:
        device_batches = (
            {key: value.to(module.device) for key, value in batch.items()}
            for batch in self.pair_batches
        )
        # A penalty on input-embedding gradients (WDPO) is part of the held-out loss too,
        # so those objectives evaluate with autograd on; nothing is stepped.
        needs_grad = module.objective.requires_input_embeddings
        with torch.enable_grad() if needs_grad else torch.no_grad():
            pair_metrics = evaluate_pairs(
                lambda batch: module.loss_and_metrics(batch)[1], device_batches, self.num_pairs
            )
        return {f"pairs/{name}": value for name, value in pair_metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"curve": [dict(point) for point in self.curve]}  # the curve so far

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve = [dict(point) for point in state["curve"]]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.curve:  # a resumed run has its curve so far, from before training on
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        every = self.every_n_steps
        if every and progress_step(trainer, pl_module) % every == 0:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._evaluate(trainer, pl_module)
