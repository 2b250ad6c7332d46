"""frontier.csv (one row per run), frontier_aggregates.csv (one per series × strength),
frontier_differences.csv (each series against --baseline) and frontier.md, whose
aggregate and difference tables are what a paper quotes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from riskalign.reports.aggregate import MIN_SEEDS_TO_TEST, Estimate
from riskalign.reports.contents import Report
from riskalign.reports.design import SEED, series_name, strength_value
from riskalign.reports.files import write_csv_atomic
from riskalign.reports.naming import metric_header, strength_symbol

FRONTIER_CSV = "frontier.csv"
AGGREGATES_CSV = "frontier_aggregates.csv"
DIFFERENCES_CSV = "frontier_differences.csv"


def write_run_table(report: Report, path: Path) -> None:
    design, runs = report.design, report.sweep.runs
    keys = [key for key in design.swept if key != SEED]
    if design.strength and design.strength not in keys:
        keys.append(design.strength)
    finals = list(dict.fromkeys(key for run in runs for key in run.final))
    columns = ["run", "label", "series", "seed", *keys, *finals, "steps", "wall_seconds"]
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.run, "label": run.label,
                               "series": series_name(run, design), "seed": run.seed}
        row.update({key: run.overrides.get(key, "") for key in keys})
        if design.strength:
            row[design.strength] = strength_value(run, design)
        row.update(run.final)
        row.update(steps=run.steps, wall_seconds=run.wall_seconds)
        rows.append(row)
    write_csv_atomic(path, columns, rows)


def write_aggregate_table(report: Report, path: Path) -> None:
    columns = ["series", "strength_key", "strength", "n_seeds", "seeds", "resampled"]
    columns += [f"{metric}_{part}" for metric in report.metrics for part in ("mean", "lo", "hi")]
    rows = []
    for aggregate in report.aggregates:
        row: dict[str, Any] = {
            "series": aggregate.series, "strength_key": report.design.strength or "",
            "strength": aggregate.strength, "n_seeds": len(aggregate.runs),
            "seeds": " ".join(str(seed) for seed in aggregate.seeds),
            "resampled": "prompts+seeds" if aggregate.over_prompts else "seeds"}
        for metric, estimate in aggregate.metrics.items():
            row.update({f"{metric}_mean": estimate.mean, f"{metric}_lo": estimate.lo,
                        f"{metric}_hi": estimate.hi})
        rows.append(row)
    write_csv_atomic(path, columns, rows)


def write_difference_table(report: Report, path: Path) -> None:
    columns = ["series", "baseline", "strength_key", "strength", "n_paired_seeds", "resampled"]
    for metric in report.difference_metrics:
        columns += [f"{metric}_diff", f"{metric}_lo", f"{metric}_hi", f"{metric}_significant"]
    rows = []
    for difference in report.differences:
        row: dict[str, Any] = {
            "series": difference.series, "baseline": difference.baseline,
            "strength_key": report.design.strength or "", "strength": difference.strength,
            "n_paired_seeds": len(difference.seeds),
            "resampled": "prompts+seeds" if difference.over_prompts else "seeds"}
        for metric, estimate in difference.metrics.items():
            row.update({f"{metric}_diff": estimate.mean, f"{metric}_lo": estimate.lo,
                        f"{metric}_hi": estimate.hi,
                        f"{metric}_significant": estimate.significant})
        rows.append(row)
    write_csv_atomic(path, columns, rows)


def markdown(report: Report) -> str:
    lines = [f"## Frontier: {report.sweep.directory}", "", *_preamble(report), "",
             *_aggregate_table(report)]
    if report.baseline is not None:
        lines += ["", *_difference_table(report)]
    if report.sweep.skipped:
        lines += ["", f"### Skipped jobs ({len(report.sweep.skipped)})", ""]
        lines += [f"- `{skipped.job}`: {_cell(skipped.reason)}" for skipped in report.sweep.skipped]
    if report.sweep.notes:
        lines += ["", "### Notes", ""] + [f"- {note}" for note in report.sweep.notes]
    return "\n".join(lines) + "\n"


def table_metrics(report: Report) -> list[str]:
    """The frontier's three, the plotted axes, and preference accuracy when measured."""
    wanted = ["reward_mean", "reward_tail", "kl", report.x, report.y, "pairs/rewards/accuracies"]
    return [m for m in dict.fromkeys(wanted) if m in report.metrics and _measured(report, m)]


