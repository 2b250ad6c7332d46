"""curves.png: reward mean, reward tail and KL over training steps, one line per
(series, strength) at its mean over seeds, with a band from the lowest to the highest
seed at each step (with three seeds or so a bootstrap band would claim more than it knows)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from riskalign.reports.aggregate import Aggregate
from riskalign.reports.design import strength_order
from riskalign.reports.files import save_figure_atomic
from riskalign.reports.naming import metric_title, strength_symbol
from riskalign.reports.runs import Run
from riskalign.reports.style import DPI, RC, dash_styles, legend_below, plt, series_styles

PANELS = ("reward_mean", "reward_tail", "kl")
SMALL_MULTIPLES = 8  # lines per panel beyond which each strength gets its own row


def seed_curves(runs: Sequence[Run], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps every seed evaluated at, values of shape (seeds, steps)); NaN where missing."""
    by_run = [{point.get("step"): point.get(metric) for point in run.curve} for run in runs]
    steps = sorted(set.intersection(*(set(k for k in curve if isinstance(k, int))
                                      for curve in by_run)))
    values = np.array([[_number(curve[step]) for step in steps] for curve in by_run], dtype=float)
    return np.array(steps, dtype=float), values.reshape(len(runs), len(steps))


def plot_curves(aggregates: Sequence[Aggregate], strength_key: str | None, tail: str,
                path: Path) -> None:
    """One row of three panels, strengths told apart by dash pattern; a sweep too dense for
    that (more than SMALL_MULTIPLES lines) gets one row per strength instead."""
    series = list(dict.fromkeys(a.series for a in aggregates))
    strengths = sorted({a.strength for a in aggregates}, key=strength_order)
    colours, dashes = series_styles(series), dash_styles(strengths)
    by_row = len(strengths) > 1 and len(aggregates) > SMALL_MULTIPLES
    rows = [[a for a in aggregates if a.strength == value] for value in strengths] \
        if by_row else [list(aggregates)]
    with plt.rc_context(RC):
        figure, panels = plt.subplots(len(rows), len(PANELS), squeeze=False, sharex=True,
                                      figsize=(15, 1.2 + 3.2 * len(rows)))
        for row, members in enumerate(rows):
            for axes, metric in zip(panels[row], PANELS):
                for aggregate in members:
                    style = "-" if by_row else dashes[aggregate.strength]
                    _draw(axes, aggregate, metric, colours[aggregate.series]["color"], style)
                axes.grid(alpha=0.3)
                axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
                if row == 0:
                    axes.set_title(metric_title(metric, tail), fontsize=11)
                if row == len(rows) - 1:
                    axes.set_xlabel("training step")
            if by_row and strength_key is not None:
                panels[row][0].set_ylabel(f"{strength_symbol(strength_key)}={strengths[row]}",
                                          fontsize=12)
        height = figure.get_figheight()
        figure.suptitle("Training curves: mean over seeds; band: lowest to highest seed",
                        x=0.01, y=1 - 0.05 / height, ha="left", va="top")
        figure.tight_layout(rect=(0, 0, 1, 1 - 0.2 / height))  # the suptitle's strip
        handles = [Line2D([], [], color=colours[name]["color"], linewidth=2.5) for name in series]
        labels = list(series)
        if not by_row and strength_key is not None and len(strengths) > 1:
            symbol = strength_symbol(strength_key)
            handles += [Line2D([], [], color="black", linestyle=dashes[value], linewidth=1.6)
                        for value in strengths]
            labels += [f"{symbol}={value}" for value in strengths]
        legend_below(figure, handles, labels, top=0.0)
        save_figure_atomic(figure, path, DPI)
        plt.close(figure)


def _draw(axes: Axes, aggregate: Aggregate, metric: str, colour: object, style: object) -> None:
    steps, values = seed_curves(aggregate.runs, metric)
    if steps.size == 0 or np.isnan(values).all():
        return
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step no seed has is left blank
        mean = np.nanmean(values, axis=0)
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    axes.plot(steps, mean, color=colour, linestyle=style, linewidth=1.6)
    if len(aggregate.runs) > 1:
        axes.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)


def _number(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan
