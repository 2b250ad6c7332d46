"""Malformed local data files are refused in one line naming the file, the line or record
when known, and the problem (#17 item 7): no `datasets` traceback. So are model weights
whose pickle holds objects that are not tensors.

Each case writes the bad file and loads it in this process through `load_data`, as
`data=local data.path=FILE` does; one runs the command line (`refused`, from
tests/test_bad_input.py) to show the user sees the same line.
"""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from riskalign.data.loading import load_data
from riskalign.errors import ConfigError
from riskalign.models.loading import load_causal_lm
from tests.test_formats import (  # datasets_cache: autouse, keeps the user's cache clean
    CHAT_TEMPLATE,
    datasets_cache,  # noqa: F401
    word_tokenizer,
)
from tests.tiny_models import make_tiny_classifier, tiny_word_tokenizer

DATA = {"format": "preference", "train_split": "train", "eval_split": "test",
        "max_prompt_length": 64}
RECORDS = [{"prompt": f"Question {i}?", "chosen": "Yes.", "rejected": "No."} for i in range(4)]
LINES = [json.dumps(record) for record in RECORDS]
BROKEN_LINE = '{"prompt": "a", "chosen": '  # cut short: line 3 of BROKEN
BROKEN = "\n".join([*LINES[:2], BROKEN_LINE, *LINES[2:]]) + "\n"
BROKEN_MESSAGE = "line 3 is not valid JSON (Expecting value: column 27)"
CSV = "prompt,chosen,rejected\nQuestion?,Yes.,No.\n"
NO_DATA = ("give a .jsonl/.json/.csv/.parquet file, a directory of them, or a save_to_disk "
           "dataset")


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(CHAT_TEMPLATE)


def refusal(path, tokenizer, **data) -> str:
    """The one-line ConfigError of loading `path` as data=local does."""
    with pytest.raises(ConfigError) as error:
        load_data({**DATA, **data}, tokenizer, path=str(path))
    message = str(error.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# ----- files datasets cannot read -------------------------------------------------------


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.json"])
def test_a_broken_json_line_is_named_by_file_and_line(tmp_path, tokenizer, name):
    path = tmp_path / name
    path.write_text(BROKEN)
    assert refusal(path, tokenizer) == f"data.path='{path}' {BROKEN_MESSAGE}"


def test_a_broken_first_line_is_named_too(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"  # not a multi-line JSON document: its second line parses
    path.write_text("\n".join([BROKEN_LINE, *LINES]))
    assert refusal(path, tokenizer) == (f"data.path='{path}' line 1 is not valid JSON "
                                        "(Expecting value: column 27)")


def test_a_broken_json_document_is_named_by_its_line(tmp_path, tokenizer):
    path = tmp_path / "pairs.json"
    path.write_text('[\n  {"prompt": "a", "chosen": "b", "rejected": "c"},\n  {"prompt": }\n]\n')
    assert refusal(path, tokenizer) == (f"data.path='{path}' line 3 is not valid JSON "
                                        "(Expecting value: column 14)")


def test_a_broken_file_of_a_directory_is_named_in_it(tmp_path, tokenizer):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(LINES))
    (tmp_path / "data" / "test.jsonl").write_text(BROKEN)
    assert refusal(tmp_path, tokenizer) == (
        f"data.path='{tmp_path}': data/test.jsonl {BROKEN_MESSAGE}")


@pytest.mark.parametrize("content", ["", " \n\n\t\n"], ids=["zero-bytes", "whitespace"])
@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.csv"])
def test_an_empty_file_has_no_records(tmp_path, tokenizer, content, name):
    path = tmp_path / name
    path.write_text(content)
    assert refusal(path, tokenizer) == f"data.path='{path}' is empty: no records"


def test_a_csv_with_only_a_header_has_no_rows(tmp_path, tokenizer):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected\n\n")
    assert refusal(path, tokenizer) == (
        f"data.path='{path}' has a header (prompt, chosen, rejected) but no rows")


@pytest.mark.parametrize(("name", "content", "where"), [
    ("pairs.jsonl", LINES[0] + '\n{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',
     "line 2 is not UTF-8 text (byte 0xe9 at column 16)"),
    ("pairs.csv", "prompt,chosen,rejected\na,b,c\ncaf\xe9 cr\xe8me,b,c\n",
     "line 3 is not UTF-8 text (byte 0xe9 at column 4)"),
], ids=["jsonl", "csv"])
def test_bytes_that_are_not_utf8_are_named_by_line_and_column(tmp_path, tokenizer, name,
                                                              content, where):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))  # datasets read the .jsonl one silently
    assert refusal(path, tokenizer) == f"data.path='{path}' {where}"


