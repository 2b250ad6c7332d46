"""Runs grouped by (series, strength) and summarised over seeds: a mean and a 95 %
bootstrap interval per metric, and paired differences against a baseline series.

reward_mean, reward_tail and kl come from the per-prompt samples of the final step when
every run of the group has them (bootstrap over prompts and seeds); any other metric, and
all of them for a group with a run that has no samples file, from summary.json's final
values (bootstrap over seeds only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from riskalign.reports import bootstrap
from riskalign.reports.design import Design, series_name, strength_order, strength_value
from riskalign.reports.runs import Run

# Below this many seeds an interval resampled over seeds alone is not evidence: with n
# seeds the bootstrap's interval is about their range, and the best two-sided sign test
# (every seed agreeing) has p = 2^(1-n), above 5 % until n = 6.
MIN_SEEDS_TO_TEST = 6


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float  # NaN: nothing to resample (one seed, no per-prompt samples)
    hi: float
    testable: bool = True  # False: resampled over fewer than MIN_SEEDS_TO_TEST seeds only

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (for a difference: the two series differ) and rests on
        enough to say so."""
        return (self.testable and math.isfinite(self.lo) and math.isfinite(self.hi)
                and (self.lo > 0 or self.hi < 0))


@dataclass
class Aggregate:
    series: str
    strength: str | None
    runs: list[Run]  # in seed order
    metrics: dict[str, Estimate]
    over_prompts: bool  # reward_mean/tail/kl resampled over prompts as well as seeds

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]


@dataclass
class Difference:
    series: str
    baseline: str
    strength: str | None
    seeds: list[int | None]  # the seeds both series ran, paired by value
    metrics: dict[str, Estimate]  # series − baseline
    over_prompts: bool


def metric_names(runs: Sequence[Run]) -> list[str]:
    """Every numeric final metric, the three of the frontier first."""
    names = list(bootstrap.PROMPT_METRICS)
    for run in runs:
        names += [key for key, value in run.final.items() if key not in names and key != "step"
                  and isinstance(value, (int, float)) and not isinstance(value, bool)]
    return names


def group_runs(runs: Sequence[Run], design: Design) -> dict[tuple[str, str | None], list[Run]]:
    """Runs by (series, strength): series in order of first appearance, strengths ascending."""
    groups: dict[tuple[str, str | None], list[Run]] = {}
    for run in runs:
        groups.setdefault((series_name(run, design), strength_value(run, design)), []).append(run)
    series = list(dict.fromkeys(name for name, _ in groups))
    ordered = sorted(groups, key=lambda key: (series.index(key[0]), strength_order(key[1])))
    return {key: sorted(groups[key], key=_seed_order) for key in ordered}


def aggregate(series: str, strength: str | None, runs: Sequence[Run], metrics: Sequence[str],
              replicates: int = bootstrap.REPLICATES) -> Aggregate:
    runs = sorted(runs, key=_seed_order)
    stack = _PromptStack.of(runs)
    estimates = _estimate(
        lambda draws: _statistics(runs, metrics, stack, draws),
        len(runs), stack, replicates, f"{series}\0{strength}")
    return Aggregate(series, strength, list(runs), estimates, stack is not None)


def paired_difference(candidate: Aggregate, baseline: Aggregate, metrics: Sequence[str],
                      replicates: int = bootstrap.REPLICATES) -> Difference | None:
    """candidate − baseline on the seeds both ran, with the same seeds and prompts drawn for
    both in every replicate; None when they share no seed."""
    ours, theirs = _by_seed(candidate.runs), _by_seed(baseline.runs)
    seeds = sorted((seed for seed in ours if seed in theirs), key=_seed_order_key)
    if not seeds:
        return None
    mine, base = [ours[seed] for seed in seeds], [theirs[seed] for seed in seeds]
    stack_a, stack_b = _PromptStack.of(mine), _PromptStack.of(base)
    paired = stack_a is not None and stack_b is not None and stack_a.matches(stack_b)
    if not paired:
        stack_a = stack_b = None  # both sides the same way, or the difference means nothing

    def statistics(draws: bootstrap.Draws) -> dict[str, np.ndarray]:
        a = _statistics(mine, metrics, stack_a, draws)
        b = _statistics(base, metrics, stack_b, draws)
        return {name: a[name] - b[name] for name in metrics}

    key = f"{candidate.series}\0{baseline.series}\0{candidate.strength}"
    estimates = _estimate(statistics, len(seeds), stack_a, replicates, key)
    return Difference(candidate.series, baseline.series, candidate.strength, seeds, estimates,
                      paired)


