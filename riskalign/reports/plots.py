"""frontier.png and tail.png: one point per (series, strength) at its mean over seeds, with
95 % bootstrap bars on both axes, each series' points joined in strength order, each
point annotated with its strength, and the Pareto front of the points dashed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Annotation

from riskalign.reports.aggregate import Aggregate, Estimate
from riskalign.reports.files import save_figure_atomic
from riskalign.reports.naming import metric_title, strength_text
from riskalign.reports.pareto import pareto_front
from riskalign.reports.style import DPI, RC, legend_below, plt, series_styles

PARETO = "Pareto front of the means"
PointLabel = tuple[str, float, float, object]  # text, x, y, colour


def plot_frontier(aggregates: Sequence[Aggregate], x: str, y: str, strength_key: str | None,
                  tail: str, title: str, path: Path) -> None:
    series = list(dict.fromkeys(aggregate.series for aggregate in aggregates))
    styles = series_styles(series)
    with plt.rc_context(RC):
        # a dense sweep gets room for its strength labels
        figure, axes = plt.subplots(figsize=(7.5, 5.0) if len(aggregates) <= 16 else (9.5, 6.5))
        labels: list[PointLabel] = []
        for name in series:
            members = [a for a in aggregates if a.series == name
                       and _finite(a.metrics.get(x)) and _finite(a.metrics.get(y))]
            if not members:
                continue
            xs, ys = [a.metrics[x] for a in members], [a.metrics[y] for a in members]
            axes.errorbar([e.mean for e in xs], [e.mean for e in ys], xerr=_bars(xs),
                          yerr=_bars(ys), label=name, linewidth=1.2, markersize=7, capsize=3,
                          elinewidth=0.9, markeredgecolor="black", markeredgewidth=0.6,
                          zorder=3, **styles[name])
            labels += [(strength_text(strength_key, a.strength), ex.mean, ey.mean,
                        styles[name]["color"]) for a, ex, ey in zip(members, xs, ys)]
        _draw_front(axes, aggregates, x, y)
        axes.set_xlabel(metric_title(x, tail))
        axes.set_ylabel(metric_title(y, tail))
        axes.set_title(title, loc="left")
        axes.grid(alpha=0.3)
        axes.margins(x=0.08, y=0.08)
        figure.tight_layout()
        place_labels(figure, axes, [label for label in labels if label[0]])
        handles, labels = axes.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i] == PARETO)  # front last
        handles, labels = [handles[i] for i in order], [labels[i] for i in order]
        legend_below(figure, handles, labels, top=0.0)
        save_figure_atomic(figure, path, DPI)
        plt.close(figure)


# where a strength label may go, in points from its point: right-above first
OFFSETS = ((7, 6), (7, -15), (-9, 6), (-9, -15), (7, 16), (-9, 16), (7, -25), (-9, -25),
           (14, -5), (-16, -5))


def place_labels(figure: Figure, axes: Axes, labels: Sequence[PointLabel]) -> None:
    """Annotate each point at the first offset whose text box hits no label placed before
    and no other point's marker; where none is free, at the first offset."""
    renderer = figure.canvas.get_renderer()
    markers = [axes.transData.transform((x, y)) for _, x, y, _ in labels]
    taken: list = []
    for index, (text, x, y, colour) in enumerate(labels):
        others = markers[:index] + markers[index + 1:]
        for offset in OFFSETS:
            note = _annotate(axes, text, (x, y), offset, colour)
            box = note.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in taken) and not any(
                    box.contains(*marker) for marker in others):
                break
            note.remove()
        else:
            note = _annotate(axes, text, (x, y), OFFSETS[0], colour)
        taken.append(note.get_window_extent(renderer))


def _annotate(axes: Axes, text: str, xy: tuple[float, float], offset: tuple[int, int],
              colour: object) -> Annotation:
    # a white backing keeps the text readable where it crosses a bar or a line
    return axes.annotate(text, xy, xytext=offset, textcoords="offset points", fontsize=9,
                         color=colour, zorder=5, ha="left" if offset[0] > 0 else "right",
                         bbox={"boxstyle": "round,pad=0.15", "facecolor": "white",
                               "edgecolor": "none", "alpha": 0.8})


def _draw_front(axes: Axes, aggregates: Sequence[Aggregate], x: str, y: str) -> None:
    points = [(_mean(a.metrics.get(x)), _mean(a.metrics.get(y))) for a in aggregates]
    front = pareto_front(points)
    if len(front) > 1:
        # over the series' lines: a front along one series must still show
        axes.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--",
                  linewidth=1.3, zorder=3.5, label=PARETO)


def _bars(estimates: Sequence[Estimate]) -> list[list[float]]:
    """Error bar lengths below and above each mean; none where there is no interval."""
    below = [e.mean - e.lo if math.isfinite(e.lo) else 0.0 for e in estimates]
    above = [e.hi - e.mean if math.isfinite(e.hi) else 0.0 for e in estimates]
    # a percentile interval can sit just beside the mean (tails are skewed): clip, not flip
    return [[max(0.0, b) for b in below], [max(0.0, a) for a in above]]


def _finite(estimate: Estimate | None) -> bool:
    return estimate is not None and math.isfinite(estimate.mean)


def _mean(estimate: Estimate | None) -> float:
    return estimate.mean if estimate is not None else math.nan
