"""Multirun bookkeeping: a failing job is recorded and the sweep goes on.

`RecordFailures` is a Hydra callback (wired in conf/train.yaml). When a job
raises, Hydra marks it FAILED and launches the next one; this callback writes
the job's traceback to `<job dir>/error.txt` and appends it to the sweep-level
`<sweep dir>/failures.json`, so a person sees at once which jobs broke and why.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from riskalign.runs.artifacts import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.json"


def read_failures(sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's failure records so far. A file that is not a JSON list (cut short,
    edited by hand) is set aside as failures.json.corrupt with a warning, so that the
    record being written is not lost with it."""
    path = sweep_dir / FAILURES_FILE
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text())
        if isinstance(records, list):
            return records
        problem = f"holds a {type(records).__name__}, not a list"
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problem = f"is not valid JSON ({error})"
    aside = path.with_name(FAILURES_FILE + ".corrupt")
    path.replace(aside)
    log.warning("%s %s: moved to %s; recording failures afresh", path, problem, aside)
    return []


class RecordFailures(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or config.hydra.mode.name != "MULTIRUN":
            return
        error = job_return._return_value  # the exception; .return_value would re-raise it
        job_dir = Path(config.hydra.runtime.output_dir)
        text = "".join(traceback.format_exception(error))
        write_text_atomic(job_dir / "error.txt", text)
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = read_failures(sweep_dir)
        failures.append(
            {
                "job": config.hydra.job.num,
                "overrides": list(config.hydra.overrides.task),
                "job_dir": str(job_dir),
                "error": f"{type(error).__name__}: {error}",
            }
        )
        write_json_atomic(sweep_dir / FAILURES_FILE, failures)
        log.error("job %s failed (%s); recorded in %s", config.hydra.job.num, error,
                  sweep_dir / FAILURES_FILE)
