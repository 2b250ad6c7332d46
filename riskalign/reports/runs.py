"""A sweep's jobs, read once: the valid runs, and every job left out with its reason.

A job directory is any directory below the sweep holding a `summary.json` or a Hydra
`.hydra/overrides.yaml`. A job the sweep recorded in `failures.json`, or whose summary
is missing, truncated or incomplete, is skipped, never raised: a report over the jobs
that finished is still worth having.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from riskalign.evaluation.samples import read_samples, samples_path
from riskalign.reports.labels import run_label

SUMMARY, OVERRIDES, FAILURES = "summary.json", ".hydra/overrides.yaml", "failures.json"
REQUIRED_KEYS = {"final": dict, "curve": list, "config": dict}


@dataclass
class PromptValues:
    """One run's per-prompt reward and sequence KL at its final step, in prompt order."""

    rewards: np.ndarray  # NaN where the sample's reward was not finite
    kls: np.ndarray | None  # None without a reference


@dataclass
class Run:
    run: str  # the job directory, relative to the sweep
    label: str
    seed: int | None
    overrides: dict[str, str]
    final: dict[str, Any]
    curve: list[dict[str, Any]]
    steps: int | None
    wall_seconds: float | None
    tail_fraction: float | None
    config: dict[str, Any]
    wandb_group: str | None
    prompts: PromptValues | None


@dataclass
class Skipped:
    job: str
    reason: str


@dataclass
class Sweep:
    directory: Path
    runs: list[Run]
    skipped: list[Skipped]
    notes: list[str] = field(default_factory=list)  # trouble that cost a run nothing but detail


class InvalidSummary(ValueError):
    pass


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`["objective=radpo", "+arm=cvar095"]` -> {"objective": "radpo", "arm": "cvar095"}.

    Hydra's `+`/`++` (add, force-add) only say how the key got there, so they go."""
    parsed = {}
    for item in items:
        key, equals, value = str(item).partition("=")
        if equals:
            parsed[key.lstrip("+")] = value
    return parsed


def load_sweep(directory: Path, required_metrics: Iterable[str] = ()) -> Sweep:
    sweep = Sweep(directory, [], [])
    failed = _failures(directory, sweep)
    for job_dir in _job_dirs(directory):
        name = _relative(job_dir, directory)
        if name in failed:
            continue
        try:
            sweep.runs.append(_load_run(job_dir, name, tuple(required_metrics), sweep.notes))
        except InvalidSummary as error:
            sweep.skipped.append(Skipped(name, str(error)))
    return sweep


def _job_dirs(directory: Path) -> list[Path]:
    found = {path.parent for path in directory.glob(f"**/{SUMMARY}")}
    found |= {path.parent.parent for path in directory.glob(f"**/{OVERRIDES}")}
    # W&B's run folders hold files of their own; they are never jobs
    found = {path for path in found if "wandb" not in path.relative_to(directory).parts}
    return sorted(found, key=lambda path: _natural(_relative(path, directory)))


def _natural(text: str) -> list[Any]:
    """Job 10 after job 9."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", text)]


def _relative(path: Path, directory: Path) -> str:
    try:
        return str(path.resolve().relative_to(directory.resolve())) or "."
    except ValueError:
        return str(path)


def _failures(directory: Path, sweep: Sweep) -> set[str]:
    """Record every failures.json entry as skipped; return their job directories."""
    path = directory / FAILURES
    if not path.is_file():
        return set()
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, list):
            raise ValueError("not a list")
    except (OSError, ValueError) as error:
        sweep.notes.append(f"{FAILURES} could not be read ({error}); its jobs are not listed")
        return set()
    failed = set()
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {"error": str(entry)}
        job_dir = entry.get("job_dir")
        name = _relative(Path(job_dir), directory) if job_dir else f"job {entry.get('job', '?')}"
        failed.add(name)
        overrides = " ".join(str(item) for item in entry.get("overrides") or [])
        where = f" ({overrides})" if overrides else ""
        error = str(entry.get("error", "no error recorded")).strip().splitlines()
        sweep.skipped.append(Skipped(name, f"failed{where}: {error[0] if error else '?'}"))
    return failed


def _read_summary(job_dir: Path) -> dict[str, Any]:
    path = job_dir / SUMMARY
    if not path.is_file():
        raise InvalidSummary(f"no {SUMMARY} (still running, or killed?)")
    try:
        summary = json.loads(path.read_text())
    except UnicodeDecodeError as error:
        raise InvalidSummary(f"{SUMMARY} is not text ({error.reason})") from None
    except ValueError as error:
        raise InvalidSummary(f"{SUMMARY} is not valid JSON (truncated?): {error}") from None
    except OSError as error:
        raise InvalidSummary(f"{SUMMARY} could not be read: {error}") from None
    if not isinstance(summary, dict):
        raise InvalidSummary(f"{SUMMARY} is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in summary]
    if missing:
        raise InvalidSummary(f"{SUMMARY} is incomplete: no {', '.join(map(repr, missing))}")
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(summary[key], kind):
            raise InvalidSummary(f"{SUMMARY} {key!r} is not a {kind.__name__}")
    return summary


def _load_run(job_dir: Path, name: str, required_metrics: tuple[str, ...],
              notes: list[str]) -> Run:
    summary = _read_summary(job_dir)
    final, config = summary["final"], summary["config"]
    absent = [metric for metric in required_metrics if not _is_number(final.get(metric))]
    if absent:
        raise InvalidSummary(f"{SUMMARY} final has no number for {', '.join(absent)}")
    steps = summary.get("steps", final.get("step"))
    wandb = ((config.get("logger") or {}).get("wandb") or {})
    return Run(
        run=name,
        label=str(summary.get("label") or run_label(config)),
        seed=_integer(config.get("seed")),
        overrides=_overrides(job_dir),
        final=final,
        curve=[point for point in summary["curve"] if isinstance(point, dict)],
        steps=_integer(steps),
        wall_seconds=summary.get("wall_seconds"),
        tail_fraction=(config.get("eval") or {}).get("tail_fraction"),
        config=config,
        wandb_group=summary.get("wandb_group") or wandb.get("group"),
        prompts=_prompt_values(job_dir, name, _integer(final.get("step", steps)), notes),
    )


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / OVERRIDES
    try:
        items = yaml.safe_load(path.read_text()) if path.is_file() else []
    except (OSError, yaml.YAMLError):
        items = []
    return parse_overrides(items if isinstance(items, list) else [])


def _prompt_values(job_dir: Path, name: str, step: int | None,
                   notes: list[str]) -> PromptValues | None:
    """The final step's samples file, or None (older runs have none: seeds-only intervals)."""
    if step is None:
        return None
    path = samples_path(job_dir, step)
    if not path.is_file():
        return None
    try:
        rows = sorted(read_samples(path), key=lambda row: int(row["index"]))
        rewards = np.array([_float(row["reward"]) for row in rows], dtype=float)
        kls = np.array([_float(row.get("kl")) for row in rows], dtype=float)
    except (OSError, ValueError, KeyError, TypeError) as error:
        notes.append(f"{name}: {path.name} could not be read ({error}); its run counts "
                     "through summary.json only")
        return None
    if not rows or [int(row["index"]) for row in rows] != list(range(len(rows))):
        notes.append(f"{name}: {path.name} does not hold prompts 0..n-1 once each; its run "
                     "counts through summary.json only")
        return None
    return PromptValues(rewards, None if np.isnan(kls).all() else kls)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
