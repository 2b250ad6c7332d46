"""PPO vs RA-RLHF on the embedded world: same seeds, same iteration budget, 3 seeds each.

    python experiments/bench_ra_rlhf.py                  # or: make bench-ra-rlhf
    python experiments/bench_ra_rlhf.py --seeds 0 1 --iterations 60 objective.risk.alpha=0.2

Each run is `python -m riskalign.train objective=<ppo|ra_rlhf> seed=S ...` in a subprocess
with the settings below (the paper's PPO knobs at world scale). The held-out evaluation
reports the mean reward, the reward CVaR_0.1 (mean of the worst 10 % of samples), KL to
the reference, and RA-RLHF's tail: the mean reward on prompts VADER itself scores
<= -0.25. Writes experiments/results/ra_rlhf.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
METRICS = ("reward_mean", "reward_tail", "reward_prompt_tail", "kl")

WORLD_SETTINGS = [
    "objective.batch_size=64", "objective.minibatch_size=32", "objective.ppo_epochs=4",
    "objective.max_new_tokens=24", "objective.kl_coef=0.05", "objective.kl_target=6",
    "optim.lr=5e-4", "optim.warmup_steps=0",
    "eval.num_prompts=318", "eval.prompt_tail_threshold=-0.25", "eval.every_n_steps=20",
    "logger=none",
]
# only RA-RLHF's schedule differs; PPO keeps every episode (risk.alpha = 1, its config)
RISK_SETTINGS = {"ppo": [], "ra_rlhf": ["objective.risk.warmup=10", "objective.risk.alpha=0.4",
                                        "objective.risk.rho=0.95"]}


def run(objective: str, seed: int, iterations: int, extra: list[str], scratch: Path) -> dict:
    run_dir = scratch / f"{objective}-{seed}"
    env = {**os.environ, "RISKALIGN_OUTPUT_ROOT": str(scratch)}
    subprocess.run(
        [sys.executable, "-m", "riskalign.train", f"objective={objective}", f"seed={seed}",
         f"trainer.max_steps={iterations}", *WORLD_SETTINGS, *RISK_SETTINGS[objective], *extra,
         f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, check=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"objective": objective, "seed": seed, "wall_seconds": summary["wall_seconds"],
            "reference": {k: summary["reference"][k] for k in METRICS},
            "final": {k: summary["final"][k] for k in METRICS}}


def aggregate(rows: list[dict]) -> dict[str, dict[str, float]]:
    table = {}
    for objective in ("ppo", "ra_rlhf"):
        finals = [row["final"] for row in rows if row["objective"] == objective]
        table[objective] = {
            key: statistics.mean(f[key] for f in finals) for key in METRICS
        } | {f"{key}_stdev": statistics.stdev(f[key] for f in finals) if len(finals) > 1 else 0.0
             for key in METRICS}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: results/ra_rlhf_<iterations>.json)")
    parser.add_argument("--ra-rlhf-only", nargs="*", default=[],
                        help="extra Hydra overrides for the ra_rlhf runs only")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    RISK_SETTINGS["ra_rlhf"] += args.ra_rlhf_only
    out = args.out or RESULTS / f"ra_rlhf_{args.iterations}.json"
    with tempfile.TemporaryDirectory() as scratch:
        rows = [run(objective, seed, args.iterations, args.overrides, Path(scratch))
                for seed in args.seeds for objective in ("ppo", "ra_rlhf")]
    table = aggregate(rows)
    result = {"iterations": args.iterations, "settings": WORLD_SETTINGS + args.overrides,
              "risk_settings": RISK_SETTINGS,
              "reference": rows[0]["reference"], "mean_over_seeds": table, "runs": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    reference = rows[0]["reference"]
    print(f"reference (SFT base): reward {reference['reward_mean']:.3f}, CVaR_0.1 "
          f"{reference['reward_tail']:.3f}, prompt tail {reference['reward_prompt_tail']:.3f}")
    print("| objective | reward mean | reward CVaR_0.1 | prompt tail (<= -0.25) | KL |")
    print("|---|---|---|---|---|")
    for objective, stats in table.items():
        cells = [f"{stats[k]:.3f} ± {stats[k + '_stdev']:.3f}" for k in METRICS]
        print(f"| {objective} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
