"""A real 2 x 2 x 3 sweep (objectives x beta x seeds) on the embedded world, through to the
frontier report: labelled, seed-aggregated points with intervals, curves, a CSV with seed
and swept-key columns, samples in every run, and a corrupted job that is skipped."""

from __future__ import annotations

import csv
import json

from matplotlib.image import imread

from riskalign.frontier import main as frontier_main
from tests.conftest import run_here


def test_objectives_by_beta_by_seeds_sweep_gives_an_aggregated_frontier(smoke_env, tmp_path,
                                                                           capsys):
    sweep = tmp_path / "sweep"
    result = run_here("-m", "debug=smoke", "objective=dpo,radpo", "objective.beta=0.1,0.5",
                      "seed=0,1,2", f"hydra.sweep.dir={sweep}", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(path.parent for path in sweep.glob("*/summary.json"))
    assert len(jobs) == 12

    for job in jobs:  # the default cadence: 5 evaluations, each with its completions kept
        summary = json.loads((job / "summary.json").read_text())
        steps = [point["step"] for point in summary["curve"]]
        assert steps == [0, 1, 2, 3, 4], steps
        for step in steps:
            rows = [json.loads(line) for line in
                    (job / "samples" / f"step-{step:07d}.jsonl").read_text().splitlines()]
            assert len(rows) == 16 and all(row["step"] == step for row in rows)
            assert {"prompt", "completion", "reward", "kl"} <= set(rows[0])
        metrics = (job / "metrics.csv").read_text().splitlines()[0].split(",")
        assert {"lr", "grad_norm", "entropy/response", "tokens/response"} <= set(metrics)

    assert frontier_main([str(sweep)]) == 0
    with open(sweep / "frontier.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 12
    assert {"seed", "objective", "objective.beta"} <= set(runs[0]), list(runs[0])
    assert "debug" not in runs[0], "a constant override is not a swept key"
    assert {row["label"] for row in runs} == {"dpo", "radpo · cvar 0.95"}
    assert sorted({row["seed"] for row in runs}) == ["0", "1", "2"]
    with open(sweep / "frontier_aggregates.csv") as handle:
        aggregates = list(csv.DictReader(handle))
    assert len(aggregates) == 4
    for row in aggregates:
        assert row["n_seeds"] == "3"
        for metric in ("reward_mean", "reward_tail", "kl"):
            low, mean, high = (float(row[f"{metric}_{part}"]) for part in ("lo", "mean", "hi"))
            assert low <= mean <= high, (metric, row)
        assert float(row["reward_mean_hi"]) > float(row["reward_mean_lo"]), "no interval"
    for name in ("frontier.png", "tail.png", "curves.png"):
        image = imread(sweep / name)
        assert image.shape[0] > 300 and image.shape[1] > 300, name
    markdown = (sweep / "frontier.md").read_text()
    assert "β" in markdown and "[" in markdown, "aggregates are printed with their intervals"

    # one job's summary cut in half, as a crash mid-write would leave it without atomic writes
    broken = jobs[5] / "summary.json"
    broken.write_text(broken.read_text()[:200])
    capsys.readouterr()
    assert frontier_main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed.lower() and jobs[5].name in printed
    with open(sweep / "frontier.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 11
