"""The frontier report on synthetic sweeps: labels, swept keys, bootstrap aggregates, paired
differences, tables, plots, skipped jobs and the W&B upload; no training, seconds in all."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from riskalign.frontier import main
from riskalign.reports.aggregate import aggregate, paired_difference
from riskalign.reports.design import detect_design, series_name, swept_keys
from riskalign.reports.labels import objective_label, reference_objective, run_label
from riskalign.reports.runs import load_sweep


def objective_cfg(name: str, **changes: object) -> dict:
    """The shipped conf of `name` with `section__key=value` changes, as a run resolves it."""
    cfg = copy.deepcopy(reference_objective(name))
    for path, value in changes.items():
        node = cfg
        *parents, leaf = path.split("__")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg


def write_job(sweep: Path, job: str, *, objective: str = "dpo", beta: float = 0.1,
              seed: int = 0, rewards=(0.0, 1.0, 2.0, 3.0), kls=None,
              tail_fraction: float = 0.25, overrides: tuple[str, ...] = (),
              objective_changes: dict | None = None, samples: bool = True,
              label: str | None = None, steps: int = 10) -> Path:
    """One job directory as a sweep leaves it: summary.json, .hydra/overrides.yaml and the
    final step's samples file."""
    rewards = np.asarray(rewards, dtype=float)
    kls = np.full(rewards.shape, 0.5) if kls is None else np.asarray(kls, dtype=float)
    directory = sweep / job
    (directory / ".hydra").mkdir(parents=True)
    items = [f"objective={objective}", f"objective.beta={beta}", f"seed={seed}",
             "trainer.max_steps=10", *overrides]
    (directory / ".hydra" / "overrides.yaml").write_text("".join(f"- {i}\n" for i in items))
    count = max(1, math.ceil(tail_fraction * rewards.size))
    final = {"step": steps, "reward_mean": float(rewards.mean()),
             "reward_tail": float(np.sort(rewards)[:count].mean()), "kl": float(kls.mean()),
             "reward_below_threshold": float((rewards < -0.5).mean()),
             "pairs/rewards/accuracies": 0.75}
    curve = [{**{key: 0.0 for key in final}, "step": 0}, final]
    config = {"seed": seed, "label": label,
              "objective": objective_cfg(objective, beta=beta, **(objective_changes or {})),
              "eval": {"tail_fraction": tail_fraction},
              "logger": {"wandb": {"project": "frontier-proj", "entity": None, "group": None}}}
    summary = {"objective": objective, "steps": steps, "wall_seconds": 1.5, "final": final,
               "curve": curve, "config": config, "wandb_group": "sweep-grp"}
    (directory / "summary.json").write_text(json.dumps(summary))
    if samples:
        (directory / "samples").mkdir()
        rows = [{"step": steps, "index": i, "prompt": f"p{i}", "completion": "c",
                 "reward": float(r), "kl": float(k)} for i, (r, k) in enumerate(zip(rewards, kls))]
        (directory / "samples" / f"step-{steps:07d}.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in rows))
    return directory


def two_by_two_by_three(sweep: Path, prompts: int = 32) -> None:
    """dpo and radpo × β 0.1, 0.5 × seeds 0, 1, 2; radpo clearly better, same prompts."""
    rng = np.random.default_rng(0)
    hardness = rng.normal(0, 0.3, prompts)
    job = 0
    for objective, shift in (("dpo", 0.0), ("radpo", 0.3)):
        for beta in (0.1, 0.5):
            for seed in range(3):
                noise = np.random.default_rng(100 * job).normal(0, 0.05, prompts)
                write_job(sweep, str(job), objective=objective, beta=beta, seed=seed,
                          rewards=hardness + shift + noise, kls=np.full(prompts, 1 / beta))
                job += 1


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("name", "changes", "label"), [
    ("dpo", {}, "dpo"),
    ("tdpo", {}, "tdpo"),
    ("radpo", {}, "radpo · cvar 0.95"),
    ("radpo", {"drift__measure": "erm", "drift__mu": 5.0}, "radpo · erm μ=5"),
    ("kldpo", {}, "kldpo · kl_dro τ=0.05"),
    ("dpo", {"reducer__name": "kl_dro"}, "dpo + kl_dro τ=0.05"),
    ("wdpo", {}, "wdpo · wasserstein ρ₀=0.01"),
    ("ra_rlhf", {}, "ra_rlhf · α=0.4"),
    ("ppo", {}, "ppo"),
    ("dpo", {"beta": 0.5}, "dpo"),
])
def test_labels_name_each_objective_composition(name, changes, label):
    assert objective_label(objective_cfg(name, **changes)) == label


def test_a_label_set_on_the_run_wins_over_the_derived_one(tmp_path):
    assert run_label({"label": "cvar095", "objective": objective_cfg("radpo")}) == "cvar095"
    assert run_label({"label": None, "objective": objective_cfg("radpo")}) == "radpo · cvar 0.95"
    write_job(tmp_path, "0", objective="radpo", label="arm A")
    assert [run.label for run in load_sweep(tmp_path).runs] == ["arm A"]