@pytest.mark.parametrize(("name", "text"), [("pairs.jsonl.gz", "\n".join(LINES * 50)),
                                            ("pairs.csv.gz", CSV * 50)])
def test_a_truncated_gzip_file_is_refused(tmp_path, tokenizer, name, text):
    path = tmp_path / name
    whole = gzip.compress(text.encode())
    path.write_bytes(whole[: len(whole) // 2])
    assert refusal(path, tokenizer) == (
        f"data.path='{path}' is a truncated or corrupt gzip file (Compressed file ended "
        "before the end-of-stream marker was reached)")


def test_what_the_checks_miss_is_refused_with_the_cause_of_datasets(tmp_path, tokenizer):
    path = tmp_path / "pairs.arrow"
    path.write_text("not arrow at all\n")
    assert refusal(path, tokenizer) == f"data.path='{path}' cannot be read (Not an Arrow file)"


# ----- chat records ----------------------------------------------------------------------


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


CHAT = {"prompt": [user("Hi?")], "chosen": [assistant("Hello.")], "rejected": [assistant("Go.")]}
CHAT_CASES = [
    pytest.param({"chosen": [assistant("Hello."), assistant("More."),
                             {"role": "assistant", "text": "Bye."}]},
                 "chosen message #2 has keys (role, text): a chat message needs role and "
                 "content", id="text-for-content"),
    pytest.param({"rejected": [{"role": "assistant"}]},
                 "rejected message #0 has keys (role): a chat message needs role and content",
                 id="no-content"),
    pytest.param({"prompt": [{"content": "Hi?"}]},
                 "prompt message #0 has keys (content): a chat message needs role and content",
                 id="no-role"),
    pytest.param({"prompt": [user("Hi?"), "Hi?"]},
                 "prompt message #1 is not a {role, content} mapping (str)", id="not-a-mapping"),
    pytest.param({"chosen": [{"role": "assistant", "content": ["Hello."]}]},
                 "chosen message #0 content is not a string (list)", id="content-a-list"),
    pytest.param({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."},
                 "is plain text but the first record is chat messages: give all records in "
                 "one form", id="text-after-chat"),
]


@pytest.mark.parametrize(("change", "problem"), CHAT_CASES)
def test_a_malformed_chat_record_is_named_by_file_record_and_key(tmp_path, tokenizer, change,
                                                                 problem):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in [CHAT] * 4 + [
        {**CHAT, **change}]))
    assert refusal(path, tokenizer, eval_split="train") == (
        f"data: 1 bad record(s) in split 'train': #4 {problem} (set data.on_bad_record=drop "
        f"to drop them) (data.path='{path}')")


def test_chat_records_after_a_text_one_are_refused_and_can_be_dropped(tmp_path, tokenizer):
    path = tmp_path / "chat.jsonl"
    text = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."}
    path.write_text("".join(json.dumps(record) + "\n" for record in [text, text, CHAT]))
    assert refusal(path, tokenizer, eval_split="train") == (
        "data: 1 bad record(s) in split 'train': #2 is chat messages but the first record is "
        "plain text: give all records in one form (set data.on_bad_record=drop to drop them) "
        f"(data.path='{path}')")
    splits, _ = load_data({**DATA, "eval_split": "train", "on_bad_record": "drop"}, tokenizer,
                          path=str(path))
    assert splits["train"].to_list() == [text, text]


# ----- directories and pickles -----------------------------------------------------------


@pytest.mark.parametrize(("files", "found"), [
    ({"README.md": "# Pairs\n"}, "README.md"),
    ({"README.md": "# Pairs\n", "train.pkl": "pickled", ".hidden.jsonl": LINES[0]},
     "README.md, train.pkl"),
    ({}, "nothing"),
], ids=["readme-only", "readme-and-pickle", "empty"])
def test_a_directory_without_data_files_is_refused(tmp_path, tokenizer, files, found):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert refusal(tmp_path, tokenizer) == (
        f"data.path='{tmp_path}' holds no data files (found: {found}): {NO_DATA}")


def test_a_pickled_data_file_is_refused(tmp_path, tokenizer):
    path = tmp_path / "pairs.pkl"
    torch.save(RECORDS, path)
    assert refusal(path, tokenizer) == (
        f"data.path='{path}' has an unknown file format: use one of .arrow, .csv, .json, "
        ".jsonl, .parquet (json, jsonl and csv may end in .gz, .bz2, .xz) or a directory")


class Note:
    """Not a tensor: `torch.load(weights_only=True)` refuses to unpickle it."""


def tiny_model(directory, extra=None):
    """A tiny GPT-2 saved with its weights as pytorch_model.bin (plus `extra` entries)."""
    tokenizer = tiny_word_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=8,
                                       n_layer=1, n_head=2))
    model.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    torch.save({**model.state_dict(), **(extra or {})}, directory / "pytorch_model.bin")
    return directory


