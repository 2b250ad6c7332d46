"""The objective configs inherit their defaults, and the schema and the YAML cannot disagree.

conf/objective/base/pair.yaml holds every key of a preference objective with its default;
each preference objective's conf/objective/<name>.yaml names it in its defaults list and
states only what differs. The base is held to the schema (riskalign/objectives/config.py,
PAIR_SCHEMA) key for key and default for default, each named file to keys of the base, and
each composed objective to one that builds. sft and the online objectives are single files:
their keys are held to SFT_SCHEMA and to OnlineSettings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from omegaconf import OmegaConf

from riskalign import objectives
from riskalign.config.command_line import unknown_choice
from riskalign.config.fields import REQUIRED, Block
from riskalign.objectives.config import PAIR_SCHEMA, SFT_SCHEMA
from riskalign.objectives.online import OnlineSettings, online_names
from riskalign.objectives.registry import PREFERENCE
from riskalign.reports.labels import reference_objective
from tests.conftest import CONF, compose_config

OBJECTIVES = CONF / "objective"
BASE = OBJECTIVES / "base" / "pair.yaml"
INHERIT = ["base/pair@_here_", "_self_"]  # the defaults list of every preference objective
NAMES = sorted(path.stem for path in OBJECTIVES.glob("*.yaml"))


def raw(path) -> dict[str, Any]:
    """A config file as written, its defaults list included, nothing composed."""
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(content, dict), f"{path} is not a mapping"
    return content


def leaves(content: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every key that is not a block."""
    for key, value in content.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


def schema_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """{dotted key: default} of an objective schema (a field is (default, check))."""
    flat: dict[str, Any] = {}
    for key, field in schema.items():
        if isinstance(field, dict):
            flat.update({f"{key}.{k}": v[0] for k, v in field.items()})
        else:
            flat[key] = field[0]
    return flat


def settings_defaults(settings: type, prefix: str = "") -> dict[str, Any]:
    """{dotted key: default} of a settings dataclass, its blocks descended into."""
    flat: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        check = field.metadata["check"]
        if isinstance(check, Block):
            flat.update(settings_defaults(check.settings, f"{prefix}{field.name}."))
        else:
            flat[f"{prefix}{field.name}"] = field.default
    return flat


def same_keys(file_keys: set[str], schema_keys: set[str], where: str) -> None:
    only_file, only_schema = sorted(file_keys - schema_keys), sorted(schema_keys - file_keys)
    assert not only_file and not only_schema, (
        f"{where}: keys only in the YAML {only_file}, only in the schema {only_schema}"
    )


def same_default(path: str, value: Any, default: Any, where: str) -> None:
    # type too: 1 and 1.0, 1 and True are equal to ==, not the same default in a config
    assert value == default and type(value) is type(default), (
        f"{where}: {path}={value!r} in the YAML, {default!r} in the schema"
    )


def composed(name: str) -> dict[str, Any]:
    """The objective block as the trainer composes it (python -m riskalign.train objective=…)."""
    block = OmegaConf.to_container(compose_config(f"objective={name}").objective, resolve=True)
    assert isinstance(block, dict)
    return block


# ---- the base and the schema -------------------------------------------------------------------


def test_the_base_has_every_key_of_the_schema_and_no_other():
    base = raw(BASE)
    assert "defaults" not in base, "the base inherits from nothing"
    assert OmegaConf.is_missing(OmegaConf.load(BASE), "name"), "each objective names itself"
    found = {path for path, _ in leaves(base)} - {"name"}
    same_keys(found, set(schema_defaults(PAIR_SCHEMA)), "base/pair.yaml vs PAIR_SCHEMA")


def test_the_base_gives_the_schemas_defaults():
    defaults = schema_defaults(PAIR_SCHEMA)
    for path, value in leaves(raw(BASE)):
        if path != "name" and defaults[path] is not REQUIRED:
            same_default(path, value, defaults[path], "base/pair.yaml vs PAIR_SCHEMA")


def test_the_schema_blocks_are_the_base_blocks():
    """A key that is a block on one side is a block on the other (not a leaf holding a dict)."""
    base = raw(BASE)
    for key, field in PAIR_SCHEMA.items():
        assert isinstance(base[key], dict) == isinstance(field, dict), key


# ---- each named objective over the base --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PREFERENCE))
def test_a_preference_objective_states_only_what_differs_from_the_base(name):
    content = raw(OBJECTIVES / f"{name}.yaml")
    assert content.pop("defaults", None) == INHERIT, f"{name}.yaml must start from the base"
    assert content.pop("name") == name
    base = dict(leaves(raw(BASE)))
    for path, value in leaves(content):
        assert path in base, f"{name}.yaml sets {path}, a key the base does not have"
        assert value != base[path] or type(value) is not type(base[path]), (
            f"{name}.yaml repeats the base's {path}={value!r}: state only what differs"
        )


def test_sft_has_every_key_of_its_schema_with_its_defaults():
    content = raw(OBJECTIVES / "sft.yaml")
    assert content.pop("name") == "sft"
    defaults = schema_defaults(SFT_SCHEMA)
    same_keys(set(dict(leaves(content))), set(defaults), "sft.yaml vs SFT_SCHEMA")
    for path, value in leaves(content):
        same_default(path, value, defaults[path], "sft.yaml vs SFT_SCHEMA")


@pytest.mark.parametrize("name", online_names())
def test_an_online_objective_has_every_setting_and_no_other(name):
    """Their defaults are the paper's (GPT-2, IMDb), not OnlineSettings': keys only."""
    content = raw(OBJECTIVES / f"{name}.yaml")
    same_keys(set(dict(leaves(content))), set(settings_defaults(OnlineSettings)),
              f"{name}.yaml vs OnlineSettings")


def test_every_file_of_the_group_is_one_of_those_checked_here():
    assert NAMES == sorted([*PREFERENCE, "sft", *online_names()])


# ---- the composed objectives -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_composed_objective_is_complete_and_builds(name):
    params = composed(name)
    assert params["name"] == name
    if name in online_names():  # they configure the online module, not a loss
        assert OnlineSettings.from_config(params).name == name
        return
    objective = objectives.build(**params)
    # complete: every key the build resolves is in the composed block, at the registry's value
    assert params == objective.config == objectives.build(name).config


@pytest.mark.parametrize("name", NAMES)
def test_run_labels_read_the_objective_as_hydra_composes_it(name):
    assert reference_objective(name) == composed(name)


def test_overrides_reach_the_inherited_keys():
    params = OmegaConf.to_container(compose_config(
        "objective=radpo", "objective.beta=0.2", "objective.reducer.name=kl_dro",
        "objective.drift.tail_mass=0.99").objective)
    assert objectives.build(**params).config == objectives.build(
        "radpo", beta=0.2, reducer={"name": "kl_dro"}, drift={"tail_mass": 0.99}).config


def test_the_base_is_not_an_objective_to_choose():
    refusal = unknown_choice(["objective=base/pair"])
    assert refusal and refusal.startswith("objective=base/pair is not one of: cdpo, ")
    assert "base" not in refusal.split(": ", 1)[1]