def test_swept_keys_leave_constant_overrides_out_and_seed_out_of_series(tmp_path):
    write_job(tmp_path, "0", objective="dpo", beta=0.1, seed=0, overrides=("optimizer.lr=1e-5",))
    write_job(tmp_path, "1", objective="radpo", beta=0.5, seed=1,
              overrides=("optimizer.lr=1e-4",))
    write_job(tmp_path, "2", objective="radpo", beta=0.5, seed=0, overrides=("+arm=x",),
              label="arm x")
    runs = load_sweep(tmp_path).runs
    assert swept_keys(runs) == ["objective", "objective.beta", "seed", "optimizer.lr", "arm"]
    design = detect_design(runs)
    assert design.strength == "objective.beta"
    assert design.series_keys == ["label", "optimizer.lr"]
    assert series_name(runs[1], design) == "radpo · cvar 0.95 (optimizer.lr=1e-4)"
    assert series_name(runs[2], design) == "arm x (optimizer.lr=None)"
    assert series_name(runs[2], detect_design(runs, group_by=["label"])) == "arm x"
    assert detect_design(runs, strength="none").strength is None


def test_beta_splits_series_when_it_is_not_the_strength(tmp_path):
    write_job(tmp_path, "0", beta=0.1, overrides=("objective.drift.alpha=0.3",))
    write_job(tmp_path, "1", beta=0.5, overrides=("objective.drift.alpha=0.7",))
    design = detect_design(load_sweep(tmp_path).runs, strength="objective.drift.alpha")
    assert design.series_keys == ["label", "objective.beta"]


def test_aggregates_equal_hand_computed_means(tmp_path):
    write_job(tmp_path, "0", seed=0, rewards=[0, 1, 2, 3], kls=[1, 1, 1, 1])
    write_job(tmp_path, "1", seed=1, rewards=[1, 1, 1, 5], kls=[2, 2, 2, 6])
    runs = load_sweep(tmp_path).runs
    result = aggregate("dpo", "0.1", runs, ["reward_mean", "reward_tail", "kl"], 500)
    assert result.over_prompts
    assert result.metrics["reward_mean"].mean == pytest.approx((1.5 + 2.0) / 2)
    assert result.metrics["reward_tail"].mean == pytest.approx((0 + 1) / 2)  # worst 1 of 4
    assert result.metrics["kl"].mean == pytest.approx((1 + 3) / 2)


def test_intervals_contain_the_mean_and_shrink_with_more_prompts(tmp_path):
    widths = {}
    for prompts in (16, 256):
        sweep = tmp_path / str(prompts)
        for seed in range(3):
            rng = np.random.default_rng(seed)
            write_job(sweep, str(seed), seed=seed, rewards=rng.normal(0, 1, prompts),
                      kls=rng.gamma(2.0, 1.0, prompts))
        result = aggregate("dpo", "0.1", load_sweep(sweep).runs,
                           ["reward_mean", "reward_tail", "kl"], 1000)
        for estimate in result.metrics.values():
            assert estimate.lo <= estimate.mean <= estimate.hi
        widths[prompts] = result.metrics["reward_mean"].hi - result.metrics["reward_mean"].lo
    assert widths[256] < widths[16] / 2


def test_runs_without_samples_fall_back_to_seeds_and_the_report_says_so(tmp_path, capsys):
    for seed, value in enumerate((0.1, 0.2, 0.3)):
        write_job(tmp_path, str(seed), seed=seed, rewards=[value] * 4, samples=False)
    assert main([str(tmp_path), "--bootstrap", "200"]) == 0
    assert "over seeds only (no per-prompt samples)" in capsys.readouterr().out
    [row] = read_csv(tmp_path / "frontier_aggregates.csv")
    assert row["resampled"] == "seeds" and row["n_seeds"] == "3"
    assert float(row["reward_mean_mean"]) == pytest.approx(0.2)
    assert 0.1 <= float(row["reward_mean_lo"]) <= 0.2 <= float(row["reward_mean_hi"]) <= 0.3


def test_paired_difference_flags_a_real_difference_and_not_an_identical_pair(tmp_path):
    two_by_two_by_three(tmp_path)
    for seed in range(3):  # a copy of dpo β=0.1 under another label
        rewards = [row["reward"] for row in map(json.loads, (
            tmp_path / str(seed) / "samples" / "step-0000010.jsonl").read_text().splitlines())]
        write_job(tmp_path, f"copy{seed}", seed=seed, rewards=rewards, kls=[10.0] * len(rewards),
                  label="dpo again")
    sweep = load_sweep(tmp_path)
    design = detect_design(sweep.runs)
    metrics = ["reward_mean", "reward_tail", "kl"]

    def group(series: str, strength: str):
        runs = [r for r in sweep.runs if series_name(r, design) == series
                and r.overrides["objective.beta"] == strength]
        return aggregate(series, strength, runs, metrics, 1000)

    baseline = group("dpo", "0.1")
    better = paired_difference(group("radpo · cvar 0.95", "0.1"), baseline, metrics, 1000)
    assert better.over_prompts and better.seeds == [0, 1, 2]
    assert better.metrics["reward_mean"].mean == pytest.approx(0.3, abs=0.05)
    assert better.metrics["reward_mean"].significant
    assert better.metrics["reward_mean"].lo > 0.2
    same = paired_difference(group("dpo again", "0.1"), baseline, metrics, 1000)
    for estimate in same.metrics.values():
        assert estimate.mean == pytest.approx(0.0) and not estimate.significant


