"""A run's closing table: reference vs trained policy on held-out prompts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def closing_table(reference: dict[str, float], final: dict[str, float]) -> Table:
    """Reward mean, reward tail and KL of the reference (step 0) and the trained policy."""
    table = Table(title="alignment vs drift (held-out prompts)")
    for column in ("model", "step", "reward mean", "reward tail (worst 10%)", "KL(π‖π_ref)"):
        table.add_column(column, justify="right")
    for label, point in (("reference", reference), ("policy", final)):
        table.add_row(
            label,
            str(int(point["step"])),
            f"{point['reward_mean']:.3f}",
            f"{point['reward_tail']:.3f}",
            f"{point['kl']:.3f}",
        )
    return table


def print_closing_table(reference: dict[str, float], final: dict[str, float]) -> None:
    Console().print(closing_table(reference, final))

