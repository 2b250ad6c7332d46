"""Pair generation: selection rules, resumable shards, and the dataset `data=local` loads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from riskalign.data.loading import load_data
from riskalign.data.pair_settings import PairSettings
from riskalign.errors import ConfigError
from riskalign.models.loading import load_tokenizer
from riskalign.recipes.pair_generation import generate_pairs, select_pair
from tests.conftest import compose_config


class LengthReward:
    """Longer completions score higher: a deterministic stand-in for a reward model."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, texts, prompts=None):
        self.calls += 1
        return torch.tensor([float(len(text.split())) for text in texts])


class FailingAfter(LengthReward):
    """Scores `limit` shards, then fails: an interrupted generation."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def score(self, texts, prompts=None):
        if self.calls >= self.limit:
            raise KeyboardInterrupt("interrupted")
        return super().score(texts, prompts)


def test_best_worst_picks_the_extremes_and_skips_ties():
    settings = PairSettings(selection="best_worst")
    coin = torch.Generator().manual_seed(0)
    assert select_pair(torch.tensor([0.2, 0.9, -0.5, 0.1]), settings, coin) == (1, 2)
    assert select_pair(torch.tensor([0.3, 0.3, 0.3]), settings, coin) is None


def test_bradley_terry_prefers_the_higher_reward_at_the_stated_rate():
    settings = PairSettings(selection="bradley_terry", bt_temperature=0.5)
    coin = torch.Generator().manual_seed(0)
    scores = torch.tensor([1.0, 0.0])  # P(first wins) = sigmoid(2) = 0.881
    wins = sum(select_pair(scores, settings, coin) == (0, 1) for _ in range(4000))
    assert abs(wins / 4000 - torch.sigmoid(torch.tensor(2.0)).item()) < 0.02


@pytest.mark.parametrize(
    "block, message",
    [
        ({"selection": "random"}, "pairs.selection='random' is not one of: best_worst"),
        ({"samples_per_prompt": 1}, "pairs.samples_per_prompt=1 is out of range: must be >= 2"),
        ({"bt_temperature": 0.0}, "pairs.bt_temperature=0.0 is out of range: must be > 0"),
        ({"max_prompts": 0}, "pairs.max_prompts=0 is out of range: must be >= 1 or null"),
        ({"sample_count": 3}, "pairs.sample_count=3 is not a known key: allowed keys are "
                              "samples_per_prompt, selection,"),
        # wrong types: each setting's field refuses them
        ({"samples_per_prompt": 2.5}, "pairs.samples_per_prompt=2.5 is not an integer"),
        ({"shard_size": "8"}, "pairs.shard_size='8' is not an integer: must be >= 1"),
        ({"seed": -1}, "pairs.seed=-1 is out of range: must be >= 0"),
        ({"temperature": None}, "pairs.temperature=None is not a finite number: must be >= 0"),
    ],
)
def test_bad_settings_are_refused_in_one_line(block, message):
    with pytest.raises(ConfigError) as error:
        PairSettings.from_config(block)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_training_block_is_refused_under_its_own_key():
    with pytest.raises(ConfigError, match=r"^data\.generate\.samples_per_prompt=2\.5 is not an "):
        PairSettings.from_config({"samples_per_prompt": 2.5}, key="data.generate")
    assert PairSettings.from_config({"bt_temperature": 2}).bt_temperature == 2.0


@pytest.fixture(scope="module")
def world_model(smoke_world):
    _, world = smoke_world
    model = AutoModelForCausalLM.from_pretrained(world.model_dir)
    return model, load_tokenizer(str(world.model_dir))


PROMPTS = {"train": ["the movie was", "i think the film", "this story is", "the acting was",
                     "overall the plot"], "test": ["the music was", "i felt the ending"]}


def _records(dataset_dir):
    from datasets import load_from_disk

    loaded = load_from_disk(str(dataset_dir))
    return {split: loaded[split].to_list() for split in loaded}


def test_pairs_are_written_with_the_chosen_scoring_higher(world_model, tmp_path):
    model, tokenizer = world_model
    settings = PairSettings(samples_per_prompt=4, max_new_tokens=8, shard_size=2, seed=3)
    dataset = generate_pairs(model, tokenizer, PROMPTS, LengthReward(), settings, tmp_path / "p")
    records = _records(dataset)
    assert set(records) == {"train", "test"}
    assert {r["prompt"] for r in records["train"]} <= set(PROMPTS["train"])
    for split in records.values():
        for record in split:
            assert record["chosen_reward"] > record["rejected_reward"]
            assert record["chosen_reward"] == len(record["chosen"].split())
    info = json.loads((dataset / "pairs.json").read_text())
    assert info["stats"]["train"]["prompts"] == 5
    assert info["stats"]["train"]["pairs"] + info["stats"]["train"]["skipped"] == 5
    assert all(r["chosen"].strip() and r["rejected"].strip() for r in records["train"])
    assert len(list((tmp_path / "p" / "shards" / "train").glob("shard-*.json"))) == 3


def test_an_interrupted_generation_resumes_to_the_same_pairs(world_model, tmp_path):
    model, tokenizer = world_model
    settings = PairSettings(samples_per_prompt=3, max_new_tokens=8, shard_size=2, seed=5)
    whole = generate_pairs(model, tokenizer, PROMPTS, LengthReward(), settings, tmp_path / "a")

    with pytest.raises(KeyboardInterrupt):
        generate_pairs(model, tokenizer, PROMPTS, FailingAfter(2), settings, tmp_path / "b")
    assert not (tmp_path / "b" / "dataset").exists(), "no dataset may exist before all shards"
    resumed_reward = LengthReward()
    resumed = generate_pairs(model, tokenizer, PROMPTS, resumed_reward, settings, tmp_path / "b")
    assert resumed_reward.calls == 2, "the two finished shards must not be sampled again"
    assert _records(resumed) == _records(whole)


def test_a_finished_dataset_is_reused_without_sampling(world_model, tmp_path):
    model, tokenizer = world_model
    settings = PairSettings(samples_per_prompt=2, max_new_tokens=6, shard_size=8)
    generate_pairs(model, tokenizer, PROMPTS, LengthReward(), settings, tmp_path / "p")
    untouched = FailingAfter(0)
    generate_pairs(model, tokenizer, PROMPTS, untouched, settings, tmp_path / "p")
    assert untouched.calls == 0


def test_data_local_loads_the_generated_pairs(world_model, tmp_path):
    model, tokenizer = world_model
    settings = PairSettings(samples_per_prompt=6, max_new_tokens=8, seed=3)
    dataset = generate_pairs(model, tokenizer, PROMPTS, LengthReward(), settings, tmp_path / "p")
    cfg = compose_config("data=local", f"data.path={dataset}", "data.max_prompt_length=16",
                         "data.max_length=64")
    from omegaconf import OmegaConf

    splits, kind = load_data(OmegaConf.to_container(cfg.data, resolve=True), tokenizer)
    assert kind == "pairs"
    assert splits["train"].column_names == ["prompt", "chosen", "rejected"]
    assert len(splits["train"]) == len(_records(dataset)["train"])
