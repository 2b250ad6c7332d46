"""Tokens/s of the evaluation sampler against transformers' `model.generate`, on SmolLM2-135M.

    python experiments/bench_generation.py                 # 256 prompts, batch 128, 24 tokens
    python experiments/bench_generation.py --prompts 64 --batch-size 32 --repeats 3

Both sample one completion per held-out prompt of the embedded world (what an evaluation
does), at temperature 1 from the full distribution (generate: top_k=0, top_p=1.0, so neither
truncates it), `max_new_tokens` each, left-padded batches of `batch_size`, under no_grad, in
this one process, alternating sampler and generate over `repeats` rounds. Tokens/s counts the
generated tokens up to and including each row's EOS. Writes
experiments/results/generation.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "generation.json"


def load(model_name: str):
    from datasets import load_from_disk
    from world_model import world_and_model

    from riskalign.models.loading import load_causal_lm, load_tokenizer

    cfg, world, source = world_and_model(model_name)

    prompts = list(dict.fromkeys(load_from_disk(str(world.dataset_dir))["test"]["prompt"]))
    model = load_causal_lm(source, cfg.model.dtype, cfg.model.attn_implementation).eval()
    return model, load_tokenizer(source), prompts


def with_sampler(model, tokenizer, prompts, args) -> tuple[float, int]:
    from riskalign.models.sampling import sample_completions

    started = time.perf_counter()
    tokens = sum(int(batch.completion_mask.sum()) for batch in sample_completions(
        model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, temperature=1.0,
        seed=0, batch_size=args.batch_size))
    return time.perf_counter() - started, tokens


def with_generate(model, tokenizer, prompts, args) -> tuple[float, int]:
    import torch

    from riskalign.models.sampling import encode_prompts

    torch.manual_seed(0)
    started, tokens = time.perf_counter(), 0
    with torch.no_grad():
        for start in range(0, len(prompts), args.batch_size):
            ids, mask = encode_prompts(tokenizer, prompts[start:start + args.batch_size],
                                       torch.device("cpu"))
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=args.max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            generated = out[:, ids.size(1):]
            # up to and including each row's first EOS, as the sampler counts
            ended = (generated == tokenizer.eos_token_id).long().cumsum(1)
            tokens += int(((ended == 0) | ((ended == 1) & (generated == tokenizer.eos_token_id)))
                          .sum())
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    model, tokenizer, prompts = load(args.model)
    prompts = prompts[: args.prompts]
    with_sampler(model, tokenizer, prompts[:8], args)  # warm-up: first calls pay set-up
    with_generate(model, tokenizer, prompts[:8], args)
    runs: dict[str, list[dict]] = {"riskalign sampler": [], "model.generate": []}
    for _ in range(args.repeats):
        for name, run in (("riskalign sampler", with_sampler), ("model.generate", with_generate)):
            seconds, tokens = run(model, tokenizer, prompts, args)
            runs[name].append({"seconds": round(seconds, 3), "tokens": tokens,
                               "tokens_per_second": round(tokens / seconds, 1)})
            print(name, runs[name][-1], flush=True)
    rows = {name: {"tokens_per_second_median": statistics.median(
        r["tokens_per_second"] for r in results), "runs": results}
        for name, results in runs.items()}
    ratio = (rows["riskalign sampler"]["tokens_per_second_median"]
             / rows["model.generate"]["tokens_per_second_median"])
    print("\n| sampler | tokens/s (median) |\n|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['tokens_per_second_median']:.0f} |")
    print(f"\nriskalign sampler / model.generate: {ratio:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "torch_threads": torch.get_num_threads(),
                                   "rows": rows, "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