def test_report_writes_run_and_aggregate_tables_plots_and_differences(tmp_path, capsys):
    two_by_two_by_three(tmp_path)
    assert main([str(tmp_path), "--baseline", "dpo", "--bootstrap", "300"]) == 0
    out = capsys.readouterr().out
    assert "| series | β | seeds | reward mean | reward tail (worst 25 %) | KL |" in out

    rows = read_csv(tmp_path / "frontier.csv")
    assert len(rows) == 12
    assert {"run", "label", "series", "seed", "objective", "objective.beta", "reward_mean",
            "reward_tail", "kl", "steps", "wall_seconds"} <= set(rows[0])
    assert "trainer.max_steps" not in rows[0], "a constant override is no swept key"
    assert sorted({row["seed"] for row in rows}) == ["0", "1", "2"]

    aggregates = read_csv(tmp_path / "frontier_aggregates.csv")
    assert [(a["series"], a["strength"], a["n_seeds"]) for a in aggregates] == [
        ("dpo", "0.1", "3"), ("dpo", "0.5", "3"), ("radpo · cvar 0.95", "0.1", "3"),
        ("radpo · cvar 0.95", "0.5", "3")]
    differences = read_csv(tmp_path / "frontier_differences.csv")
    assert [d["reward_mean_significant"] for d in differences] == ["True", "True"]
    assert [d["kl_significant"] for d in differences] == ["False", "False"]  # same KL

    markdown = (tmp_path / "frontier.md").read_text()
    assert "### Differences from the baseline `dpo`" in markdown and "**+0." in markdown
    for name in ("frontier.png", "tail.png", "curves.png"):
        image = imread(tmp_path / name)
        assert image.shape[0] > 300 and image.shape[1] > 400, f"{name} is no plot"


def test_broken_and_failed_jobs_are_listed_as_skipped(tmp_path, capsys):
    two_by_two_by_three(tmp_path)
    text = (tmp_path / "1" / "summary.json").read_text()
    (tmp_path / "1" / "summary.json").write_text(text[: len(text) // 2])
    summary = json.loads((tmp_path / "2" / "summary.json").read_text())
    del summary["final"]
    (tmp_path / "2" / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "99" / ".hydra").mkdir(parents=True)  # started, never finished
    (tmp_path / "99" / ".hydra" / "overrides.yaml").write_text("- objective=dpo\n")
    (tmp_path / "failures.json").write_text(json.dumps([{
        "job": 12, "overrides": ["objective=ipo"], "job_dir": str(tmp_path / "12"),
        "error": "ValueError: data.max_length=8 is too short"}]))

    assert main([str(tmp_path), "--bootstrap", "100"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    markdown = (tmp_path / "frontier.md").read_text()
    for expected in ("- `1`: summary.json is not valid JSON", "- `2`: summary.json is "
                     "incomplete: no 'final'", "- `99`: no summary.json",
                     "- `12`: failed (objective=ipo): ValueError: data.max_length=8"):
        assert expected in captured.out and expected in markdown
    assert len(read_csv(tmp_path / "frontier.csv")) == 10


def test_a_sweep_with_no_valid_run_exits_2_with_one_line(tmp_path, capsys):
    write_job(tmp_path, "0")
    (tmp_path / "0" / "summary.json").write_text('{"final": {"reward_')
    assert main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("riskalign.frontier: error:")
    assert "no valid run" in captured.err and "not valid JSON" in captured.err

    assert main([str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_an_unknown_baseline_is_refused_with_the_series_named(tmp_path, capsys):
    write_job(tmp_path, "0")
    assert main([str(tmp_path), "--baseline", "dpoo"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'dpo'" in error


@pytest.mark.subprocess  # W&B's service
def test_wandb_offline_logs_to_the_sweeps_project_and_group(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = tmp_path / "sweep"
    write_job(sweep, "0", seed=0)
    write_job(sweep, "1", seed=1)
    assert main([str(sweep), "--bootstrap", "50", "--wandb", "--wandb-mode", "offline"]) == 0
    [record] = sweep.glob("wandb/offline-run-*/run-*.wandb")
    contents = record.read_bytes()
    assert b"sweep-grp" in contents and b"frontier-proj" in contents and b"frontier" in contents
