"""torch.compile and bf16 autocast on this CPU, on SmolLM2-135M: step time of one training
step's forward + backward (policy, reference, token statistics) and, for bf16, how far the
objectives' step-0 values move from fp32.

    python experiments/bench_cpu_options.py                      # dpo, tdpo, radpo
    python experiments/bench_cpu_options.py --objectives dpo --repeats 3

One process, the embedded world's first `pairs` training pairs as one batch, the policy and
a frozen reference loaded as `riskalign.train` loads them (model=smollm2-135m). For each
objective, in this order: eager fp32, bf16 autocast (eager; what trainer.precision=bf16-mixed
runs) and fp32 with both models compiled (model.compile=true: `nn.Module.compile`, dynamic
shapes). Step time is the median of `repeats` after one untimed step (for the compiled
models the first step is the compilation, reported on its own). The deviation of bf16 is
|value_bf16 - value_fp32| / |value_fp32| for the loss and each logged metric at step 0.
Writes experiments/results/cpu_options.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "cpu_options.json"


def setup(pairs: int):
    from datasets import load_from_disk
    from world_model import world_and_model

    from riskalign.data.preference import collate_pairs, tokenize_pair
    from riskalign.models.loading import load_policy, load_tokenizer
    from riskalign.models.references import load_reference

    cfg, world, source = world_and_model("smollm2-135m")
    tokenizer = load_tokenizer(source)
    rows = load_from_disk(str(world.dataset_dir))["train"].select(range(pairs))
    batch = collate_pairs([tokenize_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"],
                                         max_length=512, max_prompt_length=256) for r in rows],
                          tokenizer.pad_token_id)
    policy = load_policy(source, cfg.model)
    return batch, policy, load_reference(source, cfg.model, policy)


def step(module, batch, bf16: bool) -> tuple[float, dict[str, float]]:
    """Seconds of one forward + backward, and the loss and metrics it gave."""
    import torch

    module.policy.zero_grad(set_to_none=True)
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, metrics = module.loss_and_metrics(batch)
    loss.backward()
    seconds = time.perf_counter() - started
    return seconds, {"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}


def measure(module, batch, bf16: bool, repeats: int) -> dict:
    first, values = step(module, batch, bf16)
    times = [step(module, batch, bf16)[0] for _ in range(repeats)]
    return {"first_step_s": round(first, 2), "step_s_median": round(statistics.median(times), 3),
            "values": values}


def deviation(fp32: dict[str, float], bf16: dict[str, float]) -> dict[str, float]:
    return {key: abs(bf16[key] - value) / max(abs(value), 1e-12)
            for key, value in fp32.items() if key in bf16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["dpo", "tdpo", "radpo"])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    from riskalign import objectives
    from riskalign.modules.alignment import AlignmentModule

    batch, policy, reference = setup(args.pairs)
    optim = {"lr": 1e-6, "weight_decay": 0.0, "betas": [0.9, 0.999], "warmup_steps": 0}
    results: dict[str, dict] = {}
    for name in args.objectives:
        module = AlignmentModule(policy, reference, objectives.build(name), optim)
        results[name] = {"fp32": measure(module, batch, False, args.repeats),
                         "bf16 autocast": measure(module, batch, True, args.repeats)}
        results[name]["bf16 relative deviation"] = deviation(
            results[name]["fp32"]["values"], results[name]["bf16 autocast"]["values"])
        print(name, json.dumps({k: v for k, v in results[name].items()
                                if k != "bf16 relative deviation"}), flush=True)
    # compiled last: compiling changes the modules in place for the rest of the process
    policy.compile(dynamic=True)
    reference.compile(dynamic=True)
    for name in args.objectives:
        module = AlignmentModule(policy, reference, objectives.build(name), optim)
        results[name]["fp32 compiled"] = measure(module, batch, False, args.repeats)
        compiled, eager = results[name]["fp32 compiled"]["values"], results[name]["fp32"]["values"]
        results[name]["compiled relative deviation"] = max(deviation(eager, compiled).values())
        print(name, "compiled", json.dumps(results[name]["fp32 compiled"]), flush=True)
    print("\n| objective | fp32 step (s) | bf16 autocast (s) | fp32 compiled (s) | compile (s) "
          "| bf16: largest relative deviation |\n|---|---|---|---|---|---|")
    for name, r in results.items():
        worst = max(r["bf16 relative deviation"].items(), key=lambda item: item[1])
        print(f"| {name} | {r['fp32']['step_s_median']:.2f} | "
              f"{r['bf16 autocast']['step_s_median']:.2f} | "
              f"{r['fp32 compiled']['step_s_median']:.2f} | "
              f"{r['fp32 compiled']['first_step_s']:.0f} | {worst[1]:.1e} ({worst[0]}) |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "torch_threads": torch.get_num_threads(),
                                   "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
