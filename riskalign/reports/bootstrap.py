"""Hierarchical percentile bootstrap over seeds and prompts, vectorised in numpy.

Each replicate draws seeds with replacement and, once for all of them, prompt indices
with replacement (every run scores the same held-out prompts, in the same order, so one
prompt draw keeps a replicate's seeds comparable and lets two series be paired). The
statistic of a replicate is the mean over its drawn seeds of that seed's statistic on
the drawn prompts. Passing `identity(...)` draws gives the point estimate on the data.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from riskalign.evaluation.statistics import tail_count

PROMPT_METRICS = ("reward_mean", "reward_tail", "kl")
REPLICATES = 2000
LEVEL = 0.95
BOOTSTRAP_SEED = 20240917  # fixed: the same sweep gives the same intervals on every run
CHUNK_ELEMENTS = 4_000_000  # floats gathered at once: bounds memory for big sweeps


@dataclass(frozen=True)
class Draws:
    seeds: np.ndarray  # (replicates, seeds drawn): indices into the seed axis
    prompts: np.ndarray | None  # (replicates, prompts): indices into the prompt axis


def generator(key: str) -> np.random.Generator:
    """An aggregate's own stream: adding a series to a sweep leaves the others' intervals."""
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(key.encode())])


def draw(rng: np.random.Generator, seeds: int, prompts: int | None,
         replicates: int) -> Draws:
    return Draws(rng.integers(0, seeds, size=(replicates, seeds)),
                 None if prompts is None else rng.integers(0, prompts, size=(replicates, prompts)))


def identity(seeds: int, prompts: int | None) -> Draws:
    """The data as it is: the point estimate."""
    return Draws(np.arange(seeds)[None, :],
                 None if prompts is None else np.arange(prompts)[None, :])


def prompt_statistics(rewards: np.ndarray, kls: np.ndarray | None,
                      tail_fraction: float | None, draws: Draws) -> dict[str, np.ndarray]:
    """reward_mean, and reward_tail and kl when there is a fraction and KLs, per replicate.

    `rewards`, `kls`: (seeds, prompts). Returns one array of shape (replicates,) each."""
    replicates, drawn = draws.seeds.shape
    given = {"reward_mean": True, "reward_tail": tail_fraction is not None,
             "kl": kls is not None}
    out = {name: np.empty(replicates) for name in PROMPT_METRICS if given[name]}
    chunk = max(1, CHUNK_ELEMENTS // (drawn * rewards.shape[1]))
    for start in range(0, replicates, chunk):
        rows = slice(start, start + chunk)
        seeds, prompts = draws.seeds[rows, :, None], draws.prompts[rows, None, :]
        picked = rewards[seeds, prompts]  # (chunk, seeds drawn, prompts)
        out["reward_mean"][rows] = _nanmean(_nanmean(picked, -1), -1)
        if tail_fraction is not None:
            # NaN sorts last, so a missing reward is never counted among the worst
            count = tail_count(tail_fraction, rewards.shape[1])
            worst = np.partition(picked, count - 1, axis=-1)[..., :count]
            out["reward_tail"][rows] = _nanmean(_nanmean(worst, -1), -1)
        if kls is not None:
            out["kl"][rows] = _nanmean(_nanmean(kls[seeds, prompts], -1), -1)
    return out


def seed_statistic(values: np.ndarray, draws: Draws) -> np.ndarray:
    """Mean over drawn seeds of one number per seed (NaN where a seed lacks it)."""
    return _nanmean(values[draws.seeds], -1)


def interval(replicates: np.ndarray) -> tuple[float, float]:
    """The central LEVEL percentile interval (NaN, NaN when no replicate is finite)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice is NaN, as meant
        return np.nanmean(values, axis=axis)
