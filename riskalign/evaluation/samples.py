"""Each evaluation's completions, kept where a person can read them.

Every evaluation point of a run writes `<run>/samples/step-<step>.jsonl`: one line per
held-out prompt, in prompt order, {step, index, prompt, completion, reward, kl}. The
frontier report bootstraps its intervals over these per-prompt values; anyone can open
them to see what a policy with a given reward actually writes. A rerun of the same step
(a resumed run) replaces its file whole.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from riskalign.runs.artifacts import finite_or_null, write_jsonl_atomic

SAMPLES_DIR = "samples"
COLUMNS = ("step", "index", "prompt", "completion", "reward", "kl")


@dataclass
class ScoredSample:
    """One held-out prompt's sampled completion, its reward and its sequence KL (None
    without a reference)."""

    index: int
    prompt: str
    completion: str
    reward: float
    kl: float | None


def samples_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SAMPLES_DIR / f"step-{step:07d}.jsonl"


def sample_rows(step: int | None, samples: list[ScoredSample]) -> list[dict]:
    """The rows (COLUMNS order), a non-finite float as None, as JSON has no NaN. `step`
    is None for a policy evaluated outside training."""
    return [finite_or_null({"step": step, **asdict(sample)}) for sample in samples]


def write_samples(run_dir: Path, step: int, samples: list[ScoredSample]) -> Path:
    path = samples_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, sample_rows(step, samples))
    return path


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
