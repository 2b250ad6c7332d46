"""The first key where two nested configs differ, named for a one-line refusal."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def first_difference(recorded: Any, current: Any, recorded_as: str,
                     skip: Collection[str] = (), path: str = "") -> str | None:
    """'key (<recorded_as>: a, now: b)' for the first key (in sorted order) whose value
    differs, else None; top-level keys in `skip` are not compared."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        for key in sorted(set(recorded) | set(current), key=str):
            if key in skip and not path:
                continue
            inner = first_difference(recorded.get(key), current.get(key), recorded_as,
                                     path=f"{path}.{key}" if path else str(key))
            if inner is not None:
                return inner
        return None
    if recorded != current:
        return f"{path or 'config'} ({recorded_as}: {recorded!r}, now: {current!r})"
    return None
