"""A trained run's own config, for `python -m riskalign.evaluate policy=<run>/policy`.

A run directory records its config twice: `summary.json` (`config`, resolved, written when
the run finished; a resumed run finishes in the directory it continues) and
`.hydra/config.yaml` (as composed when the run started), with the config group options it
chose in `.hydra/hydra.yaml`. Evaluation starts from that config and every override on the
command line still wins. A policy outside a run (a bare HF model) keeps evaluate.yaml's
defaults.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import Container, DictConfig, OmegaConf

from riskalign.config.command_line import CONF
from riskalign.errors import ConfigError

# Blocks of the run beyond evaluate.yaml's that say how its own evaluation ran (device,
# dtypes: riskalign.evaluate.evaluated_dtypes); evaluate.yaml has no defaults for them.
RUN_KEYS = ("trainer", "objective", "reference")


@dataclass(frozen=True)
class RecordedRun:
    """A run's config as it ran, the file it was read from and its config group options."""

    source: Path
    config: DictConfig
    choices: dict[str, str]


def run_directory(policy: str) -> Path:
    """Where a run keeps its records: the parent of its `policy/`."""
    return Path(policy).expanduser().absolute().parent


def find_run(policy: str) -> RecordedRun | None:
    """The run that `policy` belongs to, or None if its parent records no config."""
    run_dir = run_directory(policy)
    recorded = _recorded_config(run_dir, policy)
    if recorded is None:
        return None
    return RecordedRun(*recorded, run_choices(run_dir))


def _recorded_config(run_dir: Path, policy: str) -> tuple[Path, DictConfig] | None:
    """The finished run's resolved config (summary.json), else the one it started with."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        recorded = _json_object(summary)
        if recorded is None:
            raise ConfigError(
                f"policy={policy!r}: its run's {summary} is not a JSON object: must be the "
                "summary a finished run writes (remove it to use .hydra/config.yaml)"
            )
        if isinstance(recorded.get("config"), dict):
            return summary, OmegaConf.create(recorded["config"])
    composed = run_dir / ".hydra" / "config.yaml"
    if composed.is_file():
        return composed, OmegaConf.load(composed)
    return None


def _json_object(path: Path) -> dict | None:
    try:
        recorded = json.loads(path.read_text())
    except ValueError:  # not JSON (or not UTF-8)
        return None
    return recorded if isinstance(recorded, dict) else None


def run_choices(run_dir: Path) -> dict[str, str]:
    """The config group options the run was composed with ({} if Hydra's record is gone)."""
    record = run_dir / ".hydra" / "hydra.yaml"
    if not record.is_file():
        return {}
    choices = OmegaConf.select(OmegaConf.load(record), "hydra.runtime.choices", default={})
    return {group: option for group, option in choices.items() if option is not None}


def evaluate_groups() -> list[str]:
    """The config groups of evaluate.yaml's defaults list (`optional debug` is `debug`)."""
    defaults = OmegaConf.load(CONF / "evaluate.yaml").defaults
    return [str(key).split()[-1] for entry in defaults if isinstance(entry, DictConfig)
            for key in entry]


def with_run_choices(argv: Sequence[str]) -> list[str]:
    """The command line with the run's own options of evaluate's config groups put beside
    `policy=`, for the groups it does not name: Hydra then composes as the run did and
    checks an override such as `reward.weight=0.3` against the run's reward, not
    evaluate.yaml's default. Unchanged unless `policy=` names one directory of a run."""
    from riskalign.config.command_line import parse_overrides

    overrides = parse_overrides(argv) or []
    policy = next((item for item in overrides if item.key_or_group == "policy"), None)
    if policy is None or policy.is_sweep_override():  # each job of a sweep finds its own run
        return list(argv)
    choices = run_choices(run_directory(str(policy.value())))
    named = {item.key_or_group for item in overrides}
    added = [f"{group}={choices[group]}" for group in evaluate_groups()
             if group in choices and group not in named
             and (CONF / group / f"{choices[group]}.yaml").is_file()]  # gone: the run's block
    at = list(argv).index(policy.input_line)  # overrides stay together: argparse wants that
    return [*argv[:at], *added, *argv[at:]]


def with_run_config(cfg: DictConfig, task: Sequence[str]) -> tuple[DictConfig, Path | None]:
    """The config to evaluate with and the run record it came from (None: `cfg` itself).

    `cfg` is what Hydra composed from evaluate.yaml, the run's options and the command line
    `task`. The run's blocks are taken as they ran, then the command line is replayed on
    them: a config group set to another option than the run's takes that block whole from
    `cfg` (a global preset such as debug=smoke is merged on top, as composing does), and
    every value override takes its value from `cfg`, so Hydra's precedence holds."""
    run = find_run(str(cfg.policy))
    if run is None:
        return cfg, None
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    overrides = OverridesParser.create().parse_overrides(list(task))
    recorded, composed = OmegaConf.to_container(run.config), OmegaConf.to_container(cfg)
    # interpolations are kept: a .hydra/config.yaml's resolve against the merged config
    merged = OmegaConf.create({key: recorded.get(key, composed[key]) for key in composed})
    merged.update({key: recorded[key] for key in RUN_KEYS if key in recorded})
    values = []
    for override in overrides:
        if not loader.get_group_options(override.key_or_group):
            values.append(override)
        elif override.value() != run.choices.get(override.key_or_group):
            merged = _with_group(merged, cfg, override)
    for override in values:
        _set_value(merged, cfg, override)
    OmegaConf.set_struct(merged, True)  # as Hydra hands a config over: typos raise
    return merged, run.source


def _with_group(merged: DictConfig, cfg: DictConfig, override) -> DictConfig:
    """`merged` with the option of a config group that `override` chose."""
    group, option = override.key_or_group, override.value()
    if override.is_delete():
        raise ConfigError(
            f"{override.input_line}: a run's config holds the values its options gave and "
            f"none can be taken out: must choose an option ({group}=...)"
        )
    if group in cfg:  # the group's own block: replaced whole, never merged key by key
        merged[group] = OmegaConf.to_container(cfg[group])
        return merged
    from hydra import compose

    preset = compose(config_name=f"{group}/{option}")  # a `_global_` package, e.g. debug
    return OmegaConf.merge(merged, {key: preset[key] for key in preset if key in merged})


def _set_value(merged: DictConfig, cfg: DictConfig, override) -> None:
    """Set (or delete) one key of `merged` as the command line left it in `cfg`."""
    key = override.key_or_group
    if override.is_delete():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(merged, parent) if parent else merged
        if isinstance(node, DictConfig) and leaf in node:
            del node[leaf]
        return
    value = OmegaConf.select(cfg, key)
    if isinstance(value, Container):
        value = OmegaConf.to_container(value, resolve=True)
    OmegaConf.update(merged, key, value, merge=False)
