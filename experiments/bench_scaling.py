"""Scaling tables: step time and peak memory of dpo, tdpo and radpo as the response length
and the vocabulary grow, token statistics from full logits against the hidden-state path.

    OMP_NUM_THREADS=2 python experiments/bench_scaling.py
    python experiments/bench_scaling.py --vocab 32000 --response 128 256 --pairs 2

Each (vocabulary, response length) cell is one run of experiments/bench_hidden_memory.py in
a fresh process (a synthetic Llama: hidden 256, 2 layers, fp32, `pairs` preference pairs with
a 16-token prompt; one forward + backward of `AlignmentModule.loss_and_metrics` per path and
objective, peak RSS above the step's start). Writes experiments/results/scaling.json and
prints markdown tables (the ones docs/performance.md shows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scaling.json"
OBJECTIVES = ("dpo", "tdpo", "radpo")


def cell(vocab: int, response: int, pairs: int, objectives: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "cell.json"
        subprocess.run([sys.executable, str(HERE / "bench_hidden_memory.py"),
                        f"--vocab={vocab}", f"--response={response}", f"--pairs={pairs}",
                        f"--objectives={objectives}", f"--out={out}"],
                       check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        rows = json.loads(out.read_text())["rows"]
    return [{**row, "vocab": vocab, "response": response, "pairs": pairs} for row in rows]


def tables(rows: list[dict]) -> str:
    """One table per objective: a row per (V, R), logits and hidden side by side."""
    out = []
    for objective in dict.fromkeys(row["objective"] for row in rows):
        out += [f"\n**{objective}**\n",
                "| V | response tokens | logits: step (s) | logits: peak (MiB) "
                "| hidden: step (s) | hidden: peak (MiB) | peak hidden/logits |",
                "|---|---|---|---|---|---|---|"]
        cells = sorted({(r["vocab"], r["response"]) for r in rows if r["objective"] == objective})
        for vocab, response in cells:
            by = {r["path"]: r for r in rows if (r["objective"], r["vocab"], r["response"])
                  == (objective, vocab, response)}
            logits, hidden = by["logits"], by["hidden"]
            ratio = hidden["peak_above_start_mib"] / max(logits["peak_above_start_mib"], 1e-9)
            out.append(f"| {vocab} | {response} | {logits['step_s']:.2f} | "
                       f"{logits['peak_above_start_mib']:.0f} | {hidden['step_s']:.2f} | "
                       f"{hidden['peak_above_start_mib']:.0f} | {ratio:.2f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256])
    parser.add_argument("--response", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    args = parser.parse_args()
    rows: list[dict] = []
    for vocab in args.vocab:
        for response in args.response:
            rows += cell(vocab, response, args.pairs, args.objectives)
            print(f"V={vocab} R={response}: done", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    print(tables(rows))


if __name__ == "__main__":
    main()
