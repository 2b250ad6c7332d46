"""Tokenization, truncation, masking and collation of preference pairs; dataset loading."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from riskalign.config_checks import ConfigError
from riskalign.data.loading import load_preference_splits
from riskalign.data.preference import IGNORE_INDEX, collate_pairs, tokenize_pair
from riskalign.worlds.grammar import vocabulary
from riskalign.worlds.tokenizer import word_level_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return word_level_tokenizer(vocabulary())


def test_pair_is_prompt_with_bos_then_response_with_eos(tokenizer):
    pair = tokenize_pair(tokenizer, "the movie was", "good .", "very bad .",
                         max_length=32, max_prompt_length=8)
    words = lambda ids: tokenizer.convert_ids_to_tokens(ids)  # noqa: E731
    assert words(pair["prompt_ids"]) == ["<bos>", "the", "movie", "was"]
    assert words(pair["chosen_ids"]) == ["good", ".", "<eos>"]
    assert words(pair["rejected_ids"]) == ["very", "bad", ".", "<eos>"]


def test_truncation_keeps_the_end_of_the_prompt_then_cuts_responses(tokenizer):
    prompt = "i watched this movie last night . the plot was"  # 11 tokens with <bos>
    pair = tokenize_pair(tokenizer, prompt, "good and the acting was great .", "bad .",
                         max_length=8, max_prompt_length=4)
    assert tokenizer.convert_ids_to_tokens(pair["prompt_ids"]) == [".", "the", "plot", "was"]
    assert len(pair["prompt_ids"]) + len(pair["chosen_ids"]) == 8
    assert tokenizer.convert_ids_to_tokens(pair["rejected_ids"]) == ["bad", ".", "<eos>"]


def test_short_pairs_are_not_truncated(tokenizer):
    pair = tokenize_pair(tokenizer, "the movie was", "good .", "bad .",
                         max_length=64, max_prompt_length=2)
    assert len(pair["prompt_ids"]) == 4, "a prompt that fits must keep all its tokens"


def test_collate_stacks_chosen_first_and_masks_prompt_and_padding():
    examples = [
        {"prompt_ids": [1, 10], "chosen_ids": [20, 2], "rejected_ids": [30, 31, 2]},
        {"prompt_ids": [1, 11, 12], "chosen_ids": [21, 2], "rejected_ids": [32, 2]},
    ]
    batch = collate_pairs(examples, pad_token_id=0)
    assert batch["input_ids"].tolist() == [
        [1, 10, 20, 2, 0],      # pair 0 chosen
        [1, 11, 12, 21, 2],     # pair 1 chosen
        [1, 10, 30, 31, 2],     # pair 0 rejected
        [1, 11, 12, 32, 2],     # pair 1 rejected
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1] * 5, [1] * 5, [1] * 5]
    x = IGNORE_INDEX
    assert batch["labels"].tolist() == [
        [x, x, 20, 2, x],
        [x, x, x, 21, 2],
        [x, x, 30, 31, 2],
        [x, x, x, 32, 2],
    ]


def test_local_jsonl_loads_and_gets_an_eval_split(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"p{i}", "chosen": "good .", "rejected": "bad ."} for i in range(40)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    splits = load_preference_splits(str(path), "train", "test")
    assert len(splits["train"]) + len(splits["eval"]) == 40 and len(splits["eval"]) >= 1


def test_dataset_without_chosen_is_refused_in_one_line(tmp_path):
    DatasetDict(
        train=Dataset.from_dict({"prompt": ["a"], "rejected": ["b"]}),
        test=Dataset.from_dict({"prompt": ["a"], "rejected": ["b"]}),
    ).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ConfigError) as error:
        load_preference_splits(str(tmp_path / "bad"), "train", "test")
    message = str(error.value)
    assert "chosen" in message and "\n" not in message


def test_missing_local_path_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_preference_splits(str(tmp_path / "nowhere"), "train", "test")
