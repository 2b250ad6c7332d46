"""A run's closing table: reference vs trained policy on held-out prompts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def closing_table(reference: dict[str, float], final: dict[str, float],
                  tail_fraction: float) -> Table:
    """Reward mean, reward tail (the worst `tail_fraction`) and KL of the reference (step 0)
    and the trained policy."""
    table = Table(title="alignment vs drift (held-out prompts)")
    tail = f"reward tail (worst {100 * tail_fraction:g}%)"
    for column in ("model", "step", "reward mean", tail, "KL(π‖π_ref)"):
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


def print_closing_table(reference: dict[str, float], final: dict[str, float],
                        tail_fraction: float) -> None:
    Console().print(closing_table(reference, final, tail_fraction))
