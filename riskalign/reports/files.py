"""Report files written whole or not at all: a reader of the sweep never sees half a PNG."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from riskalign.runs.artifacts import file_mode, write_text_atomic


def write_csv_atomic(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def save_figure_atomic(figure: Any, path: Path, dpi: int) -> None:
    """`figure.savefig` to a temporary beside `path`, then rename."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=dpi, format=path.suffix.lstrip(".") or "png",
                       bbox_inches="tight")
        os.chmod(temporary, file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
