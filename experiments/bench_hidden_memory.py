"""Peak memory and step time of token statistics from hidden states against full logits.

    OMP_NUM_THREADS=2 python experiments/bench_hidden_memory.py [--vocab 128256] [--pairs 8]
        [--response 512] [--repeats 1]

A synthetic causal LM (LlamaConfig: vocabulary 128256 as Llama-3's, hidden 256, 2 layers,
random weights) as policy and a perturbed copy as reference, fp32 on the CPU, on `pairs`
preference pairs of `response` response tokens each (plus a 16-token prompt). For dpo and
radpo (CVaR drift), one `AlignmentModule.loss_and_metrics` + backward per measurement, with
`head_in_chunks` on (the hidden-state path: no [N, R, V] logits) and off (the logits path),
all in this one process. Peak memory: the RSS high-water mark during the step above the RSS
before it (Linux: /proc/self/clear_refs resets the mark, glibc's malloc_trim hands freed heap
memory back first); the hidden path is measured first, so any memory the allocator still keeps
from an earlier step can only favour the logits path. Prints a table and writes
experiments/results/hidden_memory.json.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import platform
import re
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from riskalign import objectives
from riskalign.data.preference import collate_pairs
from riskalign.modules.alignment import AlignmentModule

RESULTS = Path(__file__).resolve().parent / "results" / "hidden_memory.json"
LIBC = ctypes.CDLL("libc.so.6")  # Linux only, as /proc is
OPTIM = {"lr": 1e-5, "weight_decay": 0.0, "betas": [0.9, 0.999], "warmup_steps": 0}


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--response", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--objectives", default="dpo,radpo")
    parser.add_argument("--note", default="", help="recorded with the results (e.g. the load)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    return parser.parse_args()


def _policy_and_reference(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random Llama and a copy of it perturbed, so that the two differ."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=args.prompt + args.response + 8,
                         tie_word_embeddings=False)
    policy = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    reference = copy.deepcopy(policy)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return policy, reference


def _batch_of(args: argparse.Namespace, response: int) -> dict[str, torch.Tensor]:
    """`pairs` random pairs of `response` tokens each; the same seed for every call."""
    generator = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(1, args.vocab, (n,), generator=generator).tolist()

    return collate_pairs([{"prompt_ids": ids(args.prompt), "chosen_ids": ids(response),
                           "rejected_ids": ids(response)} for _ in range(args.pairs)],
                         pad_token_id=0)


def _step(module: AlignmentModule, data: dict[str, torch.Tensor]) -> None:
    module.policy.zero_grad(set_to_none=False)
    loss, _ = module.loss_and_metrics(data)
    loss.backward()


def _measure_step(
    module: AlignmentModule, batch: dict[str, torch.Tensor]
) -> tuple[float, int, int]:
    """(seconds, RSS before in KiB, RSS high-water mark in KiB) of one step."""
    gc.collect()
    LIBC.malloc_trim(0)  # freed heap memory back to the system: RSS counts live memory only
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    _step(module, batch)
    seconds = time.perf_counter() - started
    return seconds, before, _status_kib("VmHWM")


def _measure(modules: dict[str, AlignmentModule], batch: dict[str, torch.Tensor],
             repeats: int) -> list[dict]:
    """One row per objective, path and repeat; the hidden path first (see the docstring)."""
    rows = []
    for chunked in (True, False):
        for name, module in modules.items():
            module.head_in_chunks = chunked
            for repeat in range(repeats):
                seconds, before, peak = _measure_step(module, batch)
                rows.append({"objective": name, "path": "hidden" if chunked else "logits",
                             "repeat": repeat, "step_s": round(seconds, 2),
                             "peak_above_start_mib": round((peak - before) / 1024, 1),
                             "peak_rss_mib": round(peak / 1024, 1)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def _summarise(rows: list[dict], names: list[str]) -> dict[str, dict[str, float]]:
    """Print the best of the repeats of each cell and the hidden/logits ratios."""

    def best(name: str, path: str, key: str) -> float:
        return min(r[key] for r in rows if r["objective"] == name and r["path"] == path)

    summary = {}
    print(f"\n{'objective':<10}{'path':<8}{'peak above start MiB':>22}{'step s':>9}")
    for name in names:
        for path in ("logits", "hidden"):
            print(f"{name:<10}{path:<8}{best(name, path, 'peak_above_start_mib'):>22.1f}"
                  f"{best(name, path, 'step_s'):>9.2f}")
        summary[name] = {
            "peak_ratio_hidden_over_logits": round(
                best(name, "hidden", "peak_above_start_mib")
                / best(name, "logits", "peak_above_start_mib"), 3),
            "time_ratio_hidden_over_logits": round(
                best(name, "hidden", "step_s") / best(name, "logits", "step_s"), 3),
        }
        print(f"{name}: hidden/logits peak {summary[name]['peak_ratio_hidden_over_logits']}, "
              f"time {summary[name]['time_ratio_hidden_over_logits']}")
    return summary


def _write(args: argparse.Namespace, rows: list[dict], summary: dict) -> None:
    one_model_logits = (2 * args.pairs * args.response * args.vocab * 4) / 2**20
    args.out.write_text(json.dumps({
        "setup": {**vars(args), "dtype": "float32", "device": "cpu",
                  "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                  "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                  "machine": platform.machine(),
                  "one_model_response_logits_mib": round(one_model_logits, 1)},
        "rows": rows, "summary": summary}, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


def main() -> None:
    args = _arguments()
    policy, reference = _policy_and_reference(args)
    modules = {name: AlignmentModule(policy, reference, objectives.build(name), OPTIM)
               for name in args.objectives.split(",")}
    warmup = _batch_of(args, 8)
    for module in modules.values():  # gradients allocated, lazy initialisation done
        _step(module, warmup)
    rows = _measure(modules, _batch_of(args, args.response), args.repeats)
    _write(args, rows, _summarise(rows, list(modules)))


if __name__ == "__main__":
    main()
