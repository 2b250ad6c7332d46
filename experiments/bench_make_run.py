"""Time the default run (`make run`) cold and cached, and check that it aligns across seeds.

    python experiments/bench_make_run.py            # cold + cached timing, seeds 0 1 2

Cold: a fresh cache directory, so the embedded world is built first. Cached:
the same command again. Then seeds 1 and 2 (training order) on the cached
world. Each run is `python -m riskalign.train seed=S` in a subprocess, exactly
the command `make run` executes; wall times include interpreter start-up.
Writes experiments/results/make_run.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "make_run.json"


def run(seed: int, cache: Path, outputs: Path, extra: list[str]) -> dict:
    env = {**os.environ, "RISKALIGN_CACHE_DIR": str(cache), "RISKALIGN_OUTPUT_ROOT": str(outputs)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "riskalign.train", f"seed={seed}", *extra],
        cwd=REPO, env=env, check=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    newest = max(outputs.glob("runs/*/*/summary.json"), key=lambda path: path.stat().st_mtime)
    summary = json.loads(newest.read_text())
    return {
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "reference_reward": summary["reference"]["reward_mean"],
        "reference_tail": summary["reference"]["reward_tail"],
        "final_reward": summary["final"]["reward_mean"],
        "final_tail": summary["final"]["reward_tail"],
        "final_kl": summary["final"]["kl"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cache, outputs = Path(scratch) / "cache", Path(scratch) / "outputs"
        cold = run(args.seeds[0], cache, outputs, args.overrides)
        cached = [run(seed, cache, outputs, args.overrides) for seed in args.seeds]
    gains = [row["final_reward"] - row["reference_reward"] for row in cached]
    finals = [row["final_reward"] for row in cached]
    result = {
        "cold_wall_seconds": cold["wall_seconds"],
        "cached_wall_seconds": [row["wall_seconds"] for row in cached],
        "runs": cached,
        "reward_gain_mean": statistics.mean(gains),
        "final_reward_seed_stdev": statistics.stdev(finals) if len(finals) > 1 else 0.0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"cold (world built): {cold['wall_seconds']} s")
    print("| seed | wall s | ref reward | ref tail | final reward | final tail | final KL |")
    print("|---|---|---|---|---|---|---|")
    for row in cached:
        print(f"| {row['seed']} | {row['wall_seconds']} | {row['reference_reward']:.3f} | "
              f"{row['reference_tail']:.3f} | {row['final_reward']:.3f} | "
              f"{row['final_tail']:.3f} | {row['final_kl']:.3f} |")
    print(f"reward gain {result['reward_gain_mean']:.3f}; seed-to-seed stdev of final reward "
          f"{result['final_reward_seed_stdev']:.3f}")


if __name__ == "__main__":
    main()
