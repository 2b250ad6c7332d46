"""Which checkpoint a run resumes from (conf: `resume`), checked before anything loads.

    resume=null                 start a new run
    resume=<run dir>            continue that run from its newest complete checkpoint
    resume=<run dir>/checkpoints/step-00000040   ... from that checkpoint
    resume=auto                 continue the newest unfinished run under
                                paths.output_root with this same config; start a
                                new one if there is none (a requeued job's command)

A resumed run writes into the run directory it continues, so that directory ends
up with the one complete metrics.csv, curve, summary and policy. The config must
be the one the checkpoint was written with, apart from the keys below, which do
not change what is computed.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from riskalign.config.differences import first_difference
from riskalign.errors import ConfigError
from riskalign.runs.locks import LOCK_FILE, is_first_process, is_locked, lock_holder
from riskalign.training.checkpoints import (
    CHECKPOINTS_DIR,
    MARKER,
    METRICS_FILE,
    CorruptCheckpoint,
    SavedCheckpoint,
    complete_checkpoints,
    read_checkpoint,
)

log = logging.getLogger(__name__)

# Keys a resumed run may change: where files go, how it logs, how often it checkpoints.
FREE_KEYS = ("resume", "paths", "logger", "checkpoint", "guard")
SUMMARY_FILE = "summary.json"
SKIPPED_WHEN_SEARCHING = {"wandb", "policy", ".hydra", CHECKPOINTS_DIR}


def find_resume_point(cfg: DictConfig) -> SavedCheckpoint | None:
    """The checkpoint `cfg.resume` names, or None for a new run; refuses in one line a
    resume target without a complete checkpoint or written with another config."""
    target = cfg.resume
    if target is None:
        return None
    current = OmegaConf.to_container(cfg, resolve=True)
    if target == "auto":
        saved = _newest_unfinished_match(Path(cfg.paths.output_root), current)
        if saved is None:
            log.info("resume=auto: no unfinished run with this config under %s: starting a "
                     "new run", cfg.paths.output_root)
        return saved
    path = Path(str(target)).expanduser()
    if not path.is_dir():
        raise ConfigError(f"resume={target!r} is not a directory: give a run directory, one "
                          "of its checkpoints/step-N, or auto")
    if (path / SUMMARY_FILE).is_file():
        raise ConfigError(f"resume={target!r} is a finished run ({SUMMARY_FILE} written): "
                          "nothing to resume")
    run_dir = path.parent.parent if (path / MARKER).is_file() else path
    if _written_by_another_process(run_dir):
        raise ConfigError(f"resume={target!r} is being written by {lock_holder(run_dir)}: one "
                          "process writes a run at a time; wait for it to finish or stop it")
    saved = _newest_intact([read_checkpoint(path)] if (path / MARKER).is_file()
                           else complete_checkpoints(path))
    if saved is None:
        raise ConfigError(f"resume={target!r} has no complete checkpoint (checkpoints/step-N "
                          f"with its {MARKER}): nothing to resume; checkpoints are written "
                          "every checkpoint.every_n_steps steps")
    difference = first_difference(saved.config, current, "checkpoint", FREE_KEYS)
    if difference is not None:
        raise ConfigError(f"resume={target!r} was written with another config: {difference}; "
                          "resume with the run's own overrides")
    return saved


def _newest_intact(saved: list[SavedCheckpoint | None]) -> SavedCheckpoint | None:
    """The newest checkpoint whose files match their hashes; a corrupt one is passed over
    with a warning (it was complete once: the disk or someone changed it since)."""
    for candidate in reversed([s for s in saved if s is not None]):
        try:
            candidate.verify()
            return candidate
        except CorruptCheckpoint as error:
            log.warning("resume: skipping checkpoint %s: %s", candidate.directory, error)
    return None


def _newest_unfinished_match(root: Path, current: dict[str, Any]) -> SavedCheckpoint | None:
    candidates = []
    for run_dir in _run_dirs_with_checkpoints(root):
        if (run_dir / SUMMARY_FILE).is_file():
            continue  # finished: nothing to resume
        if _written_by_another_process(run_dir):
            log.info("resume=auto: passing over %s, which %s is writing", run_dir,
                     lock_holder(run_dir))
            continue
        saved = complete_checkpoints(run_dir)
        if saved and first_difference(saved[-1].config, current, "checkpoint", FREE_KEYS) is None:
            candidates.append(saved)
    candidates.sort(key=lambda run: (run[-1].step, run[-1].directory.stat().st_mtime))
    for run in reversed(candidates):
        intact = _newest_intact(run)
        if intact is not None:
            return intact
    return None


def _written_by_another_process(run_dir: Path) -> bool:
    """Another process holds the run's lock. The other ranks of a distributed run, which
    write the run with rank 0, do not count it."""
    return is_first_process() and is_locked(run_dir / LOCK_FILE)


def _run_dirs_with_checkpoints(root: Path) -> list[Path]:
    """Directories under `root` holding checkpoints/, not descending into run contents."""
    found = []
    for directory, subdirectories, _ in os.walk(root):
        if CHECKPOINTS_DIR in subdirectories:
            found.append(Path(directory))
        subdirectories[:] = [name for name in subdirectories
                             if name not in SKIPPED_WHEN_SEARCHING]
    return found


def saved_metrics_rows(saved: SavedCheckpoint) -> list[dict[str, str]]:
    """The rows metrics.csv had when the checkpoint was written."""
    path = saved.directory / METRICS_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
