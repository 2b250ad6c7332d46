"""Do `model=smollm2-135m`'s own learning rates (model.lr.full, model.lr.lora) align the real
model without breaking it? 20 DPO steps of experiment=smollm2_sentiment with nothing set
about the optimizer, full fine-tuning and LoRA, and the same at 5x those rates; the
reference and final evaluations of each, and how many of the 32 held-out samples changed.

    python experiments/smollm2_model_defaults.py            # -> experiments/results/
    python experiments/smollm2_model_defaults.py --runs D1 D2 D3 D4   # finished runs, in order

Each run takes 5-10 minutes on a 2-core CPU once the GGUF conversion and the pairs are
cached under paths.cache_dir (the first run makes them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ARMS = {
    "full, model.lr.full (1e-6)": [],
    "lora, model.lr.lora (1e-5)": ["model.lora.enabled=true"],
    "full, 5e-6": ["optim.lr=5e-6"],
    "lora, 5e-5": ["model.lora.enabled=true", "optim.lr=5e-5"],
}
KEYS = ("reward_mean", "reward_tail", "kl", "pairs/rewards/accuracies", "pairs/loss")


def run(overrides: list[str], root: Path) -> Path:
    command = [sys.executable, "-m", "riskalign.train", "experiment=smollm2_sentiment",
               "checkpoint.every_n_steps=null", "logger.wandb.mode=disabled",
               f"paths.output_root={root}", *overrides]
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
    return next(root.glob("runs/*/*/summary.json")).parent


def samples(run_dir: Path) -> str:
    script = Path(__file__).with_name("show_samples.py")
    return subprocess.run([sys.executable, str(script), str(run_dir), "--count", "32"],
                          check=True, capture_output=True, text=True).stdout


def _completions(row: str) -> tuple[str, str]:
    """(reference, policy) completion of a show_samples.py table row, scores dropped."""
    cells = row.strip("| ").split(" | ")
    return cells[1].rsplit(" (", 1)[0], cells[2].rsplit(" (", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path("experiments/results/smollm2_model_defaults.json"))
    parser.add_argument("--runs", type=Path, nargs=len(ARMS),
                        help="report these finished runs of the arms instead of running them")
    args = parser.parse_args()
    results = {}
    for index, (name, overrides) in enumerate(ARMS.items()):
        with tempfile.TemporaryDirectory() as root:
            run_dir = args.runs[index] if args.runs else run(overrides, Path(root))
            summary = json.loads((run_dir / "summary.json").read_text())
            table = samples(run_dir).splitlines()[2:]
        changed = sum(1 for row in table if _completions(row)[0] != _completions(row)[1])
        results[name] = {
            "overrides": overrides, "lr": summary["config"]["optim"]["lr"],
            "reference": {key: summary["reference"][key] for key in KEYS},
            "final": {key: summary["final"][key] for key in KEYS},
            "samples_changed_of_32": changed, "samples": table,
        }
        print(f"{name}: reward {results[name]['reference']['reward_mean']:.3f} -> "
              f"{results[name]['final']['reward_mean']:.3f}, KL {summary['final']['kl']:.4f}, "
              f"{changed}/32 samples changed", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
