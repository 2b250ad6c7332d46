"""Preference pairs from a model's own samples: K completions per prompt, scored, one pair kept.

Work is written in shards of prompts, each one file renamed into place when
complete, so an interrupted generation resumes by skipping finished shards. A
shard's samples depend only on the seed and its index, so a resumed run writes
exactly what an uninterrupted one would. The finished dataset is assembled
into `dataset/` (a `save_to_disk` DatasetDict) whose marker is written last.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from rich.progress import Progress

from riskalign.config.differences import first_difference
from riskalign.data.pair_settings import PairSettings
from riskalign.errors import ConfigError
from riskalign.models.sampling import sample_completions
from riskalign.rewards import RewardModel
from riskalign.runs.artifacts import build_atomically, is_complete, write_json_atomic

log = logging.getLogger(__name__)

DATASET_MARKER = "pairs.json"
IDENTITY_FILE = "identity.json"  # written first: what the shards were made with


def select_pair(
    scores: torch.Tensor, settings: PairSettings, generator: torch.Generator
) -> tuple[int, int] | None:
    """(chosen, rejected) indices among one prompt's K samples, or None if they tie."""
    if settings.selection == "best_worst":
        best, worst = int(scores.argmax()), int(scores.argmin())
        return None if scores[best] == scores[worst] else (best, worst)
    first, second = torch.randperm(len(scores), generator=generator)[:2].tolist()
    gap = (scores[first] - scores[second]) / settings.bt_temperature
    first_wins = bool(torch.rand((), generator=generator) < torch.sigmoid(gap))
    return (first, second) if first_wins else (second, first)


def _shard_pairs(
    model, tokenizer, prompts: list[str], reward: RewardModel, settings: PairSettings, seed: int,
    progress: Progress, task,
) -> dict[str, Any]:
    k = settings.samples_per_prompt
    repeated = [prompt for prompt in prompts for _ in range(k)]
    completions: list[str] = []
    for batch in sample_completions(
        model, tokenizer, repeated, max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature, seed=seed, batch_size=settings.batch_size,
    ):
        completions.extend(batch.completions)
        progress.advance(task, len(batch.prompts) / k)
    scores = reward.score(completions, prompts=repeated).view(len(prompts), k)
    coin = torch.Generator().manual_seed(seed)
    pairs, skipped = [], 0
    for index, prompt in enumerate(prompts):
        texts = completions[index * k:(index + 1) * k]
        picked = select_pair(scores[index], settings, coin)
        if picked is None or not _usable(texts[picked[0]], texts[picked[1]]):
            skipped += 1
            continue
        chosen, rejected = picked
        pairs.append({
            "prompt": prompt,
            "chosen": texts[chosen],
            "rejected": texts[rejected],
            "chosen_reward": float(scores[index, chosen]),
            "rejected_reward": float(scores[index, rejected]),
        })
    return {"pairs": pairs, "skipped": skipped, "mean_reward": float(scores.mean())}


def _usable(chosen: str, rejected: str) -> bool:
    """A pair teaches something only if both sides say something and they differ."""
    return bool(chosen.strip()) and bool(rejected.strip()) and chosen != rejected


def generate_pairs(
    model,
    tokenizer,
    prompts_by_split: Mapping[str, list[str]],
    reward: RewardModel,
    settings: PairSettings,
    out_dir: str | Path,
    sources: Mapping[str, Any] | None = None,
) -> Path:
    """Write (or resume) the pairs of every split; return the finished `dataset/` directory.

    `sources` identifies what else determines the pairs (the model's and the reward's
    fingerprints). With the settings and the prompts they are recorded in `out_dir` before
    the first shard: a rerun that differs in any is refused rather than mixing shards or
    returning the other run's dataset.
    """
    out_dir = Path(out_dir)
    dataset_dir = out_dir / "dataset"
    claim_output(out_dir, pairs_identity(settings, prompts_by_split, sources))
    if is_complete(dataset_dir, DATASET_MARKER):
        log.info("Pairs: reusing %s", dataset_dir)
        return dataset_dir
    shard_files: dict[str, list[Path]] = {}
    with Progress() as progress:
        for split_index, (split, prompts) in enumerate(prompts_by_split.items()):
            prompts = prompts[: settings.max_prompts] if settings.max_prompts else prompts
            shard_dir = out_dir / "shards" / split
            shard_dir.mkdir(parents=True, exist_ok=True)
            task = progress.add_task(f"pairs: {split}", total=len(prompts))
            shard_files[split] = []
            for shard_index, start in enumerate(range(0, len(prompts), settings.shard_size)):
                chunk = prompts[start:start + settings.shard_size]
                path = shard_dir / f"shard-{shard_index:05d}.json"
                shard_files[split].append(path)
                if path.is_file():  # done by an earlier, interrupted run
                    progress.advance(task, len(chunk))
                    continue
                seed = settings.seed * 1_000_003 + split_index * 10_007 + shard_index
                shard = _shard_pairs(model, tokenizer, chunk, reward, settings, seed, progress,
                                     task)
                write_json_atomic(path, {"prompts": len(chunk), **shard})
    return build_atomically(
        dataset_dir, DATASET_MARKER, lambda staging: _assemble(shard_files, settings, staging)
    )


def pairs_identity(settings: PairSettings, prompts_by_split: Mapping[str, list[str]],
                   sources: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything that determines the pairs: the settings, a digest of each split's prompts
    and the caller's `sources` (model and reward)."""
    prompts = {split: hashlib.sha256("\0".join(texts).encode()).hexdigest()
               for split, texts in prompts_by_split.items()}
    return {"settings": asdict(settings), "prompts": prompts, **(sources or {})}


def claim_output(out_dir: Path, identity: dict[str, Any]) -> None:
    """Record `identity` in a new output directory; refuse one that holds another's work."""
    recorded_file = out_dir / IDENTITY_FILE
    if recorded_file.is_file():
        recorded = json.loads(recorded_file.read_text())
        difference = first_difference(recorded, json.loads(json.dumps(identity, default=str)),
                                      "there")
        if difference is None:
            return
        raise ConfigError(f"pairs output {out_dir} holds pairs made otherwise ({difference}): "
                          "give another output directory, or delete it to start again")
    if (out_dir / "shards").exists() or (out_dir / "dataset").exists():  # not its logs/
        raise ConfigError(f"pairs output {out_dir} holds pairs but records no settings "
                          f"({IDENTITY_FILE}): give another output directory, or delete it")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(recorded_file, identity)


def _assemble(
    shard_files: Mapping[str, list[Path]], settings: PairSettings, staging: Path
) -> dict[str, Any]:
    splits, stats = {}, {}
    for split, paths in shard_files.items():
        shards = [json.loads(path.read_text()) for path in paths]
        records = [pair for shard in shards for pair in shard["pairs"]]
        if not records:
            raise ConfigError(
                f"pairs: every prompt of split {split!r} gave tied or empty samples: no pair "
                "to keep (raise samples_per_prompt, temperature or max_new_tokens)"
            )
        splits[split] = Dataset.from_list(records)
        stats[split] = {
            "prompts": sum(shard["prompts"] for shard in shards),
            "pairs": len(records),
            "skipped": sum(shard["skipped"] for shard in shards),  # tied or empty samples
            "chosen_reward_mean": sum(r["chosen_reward"] for r in records) / len(records),
            "rejected_reward_mean": sum(r["rejected_reward"] for r in records) / len(records),
        }
    DatasetDict(splits).save_to_disk(str(staging))
    log.info("Pairs: %s", stats)
    return {"settings": asdict(settings), "stats": stats}
