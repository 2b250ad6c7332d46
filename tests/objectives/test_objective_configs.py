"""The registry, its validation, and the config files conf/objective/*.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from riskalign import objectives
from riskalign.objectives import ObjectiveConfigError
from riskalign.objectives.online import online_names

CONF = Path(__file__).resolve().parents[2] / "conf" / "objective"


def test_names_are_the_named_objectives_of_the_spec() -> None:
    assert objectives.names() == [
        "dpo", "ipo", "cdpo", "rdpo", "slic", "simpo", "tdpo",
        "radpo", "kldpo", "wdpo", "drdpo", "cvar_dpo", "sft",
    ]  # fmt: skip


def test_there_is_one_config_file_per_named_objective() -> None:
    expected = sorted(objectives.names() + online_names())  # + PPO and RA-RLHF (online)
    assert sorted(path.stem for path in CONF.glob("*.yaml")) == expected


@pytest.mark.parametrize("name", online_names())
def test_the_online_config_files_build_their_settings(name: str) -> None:
    from riskalign.objectives.online import OnlineSettings

    # they configure the online module, not a loss
    params = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert OnlineSettings.from_config(params).name == name


@pytest.mark.parametrize("name", objectives.names())
def test_each_config_file_lists_exactly_the_defaults_and_builds(name: str) -> None:
    # composed as the trainer composes it: the file over the base its defaults list names
    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        config = OmegaConf.to_container(compose("train", overrides=[f"objective={name}"]).objective)
    assert isinstance(config, dict) and config["name"] == name
    objective = objectives.build(**config)
    assert config == objective.config == objectives.build(name).config, (
        f"{name}.yaml drifted from the registry"
    )


def test_build_takes_back_its_own_config() -> None:
    objective = objectives.build(
        "radpo", drift={"measure": "erm", "mu": 5}, reducer={"name": "kl_dro"}
    )
    assert objectives.build(**objective.config).config == objective.config


@pytest.mark.parametrize(
    ("name", "checks"),
    [
        (
            "dpo",
            {
                "link.name": "sigmoid",
                "drift.measure": None,
                "reducer.name": "mean",
                "penalty.name": None,
            },
        ),
        ("ipo", {"link.name": "ipo"}),
        ("cdpo", {"link.name": "cdpo", "link.epsilon": 0.1}),
        ("rdpo", {"link.name": "robust", "link.epsilon": 0.1}),
        ("slic", {"link.name": "hinge"}),
        ("simpo", {"link.name": "simpo", "beta": 2.0, "link.gamma": 0.5}),
        ("tdpo", {"drift.measure": "mean", "drift.variant": 2, "drift.alpha": 0.5}),
        ("radpo", {"drift.measure": "cvar", "drift.tail_mass": 0.95, "drift.variant": 2}),
        ("kldpo", {"reducer.name": "kl_dro", "reducer.tau": 0.05}),
        ("wdpo", {"penalty.name": "wasserstein", "penalty.rho0": 0.01, "penalty.form": "paper"}),
        ("drdpo", {"reducer.name": "dr_dpo", "reducer.beta_prime": 1.0}),
        ("cvar_dpo", {"reducer.name": "cvar", "reducer.tail_mass": 0.5}),
        ("sft", {"rows": "chosen"}),
    ],
)
def test_defaults_are_those_of_the_spec(name: str, checks: dict[str, Any]) -> None:
    config = objectives.build(name).config
    for path, expected in checks.items():
        value: Any = config
        for key in path.split("."):
            value = value[key]
        assert value == expected, f"{name}: {path} = {value!r}, the spec says {expected!r}"
    if name != "sft":
        assert config["beta"] == (2.0 if name == "simpo" else 0.1)


def test_blocks_merge_key_by_key_and_null_switches_a_block_off() -> None:
    config = objectives.build("radpo", drift={"measure": "erm"}).config
    assert config["drift"]["tail_mass"] == 0.95 and config["drift"]["measure"] == "erm"
    assert objectives.build("radpo", drift=None).config["drift"]["measure"] is None
    assert objectives.build("wdpo", penalty=None).config["penalty"]["name"] is None
    assert not objectives.build("wdpo", penalty=None).requires_input_embeddings


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("dpo", {"beta": 0}, "objective.beta=0 is out of range: must be > 0"),
        ("dpo", {"beta": -0.1}, "objective.beta=-0.1 is out of range: must be > 0"),
        ("dpo", {"beta": "big"}, "objective.beta='big' is not a finite number: must be > 0"),
        ("dpo", {"beta": True}, "objective.beta=True is not a finite number: must be > 0"),
        (
            "radpo",
            {"drift": {"tail_mass": 1.5}},
            "objective.drift.tail_mass=1.5 is out of range: must be in (0, 1]",
        ),
        (
            "radpo",
            {"drift": {"tail_mass": 0.0}},
            "objective.drift.tail_mass=0.0 is out of range: must be in (0, 1]",
        ),
        ("radpo", {"drift": {"mu": 0}}, "objective.drift.mu=0 is out of range: must be > 0"),
        (
            "radpo",
            {"drift": {"alpha": -1}},
            "objective.drift.alpha=-1 is out of range: must be > 0",
        ),
        (
            "radpo",
            {"drift": {"variant": 3}},
            "objective.drift.variant=3 is out of range: must be one of 1, 2",
        ),
        (
            "radpo",
            {"drift": {"measure": "var"}},
            "objective.drift.measure='var' is not one of: null, mean, cvar, erm",
        ),
        (
            "radpo",
            {"drift": {"weighting": "flat"}},
            "objective.drift.weighting='flat' is not one of: probability, uniform",
        ),
        (
            "cdpo",
            {"link": {"epsilon": 0.5}},
            "objective.link.epsilon=0.5 is out of range: must be in [0, 0.5)",
        ),
        (
            "cdpo",
            {"link": {"epsilon": -0.1}},
            "objective.link.epsilon=-0.1 is out of range: must be in [0, 0.5)",
        ),
        (
            "dpo",
            {"link": {"name": "logistic"}},
            "objective.link.name='logistic' is not one of: sigmoid, cdpo, robust, ipo, hinge,",
        ),
        ("kldpo", {"reducer": {"tau": 0}}, "objective.reducer.tau=0 is out of range: must be > 0"),
        (
            "drdpo",
            {"reducer": {"beta_prime": -2}},
            "objective.reducer.beta_prime=-2 is out of range: must be > 0",
        ),
        (
            "dpo",
            {"reducer": {"name": "foo"}},
            "objective.reducer.name='foo' is not one of: mean, kl_dro, dr_dpo, cvar",
        ),
        (
            "dpo",
            {"reducer": {"scope": "world"}},
            "objective.reducer.scope='world' is not one of: local, global",
        ),
        (
            "kldpo",
            {"reducer": {"weight_cap": 0}},
            "objective.reducer.weight_cap=0 is out of range: must be > 0 or null",
        ),
        (
            "wdpo",
            {"penalty": {"rho0": -0.01}},
            "objective.penalty.rho0=-0.01 is out of range: must be >= 0",
        ),
        (
            "wdpo",
            {"penalty": {"form": "exact"}},
            "objective.penalty.form='exact' is not one of: paper, code",
        ),
        (
            "dpo",
            {"penalty": {"name": "l2"}},
            "objective.penalty.name='l2' is not one of: null, wasserstein",
        ),
        ("dpo", {"chunk_size": 0}, "objective.chunk_size=0 is out of range: must be >= 1 or null"),
        (
            "dpo",
            {"gamma": 1},
            "objective.gamma=1 is not a known key: allowed keys are name, beta, chunk_size, link",
        ),
        (
            "dpo",
            {"drift": {"tail": 0.9}},
            "objective.drift.tail=0.9 is not a known key: allowed keys are measure",
        ),
        (
            "dpo",
            {"link": None},
            "objective.link=None is not a block: must be a mapping of name, epsilon",
        ),
        (
            "dpo",
            {"link": "sigmoid"},
            "objective.link='sigmoid' is not a block: must be a mapping of name",
        ),
        (
            "sft",
            {"beta": 0.1},
            "objective.beta=0.1 is not a known key: allowed keys are name, rows, chunk_size",
        ),
        ("sft", {"rows": "rejected"}, "objective.rows='rejected' is not one of: chosen, all"),
        ("orpo", {}, "objective.name='orpo' is not one of: dpo, ipo, cdpo"),
        # out of range, and names that are not one of the choices
        ("dpo", {"beta": 0.0}, "objective.beta=0.0 is out of range: must be > 0"),
        ("dpo", {"beta": -1}, "objective.beta=-1 is out of range: must be > 0"),
        ("radpo", {"drift": {"tail_mass": 0.0}}, "objective.drift.tail_mass=0.0 is out of range"),
        ("radpo", {"drift": {"tail_mass": 1.5}}, "objective.drift.tail_mass=1.5 is out of range"),
        ("radpo", {"drift": {"measure": "erm", "mu": 0.0}}, "objective.drift.mu=0.0 is out of"),
        ("cdpo", {"link": {"epsilon": 0.5}}, "objective.link.epsilon=0.5 is out of range"),
        ("kldpo", {"reducer": {"tau": 0.0}}, "objective.reducer.tau=0.0 is out of range"),
        ("drdpo", {"reducer": {"beta_prime": 0.0}}, "objective.reducer.beta_prime=0.0 is out"),
        ("wdpo", {"penalty": {"rho0": -0.1}}, "objective.penalty.rho0=-0.1 is out of range"),
        ("radpo", {"drift": {"measure": "var"}}, "objective.drift.measure='var' is not one of"),
        ("dpo", {"link": {"name": "logistic"}}, "objective.link.name='logistic' is not one of"),
        ("dpo", {"reducer": {"name": "median"}}, "objective.reducer.name='median' is not one of"),
    ],
)
def test_invalid_parameters_are_refused_in_one_line(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ObjectiveConfigError) as refusal:
        objectives.build(name, **params)
    text = str(refusal.value)
    assert text.startswith(message), f"got {text!r}"
    assert "\n" not in text, "the message must be one line"
    assert isinstance(refusal.value, ValueError)


# ---- composition with Hydra, as the trainer does it ----------------------------------------


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A primary config with `objective: dpo` in its defaults, next to a copy of conf/objective."""
    root = tmp_path_factory.mktemp("conf")
    shutil.copytree(CONF, root / "objective")
    (root / "train.yaml").write_text("defaults:\n  - objective: dpo\n  - _self_\n")
    return root


