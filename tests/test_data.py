"""Tokenization, truncation, masking and collation of preference pairs."""

from __future__ import annotations

import pytest

from riskalign.data.preference import IGNORE_INDEX, collate_pairs, tokenize_pair
from riskalign.worlds.grammar import vocabulary
from riskalign.worlds.tokenizer import word_level_tokenizer
from tests.test_formats import CHAT_TEMPLATE, word_tokenizer


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


def test_response_that_already_ends_with_eos_gets_no_second(tokenizer):
    pair = tokenize_pair(tokenizer, "the movie was", "good . <eos>", "bad .",
                         max_length=32, max_prompt_length=8)
    words = tokenizer.convert_ids_to_tokens
    assert words(pair["chosen_ids"]) == ["good", ".", "<eos>"]
    assert words(pair["rejected_ids"]) == ["bad", ".", "<eos>"]


RENDERED_PROMPT = "<|user|>Say hi.<|end|><|assistant|>"  # CHAT_TEMPLATE's rendering


def test_a_rendered_chat_pair_is_tokenized_as_the_template_wrote_it():
    chat = word_tokenizer(CHAT_TEMPLATE)  # every word <unk>: the special tokens tell
    bos, eos = chat.bos_token_id, chat.eos_token_id
    pair = tokenize_pair(chat, RENDERED_PROMPT, "Hi there!<|end|>", "No.<|end|>",
                         max_length=64, max_prompt_length=32)
    whole = chat(RENDERED_PROMPT + "Hi there!<|end|>", add_special_tokens=False)["input_ids"]
    assert pair["prompt_ids"] + pair["chosen_ids"] == whole
    assert bos not in pair["prompt_ids"], "the template writes no BOS: none is added"
    assert eos not in pair["chosen_ids"] + pair["rejected_ids"], "<|end|> closed the turn"


def test_a_response_that_does_not_close_its_turn_gets_eos_after_a_rendered_prompt():
    chat = word_tokenizer(CHAT_TEMPLATE)  # a sampled completion comes without <|end|>
    pair = tokenize_pair(chat, RENDERED_PROMPT, "Hi there!", "No.",
                         max_length=64, max_prompt_length=32)
    assert pair["chosen_ids"][-1] == pair["rejected_ids"][-1] == chat.eos_token_id


def test_plain_prompts_keep_bos_and_eos_with_a_chat_template_or_one_that_refuses_probes():
    refusing = "{{ raise_exception('system message required') }}"
    for template in (CHAT_TEMPLATE, refusing):
        chat = word_tokenizer(template)
        pair = tokenize_pair(chat, "Say hi.", " Hi there!", " No.",
                             max_length=64, max_prompt_length=32)
        assert pair["prompt_ids"][0] == chat.bos_token_id
        assert pair["chosen_ids"][-1] == chat.eos_token_id


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
