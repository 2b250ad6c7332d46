"""The named objectives of docs/objectives.md §5: each is a few overrides of the defaults."""

from __future__ import annotations

from typing import Any

from riskalign.config.fields import Choice
from riskalign.objectives.config import (
    PAIR_SCHEMA,
    ROOT,
    SFT_SCHEMA,
    checked,
    defaults,
    resolve,
)
from riskalign.objectives.objective import Objective, PreferenceObjective, SFTObjective

# name → overrides of the preference defaults (config.PAIR_SCHEMA)
PREFERENCE: dict[str, dict[str, Any]] = {
    "dpo": {},
    "ipo": {"link": {"name": "ipo"}},
    "cdpo": {"link": {"name": "cdpo"}},
    "rdpo": {"link": {"name": "robust"}},
    "slic": {"link": {"name": "hinge"}},
    "simpo": {"beta": 2.0, "link": {"name": "simpo"}},
    "tdpo": {"drift": {"measure": "mean"}},
    "radpo": {"drift": {"measure": "cvar"}},
    "kldpo": {"reducer": {"name": "kl_dro"}},
    "wdpo": {"penalty": {"name": "wasserstein"}},
    "drdpo": {"reducer": {"name": "dr_dpo"}},
    "cvar_dpo": {"reducer": {"name": "cvar"}},
}


def names() -> list[str]:
    """Every named objective, in the order of docs/objectives.md §5."""
    return [*PREFERENCE, "sft"]


def build(name: str, **params: Any) -> Objective:
    """The objective `name` with `params` overriding its defaults (blocks merge key by key).

    build(name) gives the defaults of docs/objectives.md §5; build(**config) takes a
    whole config file (conf/objective/<name>.yaml) or an Objective's `config`.
    Raises ObjectiveConfigError, before any tensor work, on an unknown name or
    key or an out-of-range value.
    """
    checked(Choice(tuple(names())), f"{ROOT}.name", name)
    if name == "sft":
        return SFTObjective(
            name, {"name": name, **resolve(SFT_SCHEMA, defaults(SFT_SCHEMA), params)}
        )
    base = resolve(PAIR_SCHEMA, defaults(PAIR_SCHEMA), PREFERENCE[name])
    return PreferenceObjective(name, {"name": name, **resolve(PAIR_SCHEMA, base, params)})