def test_model_weights_with_pickled_objects_are_refused(tmp_path):
    clean = tiny_model(tmp_path / "clean")
    assert load_causal_lm(str(clean), "float32", "eager").config.n_layer == 1
    blocked = tiny_model(tmp_path / "blocked", extra={"note": Note()})
    with pytest.raises(ConfigError) as error:
        load_causal_lm(str(blocked), "float32", "eager")
    assert str(error.value) == (
        f"model.name_or_path='{blocked}': pytorch_model.bin holds pickled objects that are not "
        f"tensors ({Note.__module__}.Note); loading them is blocked for safety (weights_only): "
        "convert it to safetensors")


def test_model_weights_that_are_no_pickle_are_refused(tmp_path):
    directory = tiny_model(tmp_path / "model")
    (directory / "pytorch_model.bin").write_text("garbage")
    with pytest.raises(ConfigError) as error:
        load_causal_lm(str(directory), "float32", "eager")
    assert str(error.value) == (f"model.name_or_path='{directory}': pytorch_model.bin is not a "
                                "readable PyTorch weights file (Unsupported operand 103)")


def test_a_reward_classifier_with_pickled_objects_is_refused(tmp_path):
    from riskalign.rewards.hf_classifier import HFClassifierReward

    directory = make_tiny_classifier(tmp_path / "classifier")
    weights = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    torch.save({**weights, "note": Note()}, directory / "pytorch_model.bin")
    with pytest.raises(ConfigError) as error:
        HFClassifierReward(str(directory), label_weights={1: 1.0})
    assert str(error.value) == (
        f"reward.name_or_path='{directory}': pytorch_model.bin holds pickled objects that are "
        f"not tensors ({Note.__module__}.Note); loading them is blocked for safety "
        "(weights_only): convert it to safetensors")


# ----- good files load as before ---------------------------------------------------------


def test_good_files_of_every_shape_still_load(tmp_path, tokenizer):
    bom_crlf = "\ufeff" + "\r\n".join(LINES) + "\r\n\r\n"
    shapes = {
        "array.json": json.dumps(RECORDS, indent=2),
        "bom_crlf.jsonl": bom_crlf,
        "blank_lines.jsonl": "\n\n" + "\n\n".join(LINES),
        "pairs.csv": "prompt,chosen,rejected\n" + "".join(
            f"{r['prompt']},{r['chosen']},{r['rejected']}\n" for r in RECORDS),
    }
    for name, text in shapes.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "pairs.jsonl.gz").write_bytes(gzip.compress("\n".join(LINES).encode()))
    for name in [*shapes, "pairs.jsonl.gz"]:
        splits, _ = load_data({**DATA, "eval_split": "train"}, tokenizer,
                              path=str(tmp_path / name))
        assert splits["train"].to_list() == RECORDS, name


# ----- the command line -----------------------------------------------------------------


def test_the_command_line_prints_the_broken_line_and_exits_2(refused, smoke_world, tmp_path):
    _, world = smoke_world
    path = tmp_path / "pairs.jsonl"
    path.write_text(BROKEN)
    line = refused(["data=local", f"data.path={path}", f"model.name_or_path={world.model_dir}",
                    "data.max_length=64", "data.max_prompt_length=32"],  # the world's model's
                   f"data.path='{path}' {BROKEN_MESSAGE}")
    assert line == f"riskalign: error: data.path='{path}' {BROKEN_MESSAGE}"
