"""Sweep directory -> the alignment-vs-drift report a paper quotes.

    python -m riskalign.frontier outputs/multirun/2026-11-24/10-00-00 \
        [--x kl] [--y reward_mean] [--strength objective.beta] [--group-by label,KEY] \
        [--baseline dpo] [--bootstrap 2000] [--wandb [--wandb-mode offline|online]]

Reads every job below the directory (summary.json, .hydra/overrides.yaml and the final
step's samples/*.jsonl) and writes next to them: frontier.csv (one row per run),
frontier_aggregates.csv (mean and 95 % bootstrap interval per series × strength over
seeds and prompts), frontier_differences.csv (with --baseline: paired differences),
frontier.png, tail.png, curves.png and frontier.md, which it also prints. Jobs that
failed or left a broken summary are listed as skipped. The work is in riskalign.reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from riskalign.config.launch import exit_on_resource_error
from riskalign.reports.bootstrap import REPLICATES
from riskalign.reports.pareto import pareto_front
from riskalign.reports.report import (
    FRONTIER_MD,
    Options,
    ReportError,
    build_report,
    write_report,
)

__all__ = ["main", "pareto_front"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="riskalign.frontier",
                                     description="Frontier report of a riskalign sweep.")
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or any run tree)")
    parser.add_argument("--x", default="kl", help="final metric on the x axis (default: kl)")
    parser.add_argument("--y", default="reward_mean",
                        help="final metric on the y axis (default: reward_mean)")
    parser.add_argument("--strength", default=None,
                        help="override key annotated on points (default: objective.beta when "
                             "swept; 'none' for no strength)")
    parser.add_argument("--group-by", default="",
                        help="comma-separated keys that make a series (pseudo-key 'label': "
                             "the run label); default: label plus other swept keys")
    parser.add_argument("--baseline", default=None,
                        help="a series name: adds paired differences of every other series")
    parser.add_argument("--bootstrap", type=_positive, default=REPLICATES,
                        help=f"bootstrap replicates (default: {REPLICATES})")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the report to the sweep's W&B project and group")
    parser.add_argument("--wandb-mode", default="offline", choices=("online", "offline"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(
        sweep_dir=args.sweep_dir, x=args.x, y=args.y, strength=args.strength,
        group_by=[key.strip().lstrip("+") for key in args.group_by.split(",") if key.strip()],
        baseline=args.baseline, replicates=args.bootstrap)
    try:
        report = build_report(options)
    except ReportError as error:
        message = " ".join(str(error).split())  # one line, whatever a reason held
        print(f"riskalign.frontier: error: {message}", file=sys.stderr)
        return 2
    try:
        written = write_report(report)
    except Exception as error:
        exit_on_resource_error("riskalign.frontier", error)
    print(written.markdown)
    names = ", ".join(path.name for path in written.paths)
    print(f"wrote {names}, {FRONTIER_MD} in {args.sweep_dir}", flush=True)  # before W&B's
    if args.wandb:
        from riskalign.reports.wandb_report import log_report  # wandb is slow to import

        where = log_report(args.sweep_dir, report.sweep.runs, written.tables, written.figures,
                           args.wandb_mode)
        print(f"W&B ({args.wandb_mode}): {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