def compose_objective(config_dir: Path, overrides: list[str]) -> objectives.Objective:
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose("train", overrides=overrides)
    return objectives.build(**OmegaConf.to_container(config.objective))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["objective=radpo", "objective.reducer.name=kl_dro"],
            {"drift.measure": "cvar", "reducer.name": "kl_dro"},
        ),
        (
            ["objective=radpo", "objective.drift.measure=erm", "objective.drift.mu=5"],
            {"drift.measure": "erm", "drift.mu": 5.0, "drift.tail_mass": 0.95},
        ),
        (
            ["objective=dpo", "objective.penalty.name=wasserstein"],
            {"penalty.name": "wasserstein", "penalty.rho0": 0.01},
        ),
        (
            ["objective=dpo", "objective.drift.measure=cvar"],
            {"drift.measure": "cvar", "drift.variant": 2},
        ),
        (
            ["objective=wdpo", "objective.penalty.form=code", "objective.beta=0.01"],
            {"penalty.form": "code"},
        ),
        (
            [
                "objective=kldpo",
                "objective.reducer.normalize=false",
                "objective.reducer.weight_cap=10",
            ],
            {},
        ),
        (["objective=sft", "objective.rows=all"], {"rows": "all"}),
    ],
)
def test_hydra_overrides_without_plus(
    config_dir: Path, overrides: list[str], expected: dict[str, Any]
) -> None:
    config = compose_objective(config_dir, overrides).config
    for path, value in expected.items():
        node: Any = config
        for key in path.split("."):
            node = node[key]
        assert node == value, f"{overrides}: {path} = {node!r}"


def test_hydra_override_with_a_bad_value_is_refused(config_dir: Path) -> None:
    with pytest.raises(
        ObjectiveConfigError, match=r"objective\.drift\.tail_mass=2\.0 is out of range"
    ):
        compose_objective(config_dir, ["objective=radpo", "objective.drift.tail_mass=2.0"])
