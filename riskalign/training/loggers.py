"""Metric loggers of a run: always a CSV file, plus a W&B run unless disabled; and the
console's share of Lightning's log lines (once each, no advertisements)."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from riskalign.runs.identity import RunIdentity, run_tags, wandb_run_id

log = logging.getLogger(__name__)


def lightning_lines_once() -> None:
    """Lightning's log lines, once each and only through the root logger's handlers.

    `import lightning` gives the "lightning" logger a console handler of its own ("INFO:
    ...", on stderr) and still lets its records propagate to the root logger, where
    Hydra's console and train.log handlers print them again. Where the root logger has
    handlers (always, under Hydra) Lightning's own goes: its lines then look like every
    other and reach train.log. Lightning's "💡 Tip: ... try installing litlogger" lines
    advertise a product; they are dropped.
    """
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in tips.filters):
        tips.addFilter(_NoTips())


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def build_loggers(cfg: DictConfig, run_dir: Path, identity: RunIdentity) -> list[Logger]:
    """`run_dir/metrics.csv`, and one W&B run per job (offline by default) in the
    identity's group, named and tagged by it (logger.wandb.name/tags add to that).

    The W&B run id is kept in the run directory, so a resumed run continues its W&B run.
    Logging never stops training: W&B online without credentials, or one that cannot
    start (no network), logs offline instead and says so once.
    """
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    settings = cfg.logger.wandb
    if settings.mode == "disabled":
        return loggers
    mode = settings.mode
    if mode == "online" and not _wandb_credentials():
        log.warning("W&B: logger.wandb.mode=online but no API key (WANDB_API_KEY or `wandb "
                    "login`): logging offline under %s; `wandb sync` uploads it later",
                    run_dir / "wandb")
        mode = "offline"

    def wandb_logger(mode: str) -> WandbLogger:
        logger = WandbLogger(project=settings.project, entity=settings.entity,
                             group=identity.group,
                             name=settings.name or identity.name(cfg.seed),
                             tags=run_tags(cfg, identity, settings.tags), job_type="train",
                             id=wandb_run_id(run_dir), resume="allow", mode=mode,
                             save_dir=str(run_dir),
                             config=OmegaConf.to_container(cfg, resolve=True))
        # Lightning always passes wandb.init `anonymous` (None by default), and wandb warns
        # at any value that the setting has no effect: leave it out.
        logger._wandb_init.pop("anonymous", None)
        return logger

    logger = wandb_logger(mode)
    if mode == "online":
        try:
            logger.experiment  # noqa: B018  (starts the run now, where a failure can be caught)
        except Exception as error:  # wandb raises several types for network and auth trouble
            log.warning("W&B: the online run could not start (%s): logging offline under %s",
                        str(error).splitlines()[0] if str(error) else type(error).__name__,
                        run_dir / "wandb")
            logger = wandb_logger("offline")
    loggers.append(logger)
    return loggers


def restore_csv_rows(loggers: list[Logger], rows: list[dict[str, str]]) -> None:
    """Start a resumed run's metrics.csv with the rows it had at its checkpoint; the
    rows the interrupted attempt logged after it are dropped, as they are logged again."""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            writer = logger.experiment  # a new writer removes the file the attempt left
            writer.metrics = [dict(row) for row in rows]
            writer.save()


def _wandb_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


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
