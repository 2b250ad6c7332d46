"""Exclusive locks on paths, held by a process for as long as it writes there.

`flock` locks belong to an open file: the kernel releases them when the process
exits, however it exits (SIGKILL included), so a lock can never be left behind by
a crash. That is what tells a run directory or a staging directory still being
written from one an interrupted process abandoned.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"  # inside a locked run directory: who holds it


class PathLock:
    """An exclusive lock on a directory (its own inode) or a file, released by `release`
    or when this process ends."""

    def __init__(self, descriptor: int, path: Path):
        self._descriptor: int | None = descriptor
        self.path = path

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the file releases its flock
            self._descriptor = None

    def __enter__(self) -> PathLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def try_lock(path: Path) -> PathLock | None:
    """Lock `path` (a directory, or a file created if absent) without waiting; None when
    another process holds it."""
    flags = os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT
    descriptor = os.open(path, flags, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return PathLock(descriptor, path)


def is_locked(path: Path) -> bool:
    """Whether another process holds a lock on `path` now."""
    try:
        lock = try_lock(path)
    except FileNotFoundError:
        return False
    if lock is None:
        return True
    lock.release()
    return False


def lock_run_directory(run_dir: Path) -> PathLock | None:
    """Claim a run directory for writing: None when another process writes it. The lock
    file records the holder (`pid host`) for the refusal's message."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = try_lock(run_dir / LOCK_FILE)
    if lock is not None:
        (run_dir / LOCK_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    return lock


def lock_holder(run_dir: Path) -> str:
    """'pid N on HOST' from a run directory's lock file, as well as it can be read."""
    try:
        pid, host = (run_dir / LOCK_FILE).read_text().split()[:2]
    except (OSError, ValueError):
        return "another process"
    return f"pid {pid} on {host}"


def is_first_process() -> bool:
    """Rank 0 of a distributed run (or a run of one process): the one that writes the run
    directory. The other ranks set one of these variables before they start."""
    return all(os.environ.get(name, "0") == "0"
               for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
