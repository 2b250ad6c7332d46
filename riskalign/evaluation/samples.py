"""Each evaluation's completions, kept where a person can read them.

Every evaluation point of a run writes `<run>/samples/step-<step>.jsonl`: one line per
held-out prompt, in prompt order, {step, index, prompt, completion, reward, kl}. The
frontier report bootstraps its intervals over these per-prompt values; anyone can open
them to see what a policy with a given reward actually writes. A rerun of the same step
(a resumed run) replaces its file whole.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from riskalign.artifacts import write_text_atomic

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
    """The JSONL rows (COLUMNS order); a non-finite float becomes null, as JSON has no NaN.
    `step` is None for a policy evaluated outside training."""
    rows = []
    for sample in samples:
        row = {"step": step, **asdict(sample)}
        for key in ("reward", "kl"):
            if row[key] is not None and not math.isfinite(row[key]):
                row[key] = None
        rows.append({column: row[column] for column in COLUMNS})
    return rows


def write_samples(run_dir: Path, step: int, samples: list[ScoredSample]) -> Path:
    path = samples_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(row) + "\n" for row in sample_rows(step, samples))
    write_text_atomic(path, "".join(lines))
    return path


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
