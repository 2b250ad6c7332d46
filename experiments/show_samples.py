"""What a trained policy writes, beside its reference: the completions a finished run's
evaluations kept (samples/step-N.jsonl), the reference's (step 0) and the policy's (the
last step) side by side for the first N held-out prompts, with their rewards and KL.

    python experiments/show_samples.py outputs/runs/<date>/<time> [--count 3] [--step N]

Prints a markdown table. Nothing is loaded or sampled again: these are the samples the
run's own evaluation drew and scored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from riskalign.evaluation.samples import SAMPLES_DIR, read_samples, samples_path


def evaluated_steps(run_dir: Path) -> list[int]:
    files = (run_dir / SAMPLES_DIR).glob("step-*.jsonl")
    return sorted(int(path.stem.split("-")[1]) for path in files)


def table(reference: list[dict], policy: list[dict], step: int, count: int) -> str:
    def cell(row: dict) -> str:
        kl = "" if row["kl"] is None else f", KL {row['kl']:.2f}"
        return f"{row['completion']!r} ({row['reward']:.3f}{kl})".replace("|", "\\|")

    lines = [f"| prompt | reference (step 0) | policy (step {step}) |", "|---|---|---|"]
    for before, after in list(zip(reference, policy))[:count]:
        lines.append(f"| {before['prompt']!r} | {cell(before)} | {cell(after)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--step", type=int, default=None, help="default: the last evaluated")
    args = parser.parse_args()
    steps = evaluated_steps(args.run_dir)
    if not steps:
        print(f"show_samples: error: no {SAMPLES_DIR}/step-*.jsonl in {args.run_dir}",
              file=sys.stderr)
        return 2
    step = steps[-1] if args.step is None else args.step
    if step not in steps:
        print(f"show_samples: error: --step {step} was not evaluated; evaluated steps: "
              f"{', '.join(map(str, steps))}", file=sys.stderr)
        return 2
    reference = read_samples(samples_path(args.run_dir, steps[0]))
    policy = read_samples(samples_path(args.run_dir, step))
    print(table(reference, policy, step, args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