@dataclass(frozen=True)
class _PromptStack:
    """The group's per-prompt values as (seeds, prompts) arrays."""

    rewards: np.ndarray
    kls: np.ndarray | None
    tail_fraction: float | None  # None: the runs disagree (or never said): tail from seeds

    @classmethod
    def of(cls, runs: Sequence[Run]) -> _PromptStack | None:
        values = [run.prompts for run in runs]
        if any(value is None for value in values):
            return None
        if len({value.rewards.shape for value in values}) != 1:
            return None  # evaluated on different prompt sets: nothing to pair prompts over
        kls = None if any(value.kls is None for value in values) else np.stack(
            [value.kls for value in values])
        fractions = {run.tail_fraction for run in runs}
        fraction = fractions.pop() if len(fractions) == 1 else None
        return cls(np.stack([value.rewards for value in values]), kls,
                   float(fraction) if fraction is not None else None)

    @property
    def prompts(self) -> int:
        return self.rewards.shape[1]

    def matches(self, other: _PromptStack) -> bool:
        return (self.prompts == other.prompts and self.tail_fraction == other.tail_fraction
                and (self.kls is None) == (other.kls is None))


def _statistics(runs: Sequence[Run], metrics: Sequence[str], stack: _PromptStack | None,
                draws: bootstrap.Draws) -> dict[str, np.ndarray]:
    out = {}
    if stack is not None:
        prompt_level = bootstrap.prompt_statistics(stack.rewards, stack.kls,
                                                    stack.tail_fraction, draws)
        out.update((name, value) for name, value in prompt_level.items() if name in metrics)
    for name in metrics:
        if name not in out:
            out[name] = bootstrap.seed_statistic(_final_values(runs, name), draws)
    return out


Statistics = Callable[[bootstrap.Draws], dict[str, np.ndarray]]


def _estimate(statistics: Statistics, seeds: int, stack: _PromptStack | None,
              replicates: int, key: str) -> dict[str, Estimate]:
    """Point estimates on the data, 95 % intervals from `replicates` resamples."""
    prompts = stack.prompts if stack is not None else None
    points = statistics(bootstrap.identity(seeds, prompts))
    resampled = {}
    if seeds > 1 or prompts is not None:
        resampled = statistics(bootstrap.draw(bootstrap.generator(key), seeds, prompts,
                                              replicates))
    over_prompts = _prompt_metrics(stack) if stack is not None else set()
    estimates = {}
    for name, point in points.items():
        # one seed and nothing per prompt: nothing to resample, so no interval to show
        if seeds > 1 or name in over_prompts:
            low, high = bootstrap.interval(resampled[name])
        else:
            low, high = math.nan, math.nan
        testable = name in over_prompts or seeds >= MIN_SEEDS_TO_TEST
        estimates[name] = Estimate(float(point[0]), low, high, testable)
    return estimates


def _prompt_metrics(stack: _PromptStack) -> set[str]:
    names = {"reward_mean"}
    if stack.tail_fraction is not None:
        names.add("reward_tail")
    if stack.kls is not None:
        names.add("kl")
    return names


def _final_values(runs: Sequence[Run], name: str) -> np.ndarray:
    values = [run.final.get(name) for run in runs]
    return np.array([value if isinstance(value, (int, float)) and not isinstance(value, bool)
                     else math.nan for value in values], dtype=float)


def _by_seed(runs: Sequence[Run]) -> dict[int | None, Run]:
    """First run of each seed: a seed run twice in one group is paired once."""
    paired: dict[int | None, Run] = {}
    for run in runs:
        paired.setdefault(run.seed, run)
    return paired


def _seed_order_key(seed: int | None) -> tuple[int, int]:
    return (1, 0) if seed is None else (0, seed)


def _seed_order(run: Run) -> tuple[tuple[int, int], str]:
    return _seed_order_key(run.seed), run.run
