"""Metric loggers of a run: always a CSV file, plus a W&B run unless disabled."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf


def build_loggers(cfg: DictConfig, run_dir: Path, group: str | None, name: str) -> list[Logger]:
    """`run_dir/metrics.csv`, and one W&B run per job (offline by default) in `group`."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    settings = cfg.logger.wandb
    if settings.mode != "disabled":
        loggers.append(
            WandbLogger(
                project=settings.project,
                entity=settings.entity,
                group=group,
                name=name,
                tags=list(settings.tags),
                mode=settings.mode,
                save_dir=str(run_dir),
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close the W&B run so that the next job of a sweep starts its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


CURVE_COLUMNS = ("step", "kl", "reward_mean", "reward_tail", "reward_below_threshold")


def log_curve(loggers: list[Logger], curve: list[dict[str, float]]) -> None:
    """The run's alignment-vs-drift points as a W&B table and a line plot (KL on x)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            table = wandb.Table(
                columns=list(CURVE_COLUMNS),
                data=[[point[column] for column in CURVE_COLUMNS] for point in curve],
            )
            logger.experiment.log(
                {
                    "curve/points": table,
                    "curve/alignment_vs_drift": wandb.plot.line(
                        table, "kl", "reward_mean", title="reward vs KL(π_θ‖π_ref)"
                    ),
                }
            )
