"""riskalign through `python -m riskalign.train`, as users run it, against TRL's DPOTrainer
set up as TRL's docs show, on SmolLM2-135M: step time, tokens/s and peak memory.

    python experiments/bench_vs_trl.py                       # 3 rounds, 12 steps each
    python experiments/bench_vs_trl.py --rounds 1 --steps 6  # a quick look
    python experiments/bench_vs_trl.py --runs trl "riskalign dpo"

Both sides train one epoch over the same `batch_size x steps` pairs of the embedded world
(a directory of train.jsonl and test.jsonl that both read), with batch 8 pairs, max_length
512, AdamW at a constant learning rate 1e-6, beta 0.1, clipping at 1.0, each in its own
child process. Each side shuffles the pairs its own way; both see the same tokens in all.

TRL is `DPOTrainer(model, args=DPOConfig(...), train_dataset, processing_class)` with
DPOConfig's own defaults for everything not named above: on this CPU that is bf16
autocast (`bf16=True` unless fp16 is set), gradient checkpointing on, its fused LM head
(log-probabilities without full logits), a reference model it builds itself and random
sampling. The "TRL fp32, no checkpointing" run is how experiments/bench/ used to set it up
(`bf16=False`), kept to show where that bench's slower TRL figures came from.

Step times are each side's own per-step timers (riskalign: summary.json's timing; TRL: a
callback around each optimizer step); the first `--warmup` steps are dropped and the rest of
all rounds pooled. Peak memory is each child's peak RSS (wait4). Rounds interleave the runs,
so drift in the machine's speed hits all of them. Writes experiments/results/vs_trl.json.
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
RESULTS = REPO / "experiments" / "results" / "vs_trl.json"
MODEL = "smollm2-135m"
SETTINGS = {"batch_size": 8, "max_length": 512, "lr": 1e-6, "beta": 0.1, "max_grad_norm": 1.0}

# label -> (side, riskalign overrides or TRL DPOConfig keyword arguments)
CHECKPOINTING = "model.gradient_checkpointing=true"
RUNS: dict[str, tuple[str, list[str] | dict]] = {
    "riskalign dpo": ("riskalign", ["objective=dpo"]),
    "riskalign radpo": ("riskalign", ["objective=radpo"]),
    "riskalign dpo + checkpointing": ("riskalign", ["objective=dpo", CHECKPOINTING]),
    "riskalign radpo + checkpointing": ("riskalign", ["objective=radpo", CHECKPOINTING]),
    "riskalign dpo bf16": ("riskalign", ["objective=dpo", "trainer.precision=bf16-mixed"]),
    "TRL DPOTrainer (docs' defaults)": ("trl", {}),
    "TRL fp32 (bf16=False)": ("trl", {"bf16": False}),
    "TRL fp32, no checkpointing": ("trl", {"bf16": False, "gradient_checkpointing": False}),
}
DEFAULT_RUNS = ["riskalign dpo", "riskalign radpo", "riskalign dpo + checkpointing",
                "riskalign radpo + checkpointing", "TRL DPOTrainer (docs' defaults)",
                "TRL fp32 (bf16=False)", "TRL fp32, no checkpointing"]


def write_pairs(directory: Path, count: int) -> tuple[Path, str]:
    """The first `count` training pairs of the embedded world (and 8 held out) as JSONL;
    the SmolLM2 model directory riskalign converted."""
    from datasets import load_from_disk
    from world_model import world_and_model

    _, world, source = world_and_model(MODEL)

    splits = load_from_disk(str(world.dataset_dir))
    directory.mkdir(parents=True, exist_ok=True)
    for split, name, size in (("train", "train", count), ("test", "test", 8)):
        with (directory / f"{name}.jsonl").open("w") as handle:
            for row in splits[split].select(range(size)):
                record = {key: row[key] for key in ("prompt", "chosen", "rejected")}
                handle.write(json.dumps(record) + "\n")
    return directory, source


def riskalign_command(overrides: list[str], pairs: Path, steps: int, output: Path) -> list[str]:
    s = SETTINGS
    return [
        sys.executable, "-m", "riskalign.train", f"model={MODEL}", "data=local",
        f"data.path={pairs}", f"data.batch_size={s['batch_size']}",
        f"data.max_length={s['max_length']}", f"data.max_prompt_length={s['max_length'] // 2}",
        f"trainer.max_steps={steps}", f"optim.lr={s['lr']}", "optim.scheduler=constant",
        "optim.warmup_steps=0", f"trainer.gradient_clip_val={s['max_grad_norm']}",
        "logger=none", "eval.num_points=2", "eval.num_prompts=8",
        "eval.num_pairs=8", "checkpoint.every_n_steps=null", "checkpoint.save_policy=false",
        f"paths.output_root={output}", *overrides, f"objective.beta={s['beta']}",
    ]


def riskalign_figures(output: Path) -> dict:
    run = max(output.glob("runs/*/*/summary.json"), key=lambda path: path.stat().st_mtime).parent
    summary = json.loads((run / "summary.json").read_text())
    return {"step_seconds": summary["timing"]["step_seconds"],
            "precision": summary.get("config", {}).get("trainer", {}).get("precision")}


def trl_child(spec: dict) -> dict:
    """TRL's DPOTrainer as its docs show, inside a child process."""
    import time

    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    s = SETTINGS
    model = AutoModelForCausalLM.from_pretrained(spec["source"])
    tokenizer = AutoTokenizer.from_pretrained(spec["source"])
    train_dataset = load_dataset("json", data_files=str(Path(spec["pairs"]) / "train.jsonl"),
                                 split="train")
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=s["batch_size"],
        max_steps=spec["steps"], learning_rate=s["lr"], lr_scheduler_type="constant",
        beta=s["beta"], max_length=s["max_length"], max_grad_norm=s["max_grad_norm"],
        report_to="none", save_strategy="no", disable_tqdm=True,
        # without a GPU TRL refuses its own bf16 default unless told to train on the CPU
        use_cpu=not torch.cuda.is_available(), **spec["config"],
    )
    seconds: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            seconds.append(time.perf_counter() - self.started)

    trainer = DPOTrainer(model=model, args=args, train_dataset=train_dataset,
                         processing_class=tokenizer, callbacks=[StepTimer()])
    trainer.train()
    return {"step_seconds": seconds,
            "precision": "bf16 autocast" if args.bf16 else "fp32",
            "gradient_checkpointing": args.gradient_checkpointing}


