"""The parameters of an objective: their defaults, their ranges, and the one-line refusals.

A preference objective's parameters are the top-level `beta` and `chunk_size`
and four blocks, each always complete once resolved:

    link:    name, epsilon, gamma, length_normalize
    drift:   measure (null: no drift term), tail_mass, mu, variant, alpha, weighting, normalize
    reducer: name, tau, beta_prime, tail_mass, scope, normalize, weight_cap
    penalty: name (null: no penalty), rho0, form

`resolve` merges partial overrides onto defaults key by key, refuses unknown
keys and out-of-range values with `ObjectiveConfigError`, and returns plain
nested dicts. It touches no tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from riskalign.config.fields import (
    Choice,
    Integer,
    Real,
    boolean,
    declared_settings,
    refuse_unknown,
)
from riskalign.errors import ConfigError
from riskalign.objectives.functional import LINKS, REDUCERS
from riskalign.objectives.tokens import MEASURES, DriftSpec

ROOT = "objective"


class ObjectiveConfigError(ConfigError):
    """A refused objective parameter: one line naming key path, value and allowed range."""


Check = Callable[[str, Any], Any]
Field = tuple[Any, Check]
Schema = dict[str, "Field | dict[str, Field]"]
SPEC = declared_settings(DriftSpec)  # the drift measure's own fields, as DriftSpec checks them

PAIR_SCHEMA: Schema = {
    "beta": (0.1, Real(low=0.0)),
    "chunk_size": (None, Integer(minimum=1, nullable=True)),
    "link": {
        "name": ("sigmoid", Choice(LINKS)),
        "epsilon": (0.1, Real(low=0.0, high=0.5, low_open=False, high_open=True)),
        "gamma": (0.5, Real()),
        "length_normalize": (False, boolean),
    },
    "drift": {
        "measure": (None, Choice(MEASURES, nullable=True)),
        "tail_mass": SPEC["tail_mass"],
        "mu": SPEC["mu"],
        "variant": (2, Integer(options=(1, 2))),
        "alpha": (0.5, Real(low=0.0)),
        "weighting": SPEC["weighting"],
        "normalize": SPEC["normalize"],
    },
    "reducer": {
        "name": ("mean", Choice(REDUCERS)),
        "tau": (0.05, Real(low=0.0)),
        "beta_prime": (1.0, Real(low=0.0)),
        "tail_mass": (0.5, Real(low=0.0, high=1.0)),
        "scope": ("local", Choice(("local", "global"))),
        "normalize": (True, boolean),
        "weight_cap": (None, Real(low=0.0, nullable=True)),
    },
    "penalty": {
        "name": (None, Choice(("wasserstein",), nullable=True)),
        "rho0": (0.01, Real(low=0.0, low_open=False)),
        "form": ("paper", Choice(("paper", "code"))),
    },
}

SFT_SCHEMA: Schema = {
    "rows": ("chosen", Choice(("chosen", "all"))),
    "chunk_size": (None, Integer(minimum=1, nullable=True)),
}

# A block given as null is switched off through this key; other blocks cannot be null.
SWITCHES = {"drift": "measure", "penalty": "name"}


def defaults(schema: Schema) -> dict[str, Any]:
    """The schema's defaults as nested plain dicts."""
    return {
        key: {k: v[0] for k, v in field.items()} if isinstance(field, dict) else field[0]
        for key, field in schema.items()
    }


def resolve(
    schema: Schema, base: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Overrides merged onto base key by key (blocks merge per key), then every value checked.

    base must be complete (as from `defaults`). Raises ObjectiveConfigError.
    """
    checked(refuse_unknown, ROOT, overrides, ["name", *schema])  # name: build()'s own argument
    resolved: dict[str, Any] = {}
    for key, field in schema.items():
        path = f"{ROOT}.{key}"
        value = overrides.get(key, base[key])
        if not isinstance(field, dict):
            resolved[key] = checked(field[1], path, value)
            continue
        block = dict(base[key])
        if value is None and key in SWITCHES:
            block[SWITCHES[key]] = None
        elif isinstance(value, Mapping):
            checked(refuse_unknown, path, value, list(field))
            block.update(value)
        else:
            allowed = "a mapping or null" if key in SWITCHES else "a mapping"
            raise ObjectiveConfigError(
                f"{path}={value!r} is not a block: must be {allowed} of {', '.join(field)}"
            )
        resolved[key] = {k: checked(check, f"{path}.{k}", block[k])
                         for k, (_, check) in field.items()}
    return resolved


def checked(check: Callable[..., Any], *arguments: Any) -> Any:
    """`check(*arguments)`, its refusal raised as an ObjectiveConfigError."""
    try:
        return check(*arguments)
    except ConfigError as error:
        raise ObjectiveConfigError(str(error)) from None
