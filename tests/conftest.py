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


def run_train(*overrides: str, env: dict[str, str] | None = None, timeout: int = 600,
              module: str = "riskalign.train"):
    """`python -m riskalign.train ...` (or another entry point) in a subprocess, as a user
    would run it."""
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_refused(result, *fragments: str) -> str:
    """Exit code 2 and exactly one `riskalign: error:` line on stderr (no traceback), holding
    every fragment; returns that line. `result` as `subprocess.run` returns it."""
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr[-2000:]}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("riskalign: error:")]
    assert len(errors) == 1, f"expected one error line, got: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


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
