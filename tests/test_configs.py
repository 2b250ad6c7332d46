"""Every config composes; the CLI prints configs and help; unknown options are listed."""

from __future__ import annotations

import pytest

from riskalign.config.checks import check_config
from riskalign.errors import ConfigError
from tests.conftest import CONF, check_here, compose_config

GROUPS = ("objective", "model", "data", "reward", "trainer", "logger", "eval")


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{group}={option}" for group in GROUPS for option in _options(group)]
    + [f"experiment={option}" for option in _options("experiment")]
    + [f"debug={option}" for option in _options("debug")],
)
def test_every_config_composes(override):
    cfg = compose_config(override, "data.path=/some/pairs.jsonl")
    for group in GROUPS:
        assert group in cfg, f"{override}: group {group} missing from the composed config"
    assert cfg.paths.cache_dir and cfg.paths.output_root


def test_defaults_are_the_embedded_world_with_dpo():
    cfg = compose_config()
    assert (cfg.objective.name, cfg.model.name, cfg.data.name) == ("dpo", "tiny", "reviews")
    check_config(cfg)


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.max_length=16", "data.max_length=16 must be greater than data.max_prompt_length=16"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("eval.num_prompts=-3", "eval.num_prompts=-3"),
        ("eval.tail_fraction=0", "eval.tail_fraction=0"),
        ("logger.wandb.mode=sometimes", "logger.wandb.mode='sometimes'"),
        ("optim.lr=0", "optim.lr=0"),
    ],
)
def test_check_config_refuses_with_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(override))
    assert key in str(error.value) and "\n" not in str(error.value)


def test_cli_prints_composed_config_and_help(smoke_env):
    job = check_here("--cfg", "job", "objective=dpo", env=smoke_env)
    assert job.returncode == 0, job.stderr
    assert "objective:" in job.stdout and "name: dpo" in job.stdout
    help_text = check_here("--help", env=smoke_env)
    assert help_text.returncode == 0, help_text.stderr
    for group in GROUPS:
        assert f"{group}: " in help_text.stdout, f"--help does not list the {group} group"


def test_unknown_option_lists_the_valid_ones(smoke_env):
    # train's own refusals: tests/test_bad_input.py; evaluate's command line refuses alike
    result = check_here("model=gpt9", env=smoke_env, module="riskalign.evaluate")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("riskalign.evaluate: error: model=gpt9 is not one of: "
                                     + ", ".join(_options("model")))


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_passes_the_config_checks(experiment, monkeypatch):
    """Paper configs are refused for nothing but what only exists on their machines."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # their GPUs
    cfg = compose_config(f"experiment={experiment}")
    check_config(cfg)
    assert cfg.objective.name and cfg.model.block_class


def test_the_other_entry_points_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        pairs = compose("pairs", overrides=["debug=smoke"])
        evaluate = compose("evaluate", overrides=["policy=/some/policy"])
    assert pairs.pairs.samples_per_prompt >= 2 and pairs.output
    assert evaluate.data.name == "alpacaeval" and evaluate.policy == "/some/policy"