def measure(label: str, pairs: Path, source: str, steps: int, scratch: Path) -> dict:
    """One run of `label` in a child process: its figures and its peak RSS."""
    side, setting = RUNS[label]
    out_file = scratch / "out.json"
    out_file.unlink(missing_ok=True)
    if side == "riskalign":
        output = Path(tempfile.mkdtemp(dir=scratch))
        command = riskalign_command(setting, pairs, steps, output)
    else:
        spec = {"source": source, "pairs": str(pairs), "steps": steps, "config": setting}
        command = [sys.executable, __file__, "--trl-child", json.dumps(spec), str(out_file)]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    log_file = scratch / f"{label.replace(' ', '_').replace('/', '_')}.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log_file.read_text().strip().splitlines()[-3:]
        return {"error": f"exit {code}: {' | '.join(tail)} (log: {log_file})"}
    figures = riskalign_figures(output) if side == "riskalign" else json.loads(
        out_file.read_text())
    return {**figures, "peak_rss_gb": usage.ru_maxrss / 2**20}


def pooled(results: list[dict], warmup: int) -> dict:
    """One row from several rounds: median over every timed step, the largest peak."""
    failed = [result for result in results if "error" in result]
    if failed:
        return failed[0]
    seconds = [s for r in results for s in r["step_seconds"][warmup:]]
    median = statistics.median(seconds)
    return {"step_seconds_median": median, "step_seconds_min": min(seconds),
            "step_seconds_max": max(seconds), "steps_timed": len(seconds),
            "peak_rss_gb": max(r["peak_rss_gb"] for r in results),
            "precision": results[0].get("precision"),
            "rounds": [{"step_seconds": r["step_seconds"], "peak_rss_gb": r["peak_rss_gb"]}
                       for r in results]}


TRL_BASELINES = ("TRL DPOTrainer (docs' defaults)", "TRL fp32, no checkpointing")


def ratio_table(rows: dict[str, dict]) -> dict[str, float]:
    """Each riskalign run against each TRL baseline measured (speed: TRL's median step over
    its own; memory: its peak RSS over TRL's), and radpo against dpo."""
    ok = {label: row for label, row in rows.items() if "error" not in row}
    ratios = {}
    for baseline in (b for b in TRL_BASELINES if b in ok):
        trl = ok[baseline]
        for label, row in ok.items():
            if RUNS[label][0] != "riskalign":
                continue
            ratios[f"{label} vs {baseline}: speed"] = (
                trl["step_seconds_median"] / row["step_seconds_median"])
            ratios[f"{label} vs {baseline}: peak RSS"] = row["peak_rss_gb"] / trl["peak_rss_gb"]
    for suffix in ("", " + checkpointing"):
        dpo, radpo = ok.get(f"riskalign dpo{suffix}"), ok.get(f"riskalign radpo{suffix}")
        if dpo and radpo:
            ratios[f"riskalign radpo{suffix} / dpo{suffix}: peak RSS"] = (
                radpo["peak_rss_gb"] / dpo["peak_rss_gb"])
            ratios[f"riskalign radpo{suffix} / dpo{suffix}: step time"] = (
                radpo["step_seconds_median"] / dpo["step_seconds_median"])
    return ratios


