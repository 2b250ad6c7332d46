"""The embedded world: an offline stand-in for the IMDb controlled-sentiment task.

From nothing but the package it writes, into a cache directory keyed by a hash
of its config:

    model/    an ordinary HF GPT-2 checkpoint with its tokenizer: the SFT base,
              trained by next-token prediction on grammar reviews
    dataset/  an ordinary HF DatasetDict (`save_to_disk`) with `prompt`,
              `chosen`, `rejected` (+ their scores): two completions per review
              opening sampled from the SFT base, scored by VADER and ordered by
              a seeded Bradley-Terry draw
    world.json  the config and build statistics; written last, it marks the
              world complete

The build happens in a temporary directory that is renamed when complete, so a
crash never leaves a world that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from rich.progress import track
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from riskalign.models.sampling import sample_completions
from riskalign.rewards.vader import VaderReward
from riskalign.runs.artifacts import build_atomically, is_complete
from riskalign.worlds import grammar
from riskalign.worlds.settings import check_world_settings
from riskalign.worlds.tokenizer import word_level_tokenizer

log = logging.getLogger(__name__)

# Bump when the code that builds the world changes what it writes.
WORLD_VERSION = 3
COMPLETE_MARKER = "world.json"


@dataclass(frozen=True)
class World:
    """Where a built world lives."""

    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    def info(self) -> dict[str, Any]:
        return json.loads((self.root / COMPLETE_MARKER).read_text())


def world_key(config: dict[str, Any]) -> str:
    """A short hash of everything that determines the world's contents."""
    payload = json.dumps({"version": WORLD_VERSION, **config}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ensure_reviews_world(config: dict[str, Any], cache_dir: str | os.PathLike) -> World:
    """Return the cached world for `config`, building it first if it is not there; settings
    the builder cannot use are refused first (ConfigError, riskalign.worlds.settings)."""
    check_world_settings(config)
    root = Path(cache_dir) / "worlds" / f"reviews-{world_key(config)}"
    if is_complete(root, COMPLETE_MARKER):
        log.info("Embedded world: reusing %s", root)
    build_atomically(root, COMPLETE_MARKER, lambda staging: _build(config, World(staging)))
    return World(root)


def _build(config: dict[str, Any], world: World) -> dict[str, Any]:
    started = time.perf_counter()
    seed = int(config["seed"])
    log.info("Embedded world: building in %s (seed %d)", world.root, seed)
    tokenizer = word_level_tokenizer(grammar.vocabulary())
    model = _sft_base(tokenizer, config, seed)
    model.save_pretrained(world.model_dir)
    tokenizer.save_pretrained(world.model_dir)

    pairs_cfg = config["pairs"]
    rng = random.Random(seed + 1)
    low, high = pairs_cfg["prompt_words"]  # checked to fit n_positions with max_new_tokens
    splits: dict[str, list[str]] = {}
    taken: set[str] = set()  # distinct prompts, and none shared by train and test
    for split in ("train", "test"):
        splits[split] = _distinct_prompts(rng, int(pairs_cfg[f"{split}_prompts"]), low, high, taken)
    reward = VaderReward()
    stats: dict[str, Any] = {}
    dataset = DatasetDict()
    for index, (split, prompts) in enumerate(splits.items()):
        records = _preference_pairs(model, tokenizer, prompts, reward, pairs_cfg, seed + 2 + index)
        dataset[split] = Dataset.from_list(records)
        stats[f"{split}_pairs"] = len(records)
    dataset.save_to_disk(str(world.dataset_dir))
    stats["build_seconds"] = round(time.perf_counter() - started, 1)
    log.info("Embedded world: built in %.1fs (%s)", stats["build_seconds"], stats)
    return {"config": config, "version": WORLD_VERSION, "stats": stats}


def _sft_base(tokenizer: PreTrainedTokenizerFast, config: dict[str, Any], seed: int):
    """A small GPT-2 trained by next-token prediction on grammar reviews.

    Reviews are packed end to end (<bos> review <eos> <bos> ...) into blocks of
    `n_positions` tokens: no padding, so every FLOP of this CPU budget counts.
    """
    sft, arch = config["sft"], config["model"]
    block = int(arch["n_positions"])
    texts = list(grammar.reviews(int(config["corpus_size"]), seed))
    stream = [
        token
        for ids in tokenizer(texts)["input_ids"]
        for token in ids + [tokenizer.eos_token_id]
    ]
    blocks = torch.tensor(stream[: len(stream) // block * block]).view(-1, block)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(
            GPT2Config(
                **arch,
                vocab_size=len(tokenizer),
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    steps, batch_size, lr = int(sft["steps"]), int(sft["batch_size"]), float(sft["lr"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.1
    )
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in track(range(steps), description="world: SFT base", transient=True):
        batch = blocks[torch.randint(len(blocks), (batch_size,), generator=order)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    log.info("Embedded world: SFT base final loss %.3f", loss.item())
    return model.eval()


def _distinct_prompts(
    rng: random.Random, count: int, low: int, high: int, taken: set[str]
) -> list[str]:
    prompts: list[str] = []
    for _ in range(100 * count):
        if len(prompts) == count:
            return prompts
        prompt = grammar.review_prompt(rng, low, high)
        if prompt not in taken:
            taken.add(prompt)
            prompts.append(prompt)
    raise ValueError(f"the grammar yields too few distinct prompts of {low}-{high} words")


def _preference_pairs(model, tokenizer, prompts, reward, cfg, seed: int) -> list[dict[str, Any]]:
    """Two samples per prompt, labelled by a Bradley-Terry draw on their reward gap."""
    samples = []
    for draw in range(2):
        batches = sample_completions(
            model,
            tokenizer,
            prompts,
            max_new_tokens=int(cfg["max_new_tokens"]),
            temperature=float(cfg["temperature"]),
            seed=seed * 2 + draw,
            batch_size=int(cfg["batch_size"]),
        )
        samples.append([text for batch in batches for text in batch.completions])
    first, second = samples
    scores_a, scores_b = reward.score(first), reward.score(second)
    coin = torch.Generator().manual_seed(seed)
    prefer_a = torch.sigmoid((scores_a - scores_b) / float(cfg["bt_temperature"]))
    a_wins = torch.rand(len(prompts), generator=coin) < prefer_a
    records = []
    for i, prompt in enumerate(prompts):
        if first[i] == second[i] or not first[i] or not second[i]:
            continue  # no preference signal in a tie or an empty completion
        a, b, sa, sb = first[i], second[i], float(scores_a[i]), float(scores_b[i])
        if not a_wins[i]:
            a, b, sa, sb = b, a, sb, sa
        records.append(
            {"prompt": prompt, "chosen": a, "rejected": b, "chosen_score": sa, "rejected_score": sb}
        )
    return records