def _preamble(report: Report) -> list[str]:
    runs = report.sweep.runs
    seeds = sorted({run.seed for run in runs}, key=_seed_key)
    lines = [f"{_count(len(runs), 'run')}, {len(report.aggregates)} series × strength points, "
             f"{report.seed_counts} per point (seeds {', '.join(map(str, seeds))}); "
             f"{_count(len(report.sweep.skipped), 'job')} skipped.",
             f"Each cell: mean over seeds [95 % percentile bootstrap interval, "
             f"B = {report.replicates}]; reward mean, tail and KL resampled "
             f"{report.resampling}, with one prompt draw per replicate shared by all seeds; "
             "other metrics over seeds. No interval: one seed and nothing per prompt.",
             f"Reward tail: mean reward of the worst {report.tail} of held-out prompts."
             if report.tail != "mixed" else
             "Reward tail: the runs used different eval.tail_fraction values (mixed)."]
    return lines


def _aggregate_table(report: Report) -> list[str]:
    metrics = table_metrics(report)
    strength = [strength_symbol(report.design.strength)] if report.design.strength else []
    header = ["series", *strength, "seeds", *(metric_header(m, report.tail) for m in metrics)]
    lines = ["### Aggregates", "", _row(header),
             _row(["---"] + ["---:"] * (len(header) - 1))]
    for aggregate in report.aggregates:
        cells = [aggregate.series, *([aggregate.strength or ""] if strength else []),
                 str(len(aggregate.runs))]
        cells += [_estimate(aggregate.metrics[m]) if m in aggregate.metrics else "–"
                  for m in metrics]
        lines.append(_row(cells))
    return lines


def _difference_table(report: Report) -> list[str]:
    metrics = report.difference_metrics
    title = f"### Differences from the baseline `{report.baseline}`"
    explain = ("Series − baseline at the same strength, paired: each bootstrap replicate "
               "draws the same seeds (matched by seed value) and the same prompts for both. "
               "**Bold**: significant, the 95 % interval excludes 0. A pair without per-prompt "
               f"samples is resampled over seeds only and is not tested below "
               f"{MIN_SEEDS_TO_TEST} seeds (its interval is then about the seeds' range).")
    if not report.differences:
        return [title, "", explain, "", "No other series shares a strength and a seed with "
                "the baseline: nothing to compare."]
    strength = [strength_symbol(report.design.strength)] if report.design.strength else []
    header = ["series", *strength, "paired seeds",
              *(f"Δ {metric_header(m, report.tail)}" for m in metrics), "significant"]
    lines = [title, "", explain, "", _row(header),
             _row(["---"] + ["---:"] * (len(header) - 2) + ["---"])]
    for difference in report.differences:
        estimates = [difference.metrics[m] for m in metrics]
        significant = [metric_header(m, report.tail) for m, e in zip(metrics, estimates)
                       if e.significant]
        cells = [difference.series, *([difference.strength or ""] if strength else []),
                 str(len(difference.seeds)) + ("" if difference.over_prompts else " (seeds only)")]
        cells += [_estimate(e, signed=True) for e in estimates]
        untested = any(not e.testable for e in estimates)
        cells.append(", ".join(significant) if significant
                     else "untested (too few seeds)" if untested else "no")
        lines.append(_row(cells))
    return lines


def _estimate(estimate: Estimate, signed: bool = False) -> str:
    """`mean [lo, hi]`, all three in one format: fixed unless the whole estimate is tiny
    or huge."""
    values = [v for v in (estimate.mean, estimate.lo, estimate.hi) if math.isfinite(v)]
    largest = max((abs(v) for v in values), default=0.0)
    kind = ".2e" if largest and (largest < 1e-3 or largest >= 1e4) else ".3f"
    text = _number(estimate.mean, signed, kind)
    if math.isfinite(estimate.lo) and math.isfinite(estimate.hi):
        text += f" [{_number(estimate.lo, signed, kind)}, {_number(estimate.hi, signed, kind)}]"
    return f"**{text}**" if signed and estimate.significant else text


def _number(value: float, signed: bool, kind: str) -> str:
    return f"{value:{'+' if signed else ''}{kind}}" if math.isfinite(value) else "–"


def _measured(report: Report, metric: str) -> bool:
    return any(math.isfinite(a.metrics[metric].mean) for a in report.aggregates
               if metric in a.metrics)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _cell(text: str) -> str:
    """One line, and a `|` that does not end the cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _seed_key(seed: int | None) -> tuple[int, int]:
    return (1, 0) if seed is None else (0, seed)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
