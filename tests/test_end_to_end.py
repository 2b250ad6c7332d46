"""`python -m riskalign.train` end to end on the pocket-size world, and its refusals. The
runs go through the entry point in this process (`run_here`, `check_here`) but where the
processes are the point: runs started together, the process token."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from tests.conftest import assert_refused, check_here, run_here


def _single_run_dir(outputs):
    runs = [path.parent for path in outputs.glob("runs/*/*/.hydra")]
    assert len(runs) == 1, f"expected one run dir, found {runs}"
    return runs[0]


@pytest.mark.subprocess  # W&B's service
def test_short_run_writes_summary_metrics_and_an_offline_wandb_run(smoke_env, tmp_path):
    result = run_here("debug=smoke", "logger.wandb.mode=offline", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _single_run_dir(tmp_path / "outputs")

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["objective"] == "dpo" and summary["steps"] == 4
    # the default cadence: eval.num_points=5 evaluations spread from step 0 to the last
    assert [point["step"] for point in summary["curve"]] == [0, 1, 2, 3, 4]
    for point in (summary["reference"], summary["final"]):
        for key in ("reward_mean", "reward_tail", "kl"):
            assert math.isfinite(point[key]), f"{key} is not finite: {point}"
        assert point["reward_tail"] <= point["reward_mean"]
    assert summary["reference"]["kl"] == 0.0 and summary["final"]["kl"] > 0.0

    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert any(row.get("rewards/accuracies") for row in rows), "training metrics not in the CSV"
    assert any(row.get("eval/reward_mean") for row in rows), "eval metrics not in the CSV"

    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, f"expected one W&B offline run, found {offline_runs}"
    assert (run_dir / "policy" / "config.json").is_file()
    assert "reference" in result.stdout and "policy" in result.stdout  # the closing table


# The refusals of bad input: tests/test_bad_input.py (which also runs one on the real command
# line, test_in_process_runs_print_what_the_command_line_prints).


def test_unknown_objective_fails_with_the_valid_names(smoke_env):
    result = check_here("objective=nonexistent", env=smoke_env)
    assert_refused(result, "objective=nonexistent is not one of: cdpo, cvar_dpo, dpo, drdpo")


def test_dataset_missing_chosen_is_refused_before_models_load(smoke_world, refused, tmp_path):
    bad = tmp_path / "no_chosen"
    DatasetDict(
        train=Dataset.from_dict({"prompt": ["the movie was"], "rejected": ["bad ."]}),
        test=Dataset.from_dict({"prompt": ["the plot was"], "rejected": ["dull ."]}),
    ).save_to_disk(str(bad))
    refused(["data=local", f"data.path={bad}", f"model.name_or_path={smoke_world[1].model_dir}",
             "data.max_length=64", "data.max_prompt_length=16"], "chosen", str(bad))


def test_invalid_objective_parameter_is_refused_before_anything_loads(tmp_path):
    # No world, no cache: the refusal must come from the composed config alone.
    env = {"RISKALIGN_CACHE_DIR": str(tmp_path / "empty"), "RISKALIGN_OUTPUT_ROOT": str(tmp_path)}
    result = check_here("objective=radpo", "objective.drift.tail_mass=1.5", env=env)
    assert_refused(result, "objective.drift.tail_mass=1.5", "(0, 1]")
    assert not (tmp_path / "empty").exists(), "nothing may be built for a refused config"


# Bad-input table (tests/test_bad_input.py), case 22: W&B online without credentials.
@pytest.mark.subprocess  # W&B's service
def test_wandb_online_without_credentials_falls_back_to_offline(smoke_env, tmp_path,
                                                                monkeypatch):
    home = tmp_path / "home"  # no ~/.netrc, no WANDB_API_KEY
    home.mkdir()
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    result = run_here("debug=smoke", "logger.wandb.mode=online",
                      env={**smoke_env, "HOME": str(home)})
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert log.count("W&B: logger.wandb.mode=online but no API key") == 1
    root = Path(smoke_env["RISKALIGN_OUTPUT_ROOT"])
    (run_dir,) = [path.parent for path in root.rglob("summary.json")]
    assert list((run_dir / "wandb").glob("offline-run-*")), "the offline W&B run is missing"


def test_runs_started_together_get_their_own_directories(smoke_env, tmp_path):
    """Two processes in the same second (a job array, a shell loop) once shared one
    `runs/<date>/<time>` directory: mixed metrics.csv, one run's summary beside the other's
    overrides. Each process's directory now ends in a token of its own."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    processes = [subprocess.Popen(
        [sys.executable, "-m", "riskalign.train", "debug=smoke", "trainer.max_steps=1",
         f"seed={seed}"], cwd=REPO, env={**os.environ, **smoke_env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    runs = sorted(path.parent for path in (tmp_path / "outputs").glob("runs/*/*/summary.json"))
    assert len(runs) == 2, runs
    seeds = sorted(json.loads((run / "summary.json").read_text())["seed"] for run in runs)
    assert seeds == [0, 1]
    for run in runs:
        assert len((run / "metrics.csv").read_text().splitlines()) > 1


def test_the_process_token_is_fixed_within_a_process_and_differs_between_them():
    import subprocess
    import sys

    from omegaconf import OmegaConf

    import riskalign  # noqa: F401  (registers the resolvers)

    config = OmegaConf.create({"a": "${process_token:}", "b": "x-${process_token:}"})
    assert config.b == f"x-{config.a}" and len(config.a) == 4
    script = "import riskalign.config.resolvers as r; print(r.process_token())"
    others = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True).stdout.strip() for _ in range(3)}
    assert len(others | {config.a}) >= 3, "tokens of separate processes should differ"
