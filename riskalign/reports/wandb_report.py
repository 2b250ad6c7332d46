"""--wandb: the report's tables and figures as one W&B run (job_type "frontier") in the
sweep's own project, entity and group, beside the sweep's training runs."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from riskalign.reports.runs import Run
from riskalign.runs.identity import sweep_group_name


def sweep_destination(sweep_dir: Path, runs: Sequence[Run]) -> dict[str, str | None]:
    """project, entity and group most of the runs logged to; an old sweep that recorded no
    group gets the name training gives a multirun group: sweep-<date>_<time>."""
    settings = [((run.config.get("logger") or {}).get("wandb") or {}) for run in runs]
    group = _most_common(run.wandb_group for run in runs)
    return {"project": _most_common(s.get("project") for s in settings) or "riskalign",
            "entity": _most_common(s.get("entity") for s in settings),
            "group": group or sweep_group_name(sweep_dir.resolve())}


def log_report(sweep_dir: Path, runs: Sequence[Run], tables: Sequence[Path],
               images: Sequence[Path], mode: str) -> str:
    """Log every CSV as a table and every PNG as an image; returns the run's directory."""
    import wandb

    where = sweep_destination(sweep_dir, runs)
    settings = dict(project=where["project"], entity=where["entity"], group=where["group"],
                    name=f"{where['group']}-frontier", job_type="frontier", dir=str(sweep_dir))
    try:
        run = wandb.init(mode=mode, **settings)
    except Exception as error:  # no key, no network: keep the report, offline
        if mode == "offline":
            raise
        print(f"riskalign.frontier: W&B online failed ({error}); logging offline",
              file=sys.stderr)
        run = wandb.init(mode="offline", **settings)
    payload: dict[str, Any] = {f"frontier/{path.stem}": _table(wandb, path) for path in tables}
    payload.update({f"frontier/{path.stem}_plot": wandb.Image(str(path)) for path in images})
    run.log(payload)
    directory = str(Path(run.dir).parent)
    run.finish()
    return directory


def _table(wandb: Any, path: Path) -> Any:
    """A CSV as a W&B table, numeric columns as numbers (W&B refuses mixed columns)."""
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    columns = [[row[i] for row in rows] for i in range(len(header))]
    numeric = [all(_parses(cell) for cell in column if cell) for column in columns]
    data = [[(float(cell) if cell else None) if numeric[i] else cell
             for i, cell in enumerate(row)] for row in rows]
    return wandb.Table(columns=header, data=data)


def _parses(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _most_common(values: Any) -> Any:
    counts = Counter(value for value in values if value)
    return counts.most_common(1)[0][0] if counts else None
