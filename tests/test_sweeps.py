"""Multirun sweeps: one W&B group, every job its own run, failures recorded, a frontier report."""

from __future__ import annotations

import csv
import json
import math

import pytest
from datasets import load_from_disk
from matplotlib.image import imread

from riskalign.frontier import main as frontier_main
from riskalign.frontier import pareto_front
from tests.conftest import run_here


def _sweep_dir(outputs):
    sweeps = [path.parent for path in outputs.glob("multirun/*/*/multirun.yaml")]
    assert len(sweeps) == 1, f"expected one sweep dir, found {sweeps}"
    return sweeps[0]


@pytest.mark.subprocess  # W&B's service
def test_two_by_two_sweep_gives_four_wandb_runs_in_one_group_and_a_frontier(smoke_env, tmp_path,
                                                                          capsys):
    result = run_here("-m", "debug=smoke", "logger.wandb.mode=offline", "eval.every_n_steps=2",
                       "objective=dpo,tdpo", "objective.beta=0.1,0.5", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _sweep_dir(tmp_path / "outputs")
    group = "sweep-" + "_".join(sweep.parts[-2:])

    wandb_files = sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 4, f"expected 4 W&B offline runs, found {wandb_files}"
    assert len({path.name for path in wandb_files}) == 4, "W&B runs must have distinct ids"
    for path in wandb_files:
        assert group.encode() in path.read_bytes(), f"{path} is not in W&B group {group}"
    # short names (label, swept values, seed; not the constant overrides), tags, job type,
    # and each evaluation's completions as a table
    job = sweep / "3"  # objective=tdpo objective.beta=0.5
    record = next(job.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    for fragment in (b"tdpo beta=0.5 seed=0", b"objective:tdpo", b"model:tiny",
                     b"data:reviews", b"eval/samples"):
        assert fragment in record, f"{fragment!r} not in the W&B run of job 3"

    capsys.readouterr()
    assert frontier_main([str(sweep)]) == 0
    assert "| series | β | seeds | reward mean |" in capsys.readouterr().out, "no markdown table"
    with open(sweep / "frontier.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {row["label"] for row in rows} == {"dpo", "tdpo"}
    for row in rows:
        for key in ("reward_mean", "reward_tail", "kl", "pairs/rewards/accuracies"):
            assert math.isfinite(float(row[key])), f"{key}={row[key]} in {row}"
    for name in ("frontier.png", "tail.png"):
        image = imread(sweep / name)
        assert image.shape[0] > 100 and image.shape[1] > 100, f"{name} did not decode to a plot"
    summary = json.loads(next(sweep.glob("*/summary.json")).read_text())
    assert [point["step"] for point in summary["curve"]] == [0, 2, 4]


def test_a_failing_job_is_recorded_and_the_others_complete(smoke_world, smoke_env, tmp_path):
    # a bad value is refused before the sweep starts (tests/test_faults.py); a job can
    # still fail while it runs: here job 1's data file turns out broken when it loads
    _, world = smoke_world
    good, broken = tmp_path / "good.jsonl", tmp_path / "broken.jsonl"
    load_from_disk(str(world.dataset_dir))["train"].to_json(str(good))
    broken.write_text(good.read_text().splitlines()[0][:20] + "\n")
    result = run_here("-m", "debug=smoke", "data=local", f"data.path={good},{broken}",
                       f"model.name_or_path={world.model_dir}", "data.max_length=64",
                       "data.max_prompt_length=16", env=smoke_env)
    assert result.returncode != 0, "a sweep with a failed job must not report success"
    sweep = _sweep_dir(tmp_path / "outputs")
    assert (sweep / "0" / "summary.json").is_file(), "the valid job did not complete"
    failures = json.loads((sweep / "failures.json").read_text())
    assert [failure["job"] for failure in failures] == [1]
    assert "line 1 is not valid JSON" in failures[0]["error"]
    assert "line 1 is not valid JSON" in (sweep / "1" / "error.txt").read_text()


def test_pareto_front_keeps_points_no_other_beats():
    points = [(1.0, 0.2), (2.0, 0.5), (1.5, 0.1), (3.0, 0.4), (0.5, 0.0), (4.0, 0.9)]
    assert pareto_front(points) == [4, 0, 1, 5]


def test_a_corrupt_failures_file_is_set_aside_and_the_new_failure_still_recorded(tmp_path):
    from riskalign.runs.sweeps import FAILURES_FILE, read_failures

    (tmp_path / FAILURES_FILE).write_text('[{"job": 0, "error": "Val')  # cut short
    assert read_failures(tmp_path) == []
    assert (tmp_path / f"{FAILURES_FILE}.corrupt").read_text().startswith('[{"job": 0')
    assert not (tmp_path / FAILURES_FILE).exists()
    (tmp_path / FAILURES_FILE).write_text('{"job": 1}')  # valid JSON, not a list
    assert read_failures(tmp_path) == []
    (tmp_path / FAILURES_FILE).write_text('[{"job": 2}]')
    assert read_failures(tmp_path) == [{"job": 2}]