def peak_matmul_flops() -> dict:
    """This machine's matmul rate, the yardstick of the achieved FLOP/s: fp32 on a CPU (bf16 on
    a GPU), the best of several 4096 x 4096 products with torch's default threads."""
    import time

    import torch

    gpu = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float32)
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    b = torch.randn(4096, 4096, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        if gpu:
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if gpu:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return {"flops": 2 * 4096**3 / best, "dtype": str(dtype), "device": device,
            "threads": torch.get_num_threads()}


def model_flops_per_step(pairs: Path, source: str, steps: int) -> dict:
    """Model FLOPs of one step, averaged over the epoch both sides train: 6·N per token through
    the policy's body (forward + backward), 2·N per token through the reference's, and the LM
    head (2·H·V per response position and pass: 3 policy passes, 1 reference), N the
    parameters outside the embedding and head. Recomputation (checkpointing, riskalign's
    re-projection in the backward) is not counted: it is the price of a memory saving."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from riskalign.data.preference import tokenize_pair
    from riskalign.models.loading import load_tokenizer

    config = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings().weight
    embedding = model.get_input_embeddings().weight
    shared = head is embedding
    body = sum(p.numel() for p in model.parameters()) - embedding.numel() - (
        0 if shared else head.numel())
    tokenizer = load_tokenizer(source)
    tokens = responses = 0
    for line in (pairs / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        ids = tokenize_pair(tokenizer, record["prompt"], record["chosen"], record["rejected"],
                            max_length=SETTINGS["max_length"],
                            max_prompt_length=SETTINGS["max_length"] // 2)
        response = len(ids["chosen_ids"]) + len(ids["rejected_ids"])
        tokens += 2 * len(ids["prompt_ids"]) + response
        responses += response
    head_flops = 2 * config.hidden_size * config.vocab_size
    total = 8 * body * tokens + 4 * head_flops * responses
    return {"flops_per_step": total / steps, "body_parameters": body,
            "tokens_per_step": tokens / steps, "response_tokens_per_step": responses / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="steps per run (one epoch)")
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped from each run")
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, choices=list(RUNS))
    parser.add_argument("--trl-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_child:
        spec, out_file = args.trl_child
        Path(out_file).write_text(json.dumps(trl_child(json.loads(spec))))
        return
    scratch = Path(tempfile.mkdtemp(prefix="vs-trl-"))
    pairs, source = write_pairs(scratch / "pairs", SETTINGS["batch_size"] * args.steps)
    measured: dict[str, list[dict]] = {label: [] for label in args.runs}
    for round_index in range(args.rounds):
        for label in args.runs:
            result = measure(label, pairs, source, args.steps, scratch)
            measured[label].append(result)
            shown = result.get("error") or (
                f"median step {statistics.median(result['step_seconds'][args.warmup:]):.2f} s, "
                f"peak RSS {result['peak_rss_gb']:.2f} GB")
            print(f"round {round_index + 1}/{args.rounds} {label}: {shown}", flush=True)
    rows = {label: pooled(results, args.warmup) for label, results in measured.items()}
    ratios = ratio_table(rows)
    peak, work = peak_matmul_flops(), model_flops_per_step(pairs, source, args.steps)
    print(f"\npeak matmul: {peak['flops'] / 1e9:.0f} GFLOP/s ({peak['dtype']}, {peak['device']}, "
          f"{peak['threads']} threads); model FLOPs per step {work['flops_per_step'] / 1e9:.0f} G")
    print("\n| run | precision | step (s, median) | tokens/s | model GFLOP/s | of peak "
          "| peak RSS (GB) |\n|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        if "error" in row:
            print(f"| {label} | failed: {row['error']} |")
            continue
        row["achieved_flops"] = work["flops_per_step"] / row["step_seconds_median"]
        row["tokens_per_second"] = work["tokens_per_step"] / row["step_seconds_median"]
        row["fraction_of_peak"] = row["achieved_flops"] / peak["flops"]
        print(f"| {label} | {row['precision']} | {row['step_seconds_median']:.2f} | "
              f"{row['tokens_per_second']:.0f} | {row['achieved_flops'] / 1e9:.0f} | "
              f"{row['fraction_of_peak']:.0%} | {row['peak_rss_gb']:.2f} |")
    print("\n| ratio | value |\n|---|---|")
    for name, value in ratios.items():
        print(f"| {name} | {value:.2f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"settings": SETTINGS, "args": vars(args), "rows": rows,
                                   "ratios": ratios, "peak_matmul": peak, "work": work},
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
