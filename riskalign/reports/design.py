"""What a sweep varied, read from its jobs' overrides: the swept keys, the strength key
annotated on points, and the keys that split runs into series (one colour each).

`seed` is the replicate key: runs that differ only in it are aggregated, never split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from riskalign.reports.runs import Run

SEED = "seed"
DEFAULT_STRENGTH = "objective.beta"
LABEL = "label"  # pseudo-key of --group-by: the run's label
NO_STRENGTH = "none"


@dataclass(frozen=True)
class Design:
    swept: list[str]  # keys whose value differs across jobs (or that some jobs lack)
    strength: str | None
    series_keys: list[str]  # LABEL and/or override keys


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Keys set differently (or not at all) in some job; constant ones say nothing."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.overrides if key not in keys]
    return [key for key in keys
            if len({run.overrides.get(key) for run in runs}) > 1]


def is_composition(key: str) -> bool:
    """Keys the run label already reflects (objective, objective.*, an arm or label tag)."""
    return key in ("objective", "arm", LABEL) or key.startswith("objective.")


def detect_design(runs: Sequence[Run], strength: str | None = None,
                  group_by: Sequence[str] | None = None) -> Design:
    swept = swept_keys(runs)
    if strength is None:
        strength = DEFAULT_STRENGTH if DEFAULT_STRENGTH in swept else None
    elif strength.lower() == NO_STRENGTH:
        strength = None
    if group_by:
        return Design(swept, strength, list(group_by))
    extra = [key for key in swept if key not in (SEED, strength)
             and (not is_composition(key) or _varies_within_a_label(runs, key))]
    return Design(swept, strength, [LABEL, *extra])


def _varies_within_a_label(runs: Sequence[Run], key: str) -> bool:
    """An objective key the label does not show (β when it is not the strength, say) must
    still split series, or runs that differ in it would be averaged together."""
    values: dict[str, set[str | None]] = {}
    for run in runs:
        values.setdefault(run.label, set()).add(run.overrides.get(key))
    return any(len(seen) > 1 for seen in values.values())


def override_value(run: Run, key: str) -> str | None:
    """The job's override of `key`, else its resolved config's value there, else None."""
    if key in run.overrides:
        return run.overrides[key]
    node: object = run.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, (dict, list)) else str(node)


def series_name(run: Run, design: Design) -> str:
    """`label`, or `label (key=value, ...)`, or `key=value, ...` without the label."""
    pairs = [f"{key}={override_value(run, key)}" for key in design.series_keys if key != LABEL]
    if LABEL not in design.series_keys:
        return ", ".join(pairs)
    return f"{run.label} ({', '.join(pairs)})" if pairs else run.label


def strength_value(run: Run, design: Design) -> str | None:
    return override_value(run, design.strength) if design.strength else None


def strength_order(value: str | None) -> tuple[int, float, str]:
    """Numeric strengths in numeric order, then the rest by name, absent last."""
    if value is None:
        return (2, 0.0, "")
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)
