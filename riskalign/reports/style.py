"""One look for every figure of a report: sizes readable in a paper, a colour, marker and
(for strengths) dash pattern that stay the same across the report's figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 150
RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
      "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False,
      "axes.spines.right": False}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DASHES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def series_styles(series: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{series: {"color": ..., "marker": ...}} in the order given."""
    palette = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    return {name: {"color": palette(i % palette.N), "marker": MARKERS[i % len(MARKERS)]}
            for i, name in enumerate(series)}


def dash_styles(strengths: Sequence[str | None]) -> dict[str | None, Any]:
    return {value: DASHES[i % len(DASHES)] for i, value in enumerate(strengths)}


def legend_below(figure: Any, handles: list[Any], labels: list[str], top: float) -> None:
    """A legend under the plot, never over the data; columns as many as fit the width."""
    width = max((len(label) for label in labels), default=10)
    columns = max(1, min(len(labels), int(figure.get_figwidth() * 11 / max(width, 8))))
    figure.legend(handles, labels, loc="upper center", ncol=columns, frameon=False,
                  bbox_to_anchor=(0.5, top))
