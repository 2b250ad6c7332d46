"""Sweep directory -> the alignment-vs-drift frontier: a CSV, two plots and a table.

    python -m riskalign.frontier outputs/multirun/2026-11-24/10-00-00 [--wandb]

Reads every job's summary.json below the directory and writes, next to them,
`frontier.csv` (one row per run), `frontier.png` (every run's curve as
points, one colour per objective, the Pareto front of the final points drawn)
and `tail.png` (reward tail vs KL); prints the table as markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FRONTIER_CSV, FRONTIER_PNG, TAIL_PNG = "frontier.csv", "frontier.png", "tail.png"


@dataclass
class RunResult:
    run: str
    objective: str
    overrides: str
    beta: float | None
    reward: float
    reward_tail: float
    kl: float
    accuracy: float | None
    steps: int


def _overrides(job_dir: Path) -> str:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    lines = [line.strip()[2:] for line in path.read_text().splitlines() if line.startswith("- ")]
    return " ".join(lines)


def load_runs(sweep_dir: Path) -> tuple[list[RunResult], list[dict[str, Any]]]:
    """Every run's final point, and its whole curve, in job order."""
    results, curves = [], []
    for path in sorted(sweep_dir.glob("**/summary.json"), key=lambda p: str(p)):
        summary = json.loads(path.read_text())
        final = summary["final"]
        results.append(
            RunResult(
                run=str(path.parent.relative_to(sweep_dir)),
                objective=summary["objective"],
                overrides=_overrides(path.parent),
                beta=summary["config"]["objective"].get("beta"),
                reward=final["reward_mean"],
                reward_tail=final["reward_tail"],
                kl=final["kl"],
                accuracy=final.get("pairs/rewards/accuracies"),
                steps=summary["steps"],
            )
        )
        curves.append({"objective": summary["objective"], "curve": summary["curve"]})
    return results, curves


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (kl, reward) points no other point beats: less KL and more reward.

    Returned in order of increasing KL.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_reward = [], float("-inf")
    for index in order:
        if points[index][1] > best_reward:
            front.append(index)
            best_reward = points[index][1]
    return front


def _colours(objectives: list[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10")
    return {name: palette(i % 10) for i, name in enumerate(sorted(set(objectives)))}


def plot_frontier(results: list[RunResult], curves: list[dict[str, Any]], path: Path) -> None:
    colours = _colours([r.objective for r in results])
    figure, axes = plt.subplots(figsize=(7, 5))
    for entry in curves:
        colour = colours[entry["objective"]]
        kls = [point["kl"] for point in entry["curve"]]
        rewards = [point["reward_mean"] for point in entry["curve"]]
        axes.plot(kls, rewards, color=colour, alpha=0.35, linewidth=0.8)
        axes.scatter(kls, rewards, color=colour, s=12, alpha=0.6)
    for name, colour in colours.items():
        finals = [r for r in results if r.objective == name]
        axes.scatter([r.kl for r in finals], [r.reward for r in finals], color=colour, s=60,
                     edgecolor="black", label=name, zorder=3)
    front = pareto_front([(r.kl, r.reward) for r in results])
    axes.plot([results[i].kl for i in front], [results[i].reward for i in front], "k--",
              linewidth=1.2, label="Pareto front (final points)", zorder=2)
    _save(figure, axes, path, "mean reward on held-out prompts", "alignment vs drift")


def plot_tail(results: list[RunResult], path: Path) -> None:
    colours = _colours([r.objective for r in results])
    figure, axes = plt.subplots(figsize=(7, 5))
    for name, colour in colours.items():
        runs = [r for r in results if r.objective == name]
        axes.scatter([r.kl for r in runs], [r.reward_tail for r in runs], color=colour, s=60,
                     edgecolor="black", label=name)
    _save(figure, axes, path, "reward tail: mean of the worst 10 %", "worst case vs drift")


def _save(figure: Any, axes: Any, path: Path, ylabel: str, title: str) -> None:
    """Shared axes (KL on x), labels and legend, then write the PNG."""
    axes.set_xlabel("sampled KL(π_θ ‖ π_ref) per sequence")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_csv(results: list[RunResult], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(results[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)


def markdown_table(results: list[RunResult]) -> str:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    lines = ["| run | objective | overrides | reward | reward tail | KL | accuracy |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.run} | {r.objective} | {r.overrides} | {number(r.reward)} | "
                     f"{number(r.reward_tail)} | {number(r.kl)} | {number(r.accuracy)} |")
    return "\n".join(lines)


def log_to_wandb(sweep_dir: Path, results: list[RunResult], mode: str) -> None:
    import wandb

    group = "sweep-" + "_".join(sweep_dir.resolve().parts[-2:])
    run = wandb.init(project="riskalign", group=group, name=f"{group}-frontier", mode=mode,
                     dir=str(sweep_dir), job_type="frontier")
    table = wandb.Table(columns=list(asdict(results[0])),
                        data=[list(asdict(r).values()) for r in results])
    run.log({"frontier/table": table,
             "frontier/plot": wandb.Image(str(sweep_dir / FRONTIER_PNG)),
             "frontier/tail": wandb.Image(str(sweep_dir / TAIL_PNG))})
    run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Frontier report of a riskalign sweep.")
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or any run tree)")
    parser.add_argument("--wandb", action="store_true", help="also log to W&B in the sweep group")
    parser.add_argument("--wandb-mode", default="offline", choices=("online", "offline"))
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"riskalign.frontier: error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    results, curves = load_runs(args.sweep_dir)
    if not results:
        print(f"riskalign.frontier: error: no summary.json under {args.sweep_dir}",
              file=sys.stderr)
        return 2
    write_csv(results, args.sweep_dir / FRONTIER_CSV)
    plot_frontier(results, curves, args.sweep_dir / FRONTIER_PNG)
    plot_tail(results, args.sweep_dir / TAIL_PNG)
    print(markdown_table(results))
    print(f"\nwrote {FRONTIER_CSV}, {FRONTIER_PNG}, {TAIL_PNG} in {args.sweep_dir}")
    if args.wandb:
        log_to_wandb(args.sweep_dir, results, args.wandb_mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
