"""The directory a run writes: claimed by one process at a time, and, when a run resumes,
the one it continues (its log goes on there)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from riskalign.errors import ConfigError

log = logging.getLogger(__name__)


def claim_run_directory(run_dir: Path):
    """This process's exclusive lock on the run directory it writes (None on the other
    ranks of a distributed run, which write there with rank 0); refused in one line when
    another process holds it: two writers would mix their metrics and checkpoints."""
    from riskalign.runs.locks import is_first_process, lock_holder, lock_run_directory

    if not is_first_process():
        return None
    lock = lock_run_directory(run_dir)
    if lock is None:
        raise ConfigError(f"run directory {run_dir} is being written by {lock_holder(run_dir)}: "
                          "one process writes a run at a time; wait for it to finish or stop it")
    return lock


def continue_log_in(run_dir: Path, opened: Path) -> None:
    """A resumed run goes on in the run it continues, but Hydra has already opened a new
    directory for this process (`.hydra/`, `train.log`). The log goes on in the continued
    run's train.log (with what this process logged so far), the new `.hydra/` is kept as
    `.hydra/resumed-<its name>/` there, and the emptied directory is removed."""
    if run_dir.resolve() == opened.resolve() or not _single_run():
        return  # a sweep's job directory is Hydra's bookkeeping: left as it is
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and \
                Path(handler.baseFilename).parent.resolve() == opened.resolve():
            _move_log(handler, run_dir / "train.log")
    if (opened / ".hydra").is_dir():
        shutil.move(opened / ".hydra", run_dir / ".hydra" / f"resumed-{opened.name}")
    try:
        opened.rmdir()
    except OSError:
        log.warning("kept %s: it holds more than Hydra's files", opened)


def _move_log(handler: logging.FileHandler, continued: Path) -> None:
    handler.close()
    with continued.open("a") as file:
        file.write(Path(handler.baseFilename).read_text())
    Path(handler.baseFilename).unlink()
    handler.baseFilename = str(continued.resolve())
    handler.mode = "a"  # reopened at the next record


def _single_run() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN
