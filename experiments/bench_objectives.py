"""Step time and peak memory of every objective, relative to DPO.

One training step = policy forward (with grad) + reference forward (no grad) +
objective.loss_from_logits + backward, on a tiny GPT-2 (2 layers, d=128,
V=32768) with B=4 pairs of T=256 tokens whose last 128 are the response;
the policy is the reference plus small noise, so drift measures see Δ ≠ 0.
Each objective runs in its own subprocess, so peak memory is its own:
on CPU the peak resident set size (ru_maxrss) above the resident size after
setup, on CUDA torch.cuda.max_memory_allocated above the allocation after setup.
Step time is the median over the timed steps after warm-up, the smallest such
median over `--rounds` interleaved runs (a shared machine's bursts of other load
then disturb one run, not the comparison); peak memory the largest.

    python experiments/bench_objectives.py                 # all objectives
    python experiments/bench_objectives.py --objectives dpo radpo --steps 5

Prints a table and writes experiments/results/bench_objectives.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from riskalign import objectives

RESULTS = Path(__file__).resolve().parent / "results" / "bench_objectives.json"
# (step time, peak memory) ceilings relative to dpo
TARGETS = {"tdpo": (1.3, 1.25), "radpo": (1.3, 1.25), "radpo_erm": (1.3, 1.25), "wdpo": (2.5, 2.5)}
# Extra variants benchmarked besides the named objectives: name → (objective, overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "radpo_erm": ("radpo", {"drift": {"measure": "erm", "mu": 5.0}})
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objectives", nargs="*", default=[*objectives.names(), *VARIANTS])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per objective")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="runs per objective, interleaved")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads per run (default: torch's choice)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.worker, args.steps, args.warmup, args.device)))
        return
    names = list(dict.fromkeys(["dpo", *args.objectives]))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):  # interleaved, so a burst of other load hits one run, not all
        for name in names:
            command = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps)]
            command += ["--warmup", str(args.warmup), "--device", args.device]
            command += ["--threads", str(args.threads)] if args.threads else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"measured {name}: {runs[name][-1]}", file=sys.stderr)
    # The fastest round's median step: the least disturbed by other processes.
    rows = {
        name: {
            "step_s": min(run["step_s"] for run in measured),
            "peak_mib": max(run["peak_mib"] for run in measured),
            "rounds": measured,
        }
        for name, measured in runs.items()
    }
    report(rows, args)


def measure(name: str, steps: int, warmup: int, device: str) -> dict[str, float]:
    """Median step time (s) and peak extra memory (MiB) of one objective, in this process."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base, overrides = VARIANTS.get(name, (name, {}))
    objective = objectives.build(base, **overrides)
    config = GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=32768, n_positions=256)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0  # deterministic steps
    config.bos_token_id = config.eos_token_id = 0  # inside the vocabulary
    # eager attention: the WDPO penalty needs second derivatives through attention
    config._attn_implementation = "eager"
    policy = GPT2LMHeadModel(config).to(device)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    # As after some training, the policy is not the reference: drift measures see Δ ≠ 0
    # (at Δ = 0 every entry ties and the CVaR search is a degenerate case).
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    pairs, length, response = 4, 256, 128
    input_ids = torch.randint(0, config.vocab_size, (2 * pairs, length), device=device)
    # labels[:, t] is the token logits[:, t] predicts: shift the labels, not the
    # logits, so the [2B, T, V] logits stay contiguous and are never copied.
    labels = torch.full_like(input_ids, -100)
    labels[:, length - response - 1 : -1] = input_ids[:, length - response :]

    def step() -> None:
        policy.zero_grad(set_to_none=True)
        embeds = policy.transformer.wte(input_ids)
        logits = policy(inputs_embeds=embeds).logits
        ref_logits = None
        if objective.requires_reference:
            with torch.no_grad():
                ref_logits = reference(input_ids).logits
        kwargs = {"inputs_embeds": embeds} if objective.requires_input_embeddings else {}
        loss, _ = objective.loss_from_logits(logits, ref_logits, labels, **kwargs)
        loss.backward()

    baseline = _memory_now(device)
    times = []
    for index in range(warmup + steps):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "step_s": statistics.median(times),
        "peak_mib": (_memory_peak(device) - baseline) / 2**20,
    }


def report(rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    dpo = rows["dpo"]
    lines = [f"{'objective':<10} {'step s':>8} {'x dpo':>6} {'peak MiB':>9} {'x dpo':>6}  target"]
    for name, row in rows.items():
        row["time_ratio"] = row["step_s"] / dpo["step_s"]
        row["memory_ratio"] = row["peak_mib"] / dpo["peak_mib"]
        verdict = ""
        if name in TARGETS:
            time_max, memory_max = TARGETS[name]
            row["target_time_ratio"], row["target_memory_ratio"] = time_max, memory_max
            met = row["time_ratio"] <= time_max and row["memory_ratio"] <= memory_max
            row["target_met"] = met
            verdict = f"<= {time_max}x time, <= {memory_max}x memory: {'met' if met else 'MISSED'}"
        lines.append(
            f"{name:<10} {row['step_s']:8.3f} {row['time_ratio']:6.2f} {row['peak_mib']:9.0f} "
            f"{row['memory_ratio']:6.2f}  {verdict}"
        )
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_1m_at_end": os.getloadavg()[0],  # other work on the machine skews times
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "memory": "CUDA max_memory_allocated"
        if args.device.startswith("cuda")
        else "peak RSS above RSS after setup",
    }
    RESULTS.write_text(json.dumps({"meta": meta, "objectives": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def _memory_now(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return float(torch.cuda.memory_allocated(device))
    with open("/proc/self/statm") as statm:
        return float(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_peak(device: str) -> float:
    if device.startswith("cuda"):
        return float(torch.cuda.max_memory_allocated(device))
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
