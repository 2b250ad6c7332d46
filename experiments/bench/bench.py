"""riskalign's training throughput against TRL's DPOTrainer, and its risk ratio against a
naive one. `make bench`, or:

    python experiments/bench/bench.py                          # SmolLM2-135M and tiny, CPU
    python experiments/bench/bench.py --models smollm2-135m --steps 8 --batch-size 8
    python experiments/bench/bench.py --only risk              # the risk-ratio comparison

Every training measurement runs in a child process (peak RSS is that child's own, via
wait4; on a GPU also CUDA's peak allocation) on the same model files and pairs, in order,
with the same batch, lengths, precision and optimizer settings (workload.py). Throughput
is pairs/s and tokens/s at the median step after warm-up. Ratios: riskalign dpo / TRL
default, riskalign dpo with the reference cache / TRL default, and / TRL with its
precomputed reference log-probs; tdpo and radpo / riskalign dpo. On a GPU, MFU is model
FLOPs per second (6·N per trained token, 2·N per reference token, counted apart) over the
device's peak. TRL is the optional `bench` extra: without it those rows are skipped with a
message. Writes experiments/results/bench_<model>.{json,csv} and prints the tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from workload import REPO, Workload, model_and_pairs

RESULTS = REPO / "experiments" / "results"
TRAINING_RUNS = [  # (label, side, objective or TRL mode, reference cache)
    ("riskalign dpo", "riskalign", "dpo", False),
    ("riskalign dpo + reference cache", "riskalign", "dpo", True),
    ("riskalign tdpo", "riskalign", "tdpo", False),
    ("riskalign radpo (cvar)", "riskalign", "radpo", False),
    ("riskalign radpo (erm)", "riskalign", "radpo_erm", False),
    ("TRL DPOTrainer", "trl", "default", False),
    ("TRL DPOTrainer + precompute_ref_log_probs", "trl", "precompute", False),
]
# H100/H200 dense bf16 peak (FLOP/s); other devices report no MFU
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def child(spec: dict) -> dict:
    """One measurement, inside the child process."""
    import sides

    workload = Workload(**spec["workload"])
    source, pairs = spec["source"], spec["pairs"]
    if spec["side"] == "trl":
        return sides.trl(workload, source, pairs, precompute=spec["mode"] == "precompute")
    objective = "radpo" if spec["mode"] == "radpo_erm" else spec["mode"]
    figures = sides.riskalign(workload, source, pairs, objective, cache=spec["cache"],
                              erm=spec["mode"] == "radpo_erm")
    return figures


def measure(spec: dict, scratch: Path) -> dict:
    """Run `child(spec)` in a fresh process; add its own peak RSS."""
    spec_file, out_file = scratch / "spec.json", scratch / "out.json"
    spec_file.write_text(json.dumps(spec))
    out_file.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, __file__, "--child", str(spec_file), str(out_file)],
                               cwd=REPO, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not out_file.exists():
        return {"error": f"exit {os.waitstatus_to_exitcode(status)}"}
    return {**json.loads(out_file.read_text()), "peak_rss_gb": usage.ru_maxrss / 2**20}


def trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def model_flops(source: str, row: dict) -> dict:
    """MFU on a GPU: 6·N·tokens (policy forward + backward) and 2·N·tokens (reference)."""
    import torch

    if not torch.cuda.is_available() or "tokens_per_second" not in row:
        return {}
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(source)).parameters())
    name = torch.cuda.get_device_name()
    peak = next((value for key, value in PEAK_FLOPS.items() if key in name), None)
    policy = 6 * n * row["tokens_per_second"]
    reference = 0 if row.get("cached") else 2 * n * row["tokens_per_second"]
    return {"policy_tflops": policy / 1e12, "reference_tflops": reference / 1e12,
            "mfu": (policy + reference) / peak if peak else None, "device": name}


def bench_model(model: str, args, scratch: Path) -> list[dict]:
    workload = replace(Workload(model=model), batch_size=args.batch_size,
                       timed_steps=args.steps, warmup_steps=args.warmup)
    source, pairs = model_and_pairs(workload)
    runs = [run for run in TRAINING_RUNS if run[1] != "trl" or trl_available()]
    if len(runs) < len(TRAINING_RUNS):
        print("skipping the TRL rows: TRL is not installed (pip install -e '.[bench]')")

    def spec(side: str, mode: str, cache: bool) -> dict:
        return {"workload": workload.as_dict(), "source": source, "pairs": pairs,
                "side": side, "mode": mode, "cache": cache}

    # The first process on an idle machine runs slower (caches, clocks): an untimed one first.
    measure(spec("riskalign", "dpo", False), scratch)
    # Rounds interleave the runs, so that drift in the machine's speed hits all of them.
    measured: dict[str, list[dict]] = {label: [] for label, *_ in runs}
    for _ in range(args.rounds):
        for label, side, mode, cache in runs:
            measured[label].append(measure(spec(side, mode, cache), scratch))
    rows = []
    for label, _side, mode, cache in runs:
        row = {"model": model, "run": label, "cached": cache or mode == "precompute",
               **merge_rounds(measured[label], workload)}
        row.update(model_flops(source, row))
        print(_format_row(row), flush=True)
        rows.append(row)
    return rows


def merge_rounds(results: list[dict], workload: Workload) -> dict:
    """One row from several rounds: the median over all their timed steps, the largest peak."""
    import statistics

    failed = [result for result in results if "error" in result]
    if failed:
        return failed[0]
    seconds = [s for result in results for s in result["step_seconds"]]
    tokens = statistics.fmean(result["tokens_per_step"] for result in results)
    median = statistics.median(seconds)
    return {**results[-1], "step_seconds": seconds, "step_seconds_median": median,
            "pairs_per_second": workload.batch_size / median,
            "tokens_per_second": tokens / median,
            "peak_rss_gb": max(result["peak_rss_gb"] for result in results)}


def ratios(rows: list[dict]) -> list[tuple[str, float | None]]:
    by = {row["run"]: row for row in rows if "pairs_per_second" in row}

    def ratio(top: str, bottom: str, key: str = "pairs_per_second", invert=False):
        if top not in by or bottom not in by:
            return None
        value = by[top][key] / by[bottom][key]
        return 1 / value if invert else value

    return [
        ("riskalign dpo / TRL (throughput)", ratio("riskalign dpo", "TRL DPOTrainer")),
        ("riskalign dpo + cache / TRL default (throughput)",
         ratio("riskalign dpo + reference cache", "TRL DPOTrainer")),
        ("riskalign dpo + cache / TRL + precompute (throughput)",
         ratio("riskalign dpo + reference cache", "TRL DPOTrainer + precompute_ref_log_probs")),
        *[(f"{name} / riskalign dpo (step time)",
           ratio(name, "riskalign dpo", "step_seconds_median"))
          for name in ("riskalign tdpo", "riskalign radpo (cvar)", "riskalign radpo (erm)")],
        *[(f"{name} / riskalign dpo (peak RSS)", ratio(name, "riskalign dpo", "peak_rss_gb"))
          for name in ("riskalign tdpo", "riskalign radpo (cvar)", "riskalign radpo (erm)")],
    ]


def _format_row(row: dict) -> str:
    if "error" in row:
        return f"| {row['run']} | failed: {row['error']} |"
    mfu = f" | MFU {row['mfu']:.1%}" if row.get("mfu") else ""
    return (f"| {row['run']} | {row['pairs_per_second']:.2f} | {row['tokens_per_second']:.0f} | "
            f"{row['step_seconds_median']:.3f} | {row['peak_rss_gb']:.2f}{mfu} |")


def risk_ratio_rows(vocabularies: list[int]) -> list[dict]:
    from risk_ratio import compare

    rows = []
    for vocab in vocabularies:
        rows.append(compare(vocab))
        r = rows[-1]
        print(f"| {vocab} | {r['naive_seconds']:.3f} | {r['riskalign_uniform_seconds']:.3f} "
              f"({r['speedup_uniform']:.1f}×) | {r['riskalign_probability_seconds']:.3f} "
              f"({r['speedup_probability']:.1f}×) | {r['uniform_max_grad_gap']:.1e} |", flush=True)
    return rows


def write(name: str, rows: list[dict], extra: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"rows": rows, **extra}, indent=2))
    keys = sorted({key for row in rows for key in row if not isinstance(row[key], list)})
    with (RESULTS / f"{name}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "tiny"])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repeats of all runs")
    parser.add_argument("--vocab", type=int, nargs="+", default=[32768, 49152])
    parser.add_argument("--only", choices=["training", "risk"])
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec_file, out_file = map(Path, args.child)
        Path(out_file).write_text(json.dumps(child(json.loads(Path(spec_file).read_text()))))
        return
    os.environ.setdefault("WANDB_MODE", "disabled")
    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    if args.only != "risk":
        for model in args.models:
            print(f"\n## {model}: training throughput (batch {args.batch_size} pairs, "
                  f"{args.rounds} rounds of {args.steps} timed steps after {args.warmup})\n")
            print("| run | pairs/s | tokens/s | step (s, median) | peak RSS (GB) |")
            print("|---|---|---|---|---|")
            rows = bench_model(model, args, scratch)
            table = ratios(rows)
            print("\n| ratio | value |\n|---|---|")
            for name, value in table:
                print(f"| {name} | {'—' if value is None else f'{value:.2f}'} |")
            write(f"bench_{model}", rows, {"ratios": dict(table), "args": vars(args)})
    if args.only != "training":
        print("\n## CVaR risk ratio: forward + backward, 16 rows x 64 tokens\n")
        print("| V | naive torch.quantile (s) | riskalign uniform (s, ×) | "
              "riskalign probability (s, ×) | max grad gap (uniform) |")
        print("|---|---|---|---|---|")
        write("bench_risk_ratio", risk_ratio_rows(args.vocab), {"args": vars(args)})


if __name__ == "__main__":
    main()
