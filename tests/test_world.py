"""The embedded world: deterministic for a seed, cached, rebuilt when its config changes."""

from __future__ import annotations

import json

import torch
from datasets import load_from_disk
from omegaconf import OmegaConf
from safetensors.torch import load_file

from riskalign.worlds import grammar, reviews
from tests.conftest import compose_config


def _smoke_world_config() -> dict:
    return OmegaConf.to_container(compose_config("debug=smoke").data.world, resolve=True)


def test_grammar_is_seeded_and_has_a_few_hundred_words():
    assert list(grammar.reviews(20, seed=3)) == list(grammar.reviews(20, seed=3))
    assert list(grammar.reviews(20, seed=3)) != list(grammar.reviews(20, seed=4))
    words = grammar.vocabulary()
    assert 200 <= len(words) <= 600, f"vocabulary has {len(words)} words"
    for phrase in ("not", "very", "good", "terrible", "vile"):
        assert phrase in words
    corpus_words = {word for text in grammar.reviews(300, seed=0) for word in text.split()}
    assert corpus_words <= set(words), "the grammar emitted a word outside its vocabulary"


def test_world_writes_an_ordinary_model_and_dataset(smoke_world):
    _, world = smoke_world
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(world.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(world.model_dir)
    assert model.config.vocab_size == len(tokenizer)
    dataset = load_from_disk(str(world.dataset_dir))
    assert set(dataset) == {"train", "test"}
    for split in dataset.values():
        assert {"prompt", "chosen", "rejected"} <= set(split.column_names)
        assert all(row["chosen"] != row["rejected"] for row in split)
    train_prompts, test_prompts = set(dataset["train"]["prompt"]), set(dataset["test"]["prompt"])
    assert not train_prompts & test_prompts, "held-out prompts leak into training"
    info = json.loads((world.root / "world.json").read_text())
    assert info["stats"]["train_pairs"] == len(dataset["train"])


def test_world_is_deterministic_for_a_seed(tmp_path, smoke_world):
    _, first = smoke_world
    second = reviews.ensure_reviews_world(_smoke_world_config(), tmp_path)
    assert second.root != first.root and second.root.name == first.root.name
    assert load_from_disk(str(first.dataset_dir))["train"].to_list() == load_from_disk(
        str(second.dataset_dir)
    )["train"].to_list()
    weights_a = load_file(first.model_dir / "model.safetensors")
    weights_b = load_file(second.model_dir / "model.safetensors")
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)


def test_world_is_reused_from_cache_and_rebuilt_when_config_changes(smoke_world, monkeypatch):
    cache, world = smoke_world
    builds = []
    monkeypatch.setattr(reviews, "_build", lambda config, target: builds.append(config))
    assert reviews.ensure_reviews_world(_smoke_world_config(), cache).root == world.root
    assert builds == [], "a cached world was rebuilt"

    changed = {**_smoke_world_config(), "seed": 1}
    assert reviews.world_key(changed) != reviews.world_key(_smoke_world_config())
    reviews.ensure_reviews_world(changed, cache)
    assert builds == [changed], "a changed config must trigger a build"


def test_a_world_with_a_truncated_file_is_rebuilt(tmp_path, smoke_world):
    """The marker records every file's size: a file cut short after the build makes the
    world incomplete, and the next use rebuilds it (the same bytes: it is seeded)."""
    world = reviews.ensure_reviews_world(_smoke_world_config(), tmp_path)
    weights = world.model_dir / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    assert not reviews.is_complete(world.root, reviews.COMPLETE_MARKER)
    rebuilt = reviews.ensure_reviews_world(_smoke_world_config(), tmp_path)
    assert rebuilt.root == world.root and weights.read_bytes() == good
