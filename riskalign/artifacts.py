"""Cached artifacts that are complete or absent: built in a staging directory, then renamed.

A reader trusts a directory only when its marker file exists; the marker is written
last, inside the staging directory, so a crash at any point leaves either nothing
or a leftover without a marker that the next build replaces.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a temporary name and rename, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=str, allow_nan=True))
    os.replace(temporary, path)


def is_complete(directory: Path, marker: str) -> bool:
    return (directory / marker).is_file()


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
        info = build(staging)
        (staging / marker).write_text(json.dumps(info, indent=2, default=str))
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
