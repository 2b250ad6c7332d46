"""Cluster sweeps: the SLURM launcher config, and a real 2-job sweep through submitit's local
executor (the same launcher code, processes instead of sbatch jobs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONF, run_here


def test_slurm_launcher_composes_with_one_task_per_gpu():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                          "hydra.launcher.gpus_per_node=4",
                                          "hydra.launcher.nodes=2"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.nodes) == ("gpu", 4, 2)
    assert launcher.tasks_per_node == 4, "one task per GPU: Lightning takes ranks from SLURM"
    assert launcher.timeout_min > 0


@pytest.mark.subprocess  # submitit runs each job in a process of its own
def test_a_two_job_sweep_runs_through_submitits_local_executor(smoke_env):
    result = run_here("-m", "hydra/launcher=local", "debug=smoke", "objective=dpo,ipo",
                       env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitit 'local' sweep" in result.stdout + result.stderr
    root = smoke_env["RISKALIGN_OUTPUT_ROOT"]
    summaries = sorted(Path(root).glob("multirun/*/*/*/summary.json"))
    objectives = sorted(json.loads(path.read_text())["objective"] for path in summaries)
    assert objectives == ["dpo", "ipo"]
    assert list(Path(root).glob("multirun/*/*/.submitit/*")), "submitit's job folders"
