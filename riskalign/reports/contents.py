"""Everything one report shows, computed once and handed to the tables, plots and W&B."""

from __future__ import annotations

from dataclasses import dataclass

from riskalign.reports.aggregate import Aggregate, Difference
from riskalign.reports.design import Design
from riskalign.reports.runs import Sweep


@dataclass
class Report:
    sweep: Sweep
    design: Design
    x: str
    y: str
    metrics: list[str]  # aggregated: every numeric final metric
    aggregates: list[Aggregate]
    baseline: str | None
    differences: list[Difference]
    difference_metrics: list[str]
    replicates: int
    tail: str  # the tail fraction as text ("10 %"), or "mixed"

    @property
    def resampling(self) -> str:
        """How the intervals of reward mean, tail and KL were drawn, in words."""
        over_prompts = {aggregate.over_prompts for aggregate in self.aggregates}
        if over_prompts == {True}:
            return "over prompts and seeds"
        if over_prompts == {False}:
            return "over seeds only (no per-prompt samples)"
        return "over prompts and seeds (over seeds only where a run has no per-prompt samples)"

    @property
    def seed_counts(self) -> str:
        counts = sorted({len(aggregate.runs) for aggregate in self.aggregates})
        text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        return f"{text} seed{'s' if counts[-1] > 1 else ''}"
