"""Shared fixtures: composed configs and a pocket-size embedded world built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import riskalign  # noqa: F401  (registers the config resolvers)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=False)


def run_train(*overrides: str, env: dict[str, str] | None = None, timeout: int = 600):
    """`python -m riskalign.train ...` in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "riskalign.train", *overrides],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def smoke_world(tmp_path_factory):
    """The `debug=smoke` world, built into a session cache directory."""
    from riskalign.worlds.reviews import ensure_reviews_world

    cache = tmp_path_factory.mktemp("cache")
    cfg = compose_config("debug=smoke")
    world = ensure_reviews_world(OmegaConf.to_container(cfg.data.world, resolve=True), cache)
    return cache, world


@pytest.fixture
def smoke_env(smoke_world, tmp_path) -> dict[str, str]:
    """Environment for a subprocess run that reuses the session's world."""
    cache, _ = smoke_world
    return {
        "RISKALIGN_CACHE_DIR": str(cache),
        "RISKALIGN_OUTPUT_ROOT": str(tmp_path / "outputs"),
        "WANDB_SILENT": "true",
    }
