"""A sweep directory in, the frontier report's files out: the steps in order."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from riskalign.reports import bootstrap
from riskalign.reports.aggregate import (
    Aggregate,
    Difference,
    aggregate,
    group_runs,
    metric_names,
    paired_difference,
)
from riskalign.reports.contents import Report
from riskalign.reports.curves import plot_curves
from riskalign.reports.design import detect_design
from riskalign.reports.naming import tail_fraction_text
from riskalign.reports.plots import plot_frontier
from riskalign.reports.runs import load_sweep
from riskalign.reports.tables import (
    AGGREGATES_CSV,
    DIFFERENCES_CSV,
    FRONTIER_CSV,
    markdown,
    write_aggregate_table,
    write_difference_table,
    write_run_table,
)
from riskalign.runs.artifacts import write_text_atomic

FRONTIER_PNG, TAIL_PNG, CURVES_PNG, FRONTIER_MD = (
    "frontier.png", "tail.png", "curves.png", "frontier.md")


class ReportError(Exception):
    """Nothing to report on: the message is the one line the user sees."""


@dataclass
class Options:
    sweep_dir: Path
    x: str = "kl"
    y: str = "reward_mean"
    strength: str | None = None  # None: objective.beta when swept; "none": no strength
    group_by: list[str] = field(default_factory=list)
    baseline: str | None = None
    replicates: int = bootstrap.REPLICATES


def build_report(options: Options) -> Report:
    if not options.sweep_dir.is_dir():
        raise ReportError(f"{options.sweep_dir} is not a directory")
    sweep = load_sweep(options.sweep_dir, required_metrics=(options.x, options.y))
    if not sweep.runs:
        first = f"; first: {sweep.skipped[0].job}: {sweep.skipped[0].reason}" \
            if sweep.skipped else ""
        raise ReportError(f"no valid run under {options.sweep_dir} "
                          f"({len(sweep.skipped)} skipped{first})")
    design = detect_design(sweep.runs, options.strength, options.group_by or None)
    metrics = metric_names(sweep.runs)
    aggregates = [aggregate(series, strength, runs, metrics, options.replicates)
                  for (series, strength), runs in group_runs(sweep.runs, design).items()]
    names = list(dict.fromkeys(a.series for a in aggregates))
    if options.baseline is not None and options.baseline not in names:
        raise ReportError(f"--baseline {options.baseline!r} is not a series of this sweep; "
                          f"its series: {', '.join(map(repr, names))}")
    difference_metrics = [m for m in dict.fromkeys(
        [*bootstrap.PROMPT_METRICS, options.x, options.y]) if m in metrics]
    differences = [] if options.baseline is None else _differences(
        aggregates, options.baseline, difference_metrics, options.replicates, sweep.notes)
    return Report(sweep, design, options.x, options.y, metrics, aggregates, options.baseline,
                  differences, difference_metrics, options.replicates,
                  tail_fraction_text(sweep.runs))


def _differences(aggregates: list[Aggregate], baseline: str, metrics: list[str],
                 replicates: int, notes: list[str]) -> list[Difference]:
    """Every other series against the baseline at the same strength, paired by seed."""
    baselines = {a.strength: a for a in aggregates if a.series == baseline}
    differences = []
    for candidate in aggregates:
        if candidate.series == baseline:
            continue
        if candidate.strength not in baselines:
            notes.append(f"{candidate.series} at {candidate.strength}: {baseline} has no run "
                         "there, not compared")
            continue
        difference = paired_difference(candidate, baselines[candidate.strength], metrics,
                                       replicates)
        if difference is None:
            notes.append(f"{candidate.series} at {candidate.strength} shares no seed with "
                         f"{baseline}: not compared")
        else:
            differences.append(difference)
    return differences


@dataclass
class Written:
    tables: list[Path]  # the CSVs
    figures: list[Path]
    markdown: str  # frontier.md's text

    @property
    def paths(self) -> list[Path]:
        return [*self.tables, *self.figures]


def write_report(report: Report) -> Written:
    """Every table and figure, each written whole."""
    directory = report.sweep.directory
    tables = [directory / FRONTIER_CSV, directory / AGGREGATES_CSV]
    write_run_table(report, tables[0])
    write_aggregate_table(report, tables[1])
    if report.baseline is not None:
        tables.append(directory / DIFFERENCES_CSV)
        write_difference_table(report, tables[-1])
    figures = [directory / FRONTIER_PNG, directory / TAIL_PNG, directory / CURVES_PNG]
    strength, title = report.design.strength, _title(report)
    plot_frontier(report.aggregates, report.x, report.y, strength, report.tail,
                  f"Alignment vs drift: {title}", figures[0])
    plot_frontier(report.aggregates, report.x, "reward_tail", strength, report.tail,
                  f"Worst case vs drift: {title}", figures[1])
    plot_curves(report.aggregates, strength, report.tail, figures[2])
    text = markdown(report)
    write_text_atomic(directory / FRONTIER_MD, text)
    return Written(tables, figures, text)


def _title(report: Report) -> str:
    bars = textwrap.wrap(f"bars: 95 % bootstrap interval {report.resampling}", 64)
    return "\n".join([f"{report.seed_counts} per point", *bars])
