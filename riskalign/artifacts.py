"""Cached artifacts that are complete or absent: built in a staging directory, then renamed.

A reader trusts a directory only when its marker file exists and every file the
marker lists has the size it records; the marker is written last, inside the
staging directory, so a crash at any point leaves either nothing or a leftover
without a marker, and a file truncated later makes the artifact incomplete; the
next build replaces either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def file_mode() -> int:
    """What open() would give a new file; mkstemp's files are private (0600)."""
    return 0o666 & ~_umask()


def directory_mode() -> int:
    """What mkdir would give a new directory; mkdtemp's are private (0700)."""
    return 0o777 & ~_umask()


def follow_umask(root: Path) -> None:
    """Give `root` and everything under it the modes the umask allows, as `mkdir` and `open`
    would have: mkdtemp (0700) and safetensors (0600) create private files whatever the
    umask, which makes a cache shared on a cluster unreadable to the others."""
    files, directories = file_mode(), directory_mode()
    os.chmod(root, directories)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, directories if path.is_dir() else files)


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary name beside `path`, flush it to disk, then rename: a reader
    (or a crash) never sees half a file, and two writers never share a temporary."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Strict JSON: a NaN or infinity (a KL not measured, a tail with no prompt) is
    written as null, since bare NaN is not JSON and other readers refuse the file."""
    text = json.dumps(finite_or_null(payload), indent=2, default=str, allow_nan=False)
    write_text_atomic(path, text)


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> None:
    """One strict-JSON line per row (NaN and infinities as null), written atomically."""
    lines = (json.dumps(finite_or_null(row), default=str, allow_nan=False) + "\n"
             for row in rows)
    write_text_atomic(path, "".join(lines))


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinite float, at any depth, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    """Push a file written by someone else's code (torch.save) to disk before its marker."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


FILE_SIZES = "_files"  # the marker's record of every file's size, for is_complete


def is_complete(directory: Path, marker: str) -> bool:
    """The marker is there and every file it records has its recorded size (a file
    truncated or removed since makes the artifact incomplete: it is rebuilt)."""
    try:
        recorded = json.loads((directory / marker).read_text()).get(FILE_SIZES, {})
    except (OSError, ValueError, AttributeError):
        return False
    return all((directory / name).is_file() and (directory / name).stat().st_size == size
               for name, size in recorded.items())


def file_sizes(directory: Path) -> dict[str, int]:
    """Every file's size under `directory`: what a marker records for `is_complete`."""
    return {str(path.relative_to(directory)): path.stat().st_size
            for path in sorted(directory.rglob("*")) if path.is_file()}


def staging_directory(target: Path) -> Path:
    """Where `target` is written before `move_into_place`: beside it, and the same path
    in every process of a distributed run (which all take part in the writing)."""
    return target.with_name(f".partial-{target.name}")


def move_into_place(staging: Path, target: Path) -> None:
    """Rename a finished staging directory to `target`, replacing what an interrupted
    attempt left there."""
    follow_umask(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def read_marker(directory: Path, marker: str) -> dict[str, Any]:
    return json.loads((directory / marker).read_text())


def build_atomically(
    directory: Path, marker: str, build: Callable[[Path], dict[str, Any]]
) -> Path:
    """Return `directory`, first running `build(staging)` unless a complete one exists.

    `build` writes the artifact's files into `staging` and returns the info that
    becomes the marker's JSON.
    """
    if is_complete(directory, marker):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".building-{directory.name}-", dir=directory.parent))
    try:
        info = {**(build(staging) or {}), FILE_SIZES: file_sizes(staging)}
        (staging / marker).write_text(json.dumps(info, indent=2, default=str))
        follow_umask(staging)
        if directory.exists() and not is_complete(directory, marker):
            log.warning("Replacing incomplete artifact %s", directory)  # a crashed build's
            shutil.rmtree(directory, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError:
            if not is_complete(directory, marker):
                raise
            # another process (a DDP rank, a sweep job) finished the same build first
            log.info("Artifact %s was built concurrently; keeping that copy", directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
