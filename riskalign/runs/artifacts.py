"""Cached artifacts that are complete or absent: built in a staging directory, then renamed.

A reader trusts a directory only when its marker file exists and every file the
marker lists has the size and SHA-256 it records; the marker is written last,
inside the staging directory, so a crash at any point leaves either nothing or a
leftover without a marker, and a file truncated or changed later (same size
included) makes the artifact incomplete; the next build replaces either. A
staging directory is locked while its build runs: the next build of the same
artifact removes the ones whose builder has died.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from riskalign.runs.locks import is_locked, try_lock

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


STAGING_GRACE_SECONDS = 10.0
# A marker from before SHA-256 records: a model directory with one is read with a warning.
NO_HASHES = "records no SHA-256 (written by an older riskalign)"
FILES = "_files"  # the marker's record of every file: {name: {"bytes": n, "sha256": hex}}

# (directory, marker) -> the files' (name, size, mtime) when their hashes last matched in
# this process: a reader asking again (every rank, every build check) hashes only what
# changed since.
_verified: dict[tuple[str, str], tuple] = {}


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """Every file under `directory` with its size and SHA-256: what a marker records."""
    return {str(path.relative_to(directory)): {"bytes": path.stat().st_size,
                                               "sha256": file_sha256(path)}
            for path in sorted(directory.rglob("*")) if path.is_file()}


def artifact_problem(directory: Path, marker: str, hashes: bool = True) -> str | None:
    """Why `directory` cannot be trusted (no marker, a file missing, cut short or changed),
    or None when every file the marker records has its size and SHA-256 (with
    `hashes=False` its size only: a listing's cheap check, before a reader verifies)."""
    try:
        recorded = json.loads((directory / marker).read_text())[FILES]
    except FileNotFoundError:
        return f"it has no {marker} (not finished, or not written by riskalign)"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {marker} cannot be read ({type(error).__name__})"
    if not isinstance(recorded, dict) or not all(
            isinstance(entry, dict) and {"bytes", "sha256"} <= set(entry)
            for entry in recorded.values()):
        return f"its {marker} {NO_HASHES}"
    signature = []
    for name, entry in sorted(recorded.items()):
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        stat = path.stat()
        if stat.st_size != entry["bytes"]:
            return f"{name} has {stat.st_size} bytes where {marker} records {entry['bytes']}"
        signature.append((name, stat.st_size, stat.st_mtime_ns))
    key = (str(directory.resolve()), marker)
    if not hashes or _verified.get(key) == tuple(signature):
        return None
    for name, entry in sorted(recorded.items()):
        if file_sha256(directory / name) != entry["sha256"]:
            return f"{name} does not match the SHA-256 {marker} records (changed on disk)"
    _verified[key] = tuple(signature)
    return None


def is_complete(directory: Path, marker: str) -> bool:
    """The marker is there and every file it records has its size and SHA-256 (a file
    removed, cut short or changed since makes the artifact incomplete: it is rebuilt)."""
    return artifact_problem(directory, marker) is None


def write_marker(directory: Path, marker: str, info: dict[str, Any]) -> None:
    """Record every file of `directory` (sizes, SHA-256) with `info`: the last file written."""
    write_json_atomic(directory / marker, {**info, FILES: file_records(directory)})


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
    problem = artifact_problem(directory, marker)
    if problem is None:
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".building-{directory.name}-"
    remove_abandoned_staging(directory.parent, prefix)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=directory.parent))
    lock = try_lock(staging)  # held while building: tells a live build from a killed one
    try:
        write_marker(staging, marker, build(staging) or {})
        follow_umask(staging)
        if directory.exists() and not is_complete(directory, marker):
            log.warning("Replacing %s: %s", directory, problem)  # a crashed build's, or damaged
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
        if lock is not None:
            lock.release()
    return directory


def remove_abandoned_staging(parent: Path, prefix: str) -> None:
    """Remove staging directories `prefix*` under `parent` whose build is no longer
    running (killed: nothing holds their lock), keeping those still being built. One
    only just created may not hold its lock yet: it is left alone for a few seconds."""
    for leftover in parent.glob(f"{glob.escape(prefix)}*"):
        if (leftover.is_dir() and time.time() - leftover.stat().st_mtime > STAGING_GRACE_SECONDS
                and not is_locked(leftover)):
            log.info("Removing %s, left by an interrupted build", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


# riskalign's own markers: they record build times, which say nothing of the content
MARKER_NAMES = frozenset({"complete.json", "converted.json", "merged.json"})


def content_digest(path: str | Path) -> str:
    """SHA-256 of what a file or a directory holds (each file's name and content, markers
    left out), wherever it lies: the same model or data in another clone has the same
    digest, a model changed by one byte has another."""
    path = Path(path).expanduser()
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.name not in MARKER_NAMES:
            digest.update(f"{file.relative_to(path)}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


POLICY_MARKER = "complete.json"  # in a run's policy/: every file's size and SHA-256


def check_policy(path: str | Path, key: str) -> None:
    """Refuse, in one line, a model directory riskalign wrote (a run's policy/, a merge, a
    GGUF conversion) whose marker does not match its files: a weight file changed or cut
    short since. A model directory without such a marker (an HF checkpoint from elsewhere,
    or a policy from before markers) is read as it is."""
    from riskalign.errors import ConfigError

    directory = Path(path).expanduser()
    for marker in sorted(MARKER_NAMES):
        if (directory / marker).is_file():
            problem = artifact_problem(directory, marker)
            if problem is not None and problem.endswith(NO_HASHES):
                log.warning("%s=%s is not verified: %s", key, path, problem)
                return
            if problem is not None:
                raise ConfigError(f"{key}={str(path)!r} is damaged: {problem}; retrain it or "
                                  "restore the directory from a copy")
            return
