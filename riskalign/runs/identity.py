"""What a run is called: its label, the values its sweep varies, its W&B name and tags.

A sweep's job is named by what tells it apart from its siblings, not by every override
it was given: `radpo · ERM μ=5 beta=0.1 seed=2`, where the label comes from the arm (or
the objective's composition) and `beta=0.1` is there only because the sweep varies it.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys that choose the objective: the label already says what they chose.
COMPOSITION_KEYS = ("objective", "arm")
WANDB_ID_FILE = "wandb_run_id"


@dataclass
class RunIdentity:
    label: str
    arm: str | None = None
    swept: dict[str, str] = field(default_factory=dict)  # the swept keys' values in this job
    group: str | None = None  # the W&B group (a sweep's)

    def name(self, seed: int) -> str:
        """`<label> <short key>=<value>... seed=<seed>`: the swept values that the label
        does not already name (objective and arm choices), then the seed."""
        shown = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in self.swept.items()
                 if key not in (*COMPOSITION_KEYS, "seed")]
        return " ".join([self.label, *shown, f"seed={seed}"])


def sweep_group_name(sweep_dir: Path) -> str:
    """A multirun's W&B group, named after its directory: sweep-<date>_<time>."""
    return "sweep-" + "_".join(Path(sweep_dir).parts[-2:])


def swept_keys(arguments: Sequence[str], sweeper_params: Mapping[str, Any] | None) -> list[str]:
    """The keys a multirun gives more than one value: on its command line (`a=1,2`,
    `x=range(3)`) or in hydra.sweeper.params. Without the leading `+`/`~`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [argument for argument in arguments if "=" in argument and not argument.startswith("-")]
    lines += [f"{key}={value}" for key, value in (sweeper_params or {}).items()]
    parser = OverridesParser.create()
    keys = []
    for line in lines:
        try:
            override = parser.parse_override(line)
        except Exception:  # noqa: BLE001  (Hydra has parsed these already; never fatal here)
            continue
        if override.is_sweep_override() and override.key_or_group not in keys:
            keys.append(override.key_or_group)
    return keys


def job_values(task_overrides: Sequence[str]) -> dict[str, str]:
    """key -> value of a job's own overrides (`+arm=erm5` -> {"arm": "erm5"})."""
    values = {}
    for line in task_overrides:
        key, _, value = line.partition("=")
        values[key.lstrip("+~")] = value
    return values


def multirun_identity(hydra_cfg: Any, label: str, group: str) -> RunIdentity:
    """A sweep job's identity, from the sweep's overrides (the `multirun.yaml` Hydra wrote
    in the sweep directory before the first job: sys.argv no longer holds them once a job
    has pinned it to its own) and the job's own overrides."""
    from omegaconf import OmegaConf

    record = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    sweep_overrides = (list(OmegaConf.load(record).hydra.overrides.task) if record.is_file()
                       else sys.argv[1:])
    values = job_values(list(hydra_cfg.overrides.task))
    keys = swept_keys(sweep_overrides, hydra_cfg.sweeper.get("params"))
    return RunIdentity(label=label, arm=hydra_cfg.runtime.choices.get("arm"),
                       swept={key: values[key] for key in keys if key in values}, group=group)


def run_tags(cfg: Any, identity: RunIdentity, extra: Sequence[str] = ()) -> list[str]:
    """W&B tags a project page filters by: objective, arm, model and data."""
    tags = [f"objective:{cfg.objective.name}", f"model:{cfg.model.name}",
            f"data:{cfg.data.name}"]
    if identity.arm:
        tags.append(f"arm:{identity.arm}")
    return tags + [str(tag) for tag in extra if str(tag) not in tags]


def wandb_run_id(run_dir: Path) -> str:
    """The run's W&B id, kept in the run directory: every attempt of a resumed run logs to
    the same W&B run, so its curves are not split in two."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    from riskalign.runs.artifacts import write_text_atomic

    run_id = secrets.token_hex(4)  # W&B's own ids are 8 characters of [0-9a-z]
    write_text_atomic(path, run_id + "\n")
    return run_id
