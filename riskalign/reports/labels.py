"""A readable name for a run, derived from its resolved objective composition.

    dpo                        radpo · cvar 0.95          kldpo · kl_dro τ=0.05
    dpo + kl_dro τ=0.05        radpo · erm μ=5            wdpo · wasserstein ρ₀=0.01
    ra_rlhf · α=0.4            tdpo                       cvar_dpo · batch cvar 0.5

The objective's own config (`conf/objective/<name>.yaml` over the base its defaults list
names, as Hydra composes it) says which components belong to it: a component in a slot
(drift, reducer, penalty, risk) that config already uses is joined with " · ", one composed
onto an objective that leaves the slot empty (and a swapped link) with " + ". β is left
out (sweeps vary it as the strength), and so is a component the name alone implies (tdpo's
mean drift, ppo's α=1). A run's `label` config, when set, wins.

Imported by the training entry point to name W&B runs, so it stays light: OmegaConf only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from riskalign.config import CONF

OBJECTIVE_CONF = CONF / "objective"

OWN, COMPOSED = " · ", " + "


def run_label(config: Mapping) -> str:
    """The run's `label` (a tag set for an arm of an experiment) or else its objective's."""
    label = config.get("label")
    if label not in (None, ""):
        return str(label)
    return objective_label(config.get("objective") or {})


def objective_label(objective_cfg: Mapping) -> str:
    name = str(objective_cfg.get("name") or "objective")
    reference = reference_objective(name)
    own, composed = [], []
    for describe, uses_slot in SLOTS:
        text = describe(objective_cfg, reference or {})
        if text is None:
            continue
        # without a reference file nothing can be told apart: all of it is the objective's
        if reference is None or uses_slot(reference):
            own.append(text)
        else:
            composed.append(text)
    return COMPOSED.join([OWN.join([name, *own]), *composed])


@lru_cache(maxsize=64)
def _load_reference(name: str) -> dict[str, Any] | None:
    path = OBJECTIVE_CONF / f"{name}.yaml"
    if not re.fullmatch(r"[\w.-]+", name) or not path.is_file():
        return None
    return OmegaConf.to_container(_composed(path), resolve=False)


def reference_objective(name: str) -> dict[str, Any] | None:
    """The objective's shipped config, composed as Hydra composes it (its base with the
    file's own keys over it), or None for one this repository does not define."""
    return _load_reference(name)


HERE = "@_here_"


def _composed(path: Path) -> Any:
    """A config file of the objective group merged over the configs its defaults list names.

    Only the form the shipped files use is read: `_self_` and `<config>@_here_`, a path
    relative to the file's folder (tests/test_objective_config_inheritance.py holds the
    result equal to Hydra's composition).
    """
    content = OmegaConf.load(path)
    entries = content.pop("defaults", [])
    if "_self_" not in entries:
        entries = [*entries, "_self_"]  # Hydra's place for it when unlisted
    parts = []
    for entry in entries:
        if entry == "_self_":
            parts.append(content)
        elif isinstance(entry, str) and entry.endswith(HERE) and not entry.startswith("/"):
            parts.append(_composed(path.parent / f"{entry[:-len(HERE)]}.yaml"))
        else:
            raise ValueError(f"{path}: defaults entry {entry!r} is not read here: allowed are "
                             f"_self_ and <config>{HERE}")
    return OmegaConf.merge(*parts)


def _number(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _section(cfg: Mapping, key: str) -> Mapping:
    section = cfg.get(key)
    return section if isinstance(section, Mapping) else {}


def _drift(cfg: Mapping, reference: Mapping) -> str | None:
    drift = _section(cfg, "drift")
    measure = drift.get("measure")
    if measure is None:
        # only worth saying when the objective normally has a drift term
        return "no drift" if _section(reference, "drift").get("measure") is not None else None
    if measure == "cvar":
        return f"cvar {_number(drift.get('tail_mass'))}"
    if measure == "erm":
        return f"erm μ={_number(drift.get('mu'))}"
    if measure == "mean" and _section(reference, "drift").get("measure") == "mean":
        return None  # tdpo's definition: its name says it
    return f"{measure} drift"


def _reducer(cfg: Mapping, reference: Mapping) -> str | None:
    reducer = _section(cfg, "reducer")
    name = reducer.get("name")
    if name in (None, "mean"):
        own = _section(reference, "reducer").get("name")
        return "mean reducer" if own not in (None, "mean") else None
    if name == "kl_dro":
        return f"kl_dro τ={_number(reducer.get('tau'))}"
    if name == "dr_dpo":
        return f"dr_dpo β′={_number(reducer.get('beta_prime'))}"
    if name == "cvar":
        return f"batch cvar {_number(reducer.get('tail_mass'))}"
    return str(name)


def _penalty(cfg: Mapping, reference: Mapping) -> str | None:
    penalty = _section(cfg, "penalty")
    name = penalty.get("name")
    if name is None:
        return "no penalty" if _section(reference, "penalty").get("name") is not None else None
    if name == "wasserstein":
        return f"wasserstein ρ₀={_number(penalty.get('rho0'))}"
    return str(name)


def _risk(cfg: Mapping, reference: Mapping) -> str | None:
    """Online objectives: α < 1 trains on the worst α of episodes; α = 1 is plain PPO."""
    alpha = _section(cfg, "risk").get("alpha")
    if alpha is None:
        return None
    own = _section(reference, "risk").get("alpha")
    if _number(alpha) == "1" and (own is None or _number(own) == "1"):
        return None
    return f"α={_number(alpha)}"


def _link(cfg: Mapping, reference: Mapping) -> str | None:
    """A link swapped away from the objective's own (dpo with link.name=ipo)."""
    name = _section(cfg, "link").get("name")
    own = _section(reference, "link").get("name")
    if name is None or own is None or name == own:
        return None
    return f"{name} link"


# (describe the run's component, does the objective's own config use this slot?); a
# swapped link is always a composition: every objective has one, its name implies which
SLOTS = (
    (_drift, lambda ref: _section(ref, "drift").get("measure") is not None),
    (_reducer, lambda ref: _section(ref, "reducer").get("name") not in (None, "mean")),
    (_penalty, lambda ref: _section(ref, "penalty").get("name") is not None),
    (_risk, lambda ref: _section(ref, "risk").get("alpha") is not None),
    (_link, lambda ref: False),
)
