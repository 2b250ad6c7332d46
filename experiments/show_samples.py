"""What a trained policy writes, beside its reference: the first N held-out prompts of a
finished run, each completed once by the reference and once by the policy with the run's
own evaluation seed and settings, scored by the run's reward.

    python experiments/show_samples.py outputs/runs/<date>/<time> [--count 3]

Prints a markdown table; the same samples the run's evaluation drew for those prompts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

import riskalign  # noqa: F401  (registers the config resolvers)
from riskalign.evaluation.alignment import EvalSettings
from riskalign.models.loading import load_causal_lm, load_tokenizer
from riskalign.resolve import ensure_world, eval_sizes, load_configured_data, model_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--count", type=int, default=3)
    args = parser.parse_args()
    cfg = OmegaConf.create(json.loads((args.run_dir / "summary.json").read_text())["config"])
    policy_dir = args.run_dir / "policy"
    tokenizer = load_tokenizer(str(policy_dir))
    world = ensure_world(cfg)
    splits, _ = load_configured_data(cfg, world, tokenizer)
    prompts, _ = eval_sizes(cfg.eval, splits["eval"])
    settings = EvalSettings.from_config(cfg.eval)
    reward = instantiate(cfg.reward)
    completions = {}
    for name, source in (("reference", model_source(cfg, world)), ("policy", str(policy_dir))):
        model = load_causal_lm(source, cfg.model.dtype, cfg.model.attn_implementation)
        # sampled over all the evaluation's prompts, as the run did, so each draw matches
        completions[name] = [text for batch in settings.sample(model, tokenizer, prompts)
                             for text in batch.completions][: args.count]
    scores = {name: reward.score(texts) for name, texts in completions.items()}
    print("| prompt | reference (reward) | policy (reward) |\n|---|---|---|")
    for index, prompt in enumerate(prompts[: args.count]):
        cells = [f"{completions[name][index]!r} ({float(scores[name][index]):.3f})"
                 for name in ("reference", "policy")]
        print(f"| {prompt!r} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
