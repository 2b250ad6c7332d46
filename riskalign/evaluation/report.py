"""A run's result files: summary.json (written atomically) and the closing table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a temporary name and rename, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=str, allow_nan=True))
    os.replace(temporary, path)


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

