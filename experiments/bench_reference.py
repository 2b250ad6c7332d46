"""Peak memory and step time of DPO with and without a LoRA reference and the reference cache.

    python experiments/bench_reference.py                      # SmolLM2-135M on this CPU
    python experiments/bench_reference.py --steps 8 model=llama-3.2-1b trainer=gpu

Four settings of the same DPO run, each `python -m riskalign.train` in its own process:
full fine-tuning with the reference in the loop; full fine-tuning on cached reference
log-probs; LoRA with the adapter-disabled policy as reference; LoRA on cached log-probs.
Reported: the process's peak resident memory (ru_maxrss of that child alone, via wait4),
CUDA's peak allocation on a GPU, and the median training-step time after the first
step. The evaluation samples 4 prompts without KL (eval.kl=false), so that no setting
loads a reference only for evaluation. The cache runs are preceded by a run that fills
the cache; its time is reported as the one-off cost. Writes
experiments/results/reference_memory.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"

SETTINGS = {
    "full, reference in the loop": [],
    "full, reference cache": ["reference.cache=true"],
    "LoRA, adapter-disabled reference": ["model.lora.enabled=true", "optim.lr=1e-4"],
    "LoRA + reference cache": ["model.lora.enabled=true", "optim.lr=1e-4",
                               "reference.cache=true"],
}
COMMON = ["experiment=smollm2_sentiment", "eval.kl=false", "eval.num_prompts=4",
          "eval.num_pairs=8", "logger=none", "trainer.enable_checkpointing=false"]


def run(overrides: list[str], run_dir: Path, env: dict[str, str]) -> dict:
    """One training run in a child process: its summary plus the child's own peak RSS."""
    process = subprocess.Popen(
        [sys.executable, "-m", "riskalign.train", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(run_dir.parent / f"{run_dir.name}.err").open("w"),
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"run failed ({process.returncode}): see {run_dir.parent}/"
                         f"{run_dir.name}.err")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["peak_rss_gb"] = usage.ru_maxrss / 2**20  # KiB on Linux
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS / "reference_memory.json")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-reference-"))
    env = {**os.environ, "RISKALIGN_OUTPUT_ROOT": str(scratch), "WANDB_MODE": "disabled"}
    common = [*COMMON, f"trainer.max_steps={args.steps}", *args.overrides]
    # generated pairs and the converted model are cached by this first run, off the clock
    run([*common, "trainer.max_steps=1"], scratch / "prime", env)
    rows = []
    for name, overrides in SETTINGS.items():
        fill_seconds = None
        if "reference.cache=true" in overrides:
            # a fresh cache directory per setting, so that this run really fills it
            overrides = [*overrides, f"paths.reference_cache={scratch}/cache-{len(rows)}"]
            filled = run([*common, *overrides, "trainer.max_steps=1"],
                         scratch / f"fill-{len(rows)}", env)
            fill_seconds = filled["reference_cache"]["seconds"]
        summary = run([*common, *overrides], scratch / f"run-{len(rows)}", env)
        rows.append({"setting": name, "peak_rss_gb": round(summary["peak_rss_gb"], 2),
                     "cuda_peak_gb": summary.get("cuda_peak_gb"),
                     "step_seconds_median": summary["timing"]["step_seconds_median"],
                     "cache_fill_seconds": fill_seconds,
                     "final_pairs_accuracy": summary["final"].get("pairs/rewards/accuracies")})
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "common": common, "rows": rows},
                                   indent=2))
    base = rows[0]
    print("\n| setting | peak RSS (GB) | × | step (s, median) | × | cache fill (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['setting']} | {row['peak_rss_gb']:.2f} | "
              f"{row['peak_rss_gb'] / base['peak_rss_gb']:.2f} | "
              f"{row['step_seconds_median']:.2f} | "
              f"{row['step_seconds_median'] / base['step_seconds_median']:.2f} | "
              f"{row['cache_fill_seconds'] if row['cache_fill_seconds'] is not None else '—'} |")


if __name__ == "__main__":
    main()
