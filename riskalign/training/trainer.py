"""The Lightning trainer of a run: its callbacks and loggers, the fit (and the two ways it
stops on its own), the trained policy written atomically, and the run's summary."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from riskalign.errors import NumericalGuardError, Preempted

# Set in this process by Lightning's DDP launcher; a later job that still saw them would
# take its processes for launched already and wait forever for peers that never start.
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass
class Fitting:
    """A trainer and the callbacks and loggers the run reads back after the fit."""

    trainer: Any
    loggers: list
    checkpoints: Any  # PeriodicCheckpoint, or None
    step_timer: Any


def build_trainer(cfg: DictConfig, run, run_dir: Path, identity, resume_from) -> Fitting:
    import lightning

    from riskalign.training.checkpoints import PeriodicCheckpoint, StagedCheckpointIO
    from riskalign.training.guard import NumericalGuard
    from riskalign.training.loggers import build_loggers, restore_csv_rows
    from riskalign.training.progress import StepProgressBar
    from riskalign.training.random_state import RandomState
    from riskalign.training.resume import saved_metrics_rows
    from riskalign.training.step_timer import StepTimer

    kwargs = dict(run.trainer_kwargs)
    guard = NumericalGuard(cfg.guard.max_consecutive)
    loggers = build_loggers(cfg, run_dir, identity)
    if resume_from is not None:
        restore_csv_rows(loggers, saved_metrics_rows(resume_from))
    checkpoints = None
    if cfg.checkpoint.every_n_steps and kwargs.get("enable_checkpointing", True):
        checkpoints = PeriodicCheckpoint(run_dir, cfg.checkpoint.every_n_steps,
                                         cfg.checkpoint.keep_last,
                                         OmegaConf.to_container(cfg, resolve=True), guard)
    kwargs["enable_checkpointing"] = checkpoints is not None
    step_timer = StepTimer()
    trainer = lightning.Trainer(
        **kwargs,
        default_root_dir=str(run_dir),
        logger=loggers,
        # the timer first: its batch-end hook runs before an evaluation does; Lightning
        # runs checkpoints last, after that step's evaluation
        callbacks=[step_timer, guard, run.evaluation, RandomState(), StepProgressBar()]
        + ([checkpoints] if checkpoints else []) + build_callbacks(cfg),
        plugins=[StagedCheckpointIO()] if checkpoints else None,
    )
    return Fitting(trainer, loggers, checkpoints, step_timer)


def fit(fitting: Fitting, run, run_dir: Path, resume_from) -> None:
    """trainer.fit; a guard stop or SIGTERM is re-raised naming the checkpoint to go on from."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from riskalign.modules.common import progress_step

    try:
        fitting.trainer.fit(run.module, datamodule=run.datamodule,
                            ckpt_path=resume_from.state_file if resume_from else None,
                            weights_only=True)
    except (NumericalGuardError, SIGTERMException) as error:
        kept = (fitting.checkpoints.last_saved if fitting.checkpoints else None) or resume_from
        where = kept.directory if kept else "none (none written yet)"
        if isinstance(error, NumericalGuardError):
            raise NumericalGuardError(f"{error}; last good checkpoint: {where}") from None
        step = progress_step(fitting.trainer, run.module)
        raise Preempted(f"SIGTERM at step {step}; checkpoint: {where}; continue with "
                        f"resume=auto or resume={run_dir}") from None


def save_policy(trainer, module, tokenizer, directory: Path) -> None:
    """The trained policy and its tokenizer, written beside `directory` and renamed into
    place: a crash never leaves a half-written policy that evaluation would read."""
    import shutil

    from riskalign.runs.artifacts import (
        POLICY_MARKER,
        move_into_place,
        staging_directory,
        write_marker,
    )

    staging = staging_directory(directory)
    if trainer.is_global_zero:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.strategy.barrier("riskalign-policy-staging")
    module.save_policy(staging)  # every process: FSDP gathers the weights
    if trainer.is_global_zero:
        tokenizer.save_pretrained(staging)
        # last: evaluate, merge and model.init_from check every file against it
        write_marker(staging, POLICY_MARKER, {"step": trainer.global_step})
        move_into_place(staging, directory)


def run_summary(cfg: DictConfig, run, fitting: Fitting, identity, run_dir: Path,
                resume_from, started: float, kind: str) -> dict[str, Any]:
    """What summary.json records: the run, its timing, and its alignment-vs-drift curve."""
    from riskalign.modules.common import progress_step

    curve = run.evaluation.curve
    checkpoints = fitting.checkpoints
    return {
        "objective": cfg.objective.name,
        "label": identity.label,
        "arm": identity.arm,
        "seed": cfg.seed,
        "swept": identity.swept,
        "wandb_group": identity.group,
        "run_dir": str(run_dir),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "steps": progress_step(fitting.trainer, run.module),
        "resumed_from": str(resume_from.directory) if resume_from else None,
        "checkpoints": checkpoints.summary() if checkpoints else None,
        "timing": fitting.step_timer.summary(),
        "reference_cache": run.reference_cache,
        "cuda_peak_gb": cuda_peak_gb(),
        "reference": curve[0],
        "final": curve[-1],
        "curve": curve,
        "world": str(run.inputs.world.root) if run.inputs.world else None,
        "model_source": run.inputs.source,
        "data_kind": kind,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """The user's callbacks (conf/callbacks, checked by check_config), in the config's order."""
    from hydra.utils import instantiate

    return [instantiate(entry) for entry in (cfg.get("callbacks") or {}).values()]


def cuda_peak_gb() -> float | None:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def launch_environment() -> dict[str, str | None]:
    """The launch variables as they are before a fit, for `leave_process_group`."""
    return {name: os.environ.get(name) for name in DISTRIBUTED_ENV}


def leave_process_group(environment: dict[str, str | None]) -> None:
    """End a DDP/FSDP run's process group and put back the launch variables as they were,
    so that the next job of a sweep running in this process launches its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
