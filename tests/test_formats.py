"""Upstream schemas load through the shipped data configs into standard columns; bad
records are refused in one line or dropped and counted."""

from __future__ import annotations

import json
import logging
import re

import datasets
import pytest
from datasets import Dataset, DatasetDict
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from riskalign.config.checks import check_config
from riskalign.data.formats import FORMATS, KIND_COLUMNS, PROBLEM_COLUMN, convert
from riskalign.data.loading import load_data, load_raw_splits
from riskalign.data.records import check_records
from riskalign.errors import ConfigError
from riskalign.worlds.grammar import vocabulary
from riskalign.worlds.tokenizer import word_level_tokenizer
from tests.conftest import CONF, REPO, compose_config

FIXTURES = REPO / "tests" / "fixtures" / "data"
HH, IMDB, EMOTION = FIXTURES / "hh-rlhf", FIXTURES / "imdb", FIXTURES / "emotion"
ALPACA, LOCAL = FIXTURES / "alpaca_eval", FIXTURES / "local"
WORDS = re.compile(r"\w+|[^\w\s]+")  # what the Whitespace pre-tokenizer splits on
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def word_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """One token per word or punctuation run (all <unk>), <bos> first like Llama's."""
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    """Keep load_dataset's Arrow cache of the fixtures out of the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf")))
        yield


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(scope="module")
def chat_tokenizer():
    return word_tokenizer(CHAT_TEMPLATE)


def load(tokenizer, *overrides: str) -> tuple[DatasetDict, str]:
    # any model but the world's, which only goes with data=reviews; nothing loads it here
    cfg = compose_config("model=gpt2", *overrides)
    check_config(cfg)
    return load_data(cfg.data, tokenizer)


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        load(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# ----- configs ---------------------------------------------------------------------------

REQUIRED_KEYS = ("name", "source", "path", "subset", "format", "train_split", "eval_split",
                 "prompt_tokens", "on_bad_record", "max_length", "max_prompt_length",
                 "batch_size", "eval_batch_size", "num_workers")


@pytest.mark.parametrize("name", sorted(path.stem for path in (CONF / "data").glob("*.yaml")))
def test_every_data_config_has_the_standard_keys_and_passes_checks(name):
    model = "model=tiny" if name == "reviews" else "model=gpt2"
    cfg = compose_config(model, f"data={name}", "data.path=some/data")
    # reviews.yaml belongs to the embedded world; load_data reads prompt_tokens with .get()
    required = [key for key in REQUIRED_KEYS if cfg.data.source == "path" or key != "prompt_tokens"]
    missing = [key for key in required if key not in cfg.data]
    assert not missing, f"data={name} lacks {missing}"
    assert cfg.data.format in FORMATS and cfg.data.on_bad_record in ("error", "drop")
    check_config(cfg)


# ----- hh --------------------------------------------------------------------------------


def test_hh_splits_multi_turn_transcripts_at_the_last_assistant_turn(tokenizer):
    splits, kind = load(tokenizer, "data=hh", f"data.path={HH}")
    assert kind == "pairs"
    assert {split: len(data) for split, data in splits.items()} == {"train": 6, "eval": 4}
    assert splits["train"].column_names == ["prompt", "chosen", "rejected"]
    records = {record["chosen"]: record for record in splits["train"]}
    multi = records[" You could also ask your landlord to mediate."]
    assert multi["prompt"] == (
        "\n\nHuman: My neighbour plays loud music at night."
        "\n\nAssistant: That sounds exhausting. Have you talked to them?"
        "\n\nHuman: Yes, twice."
        "\n\nAssistant: Then a written note can make the request clearer."
        "\n\nHuman: Anything else I could try?\n\nAssistant:"
    )
    assert multi["rejected"] == " Let the air out of their tyres."
    single = records[" Paris."]
    assert single["prompt"] == "\n\nHuman: What is the capital of France?\n\nAssistant:"
    assert single["rejected"] == " France is in Europe."


@pytest.mark.parametrize(
    "subset, train, evaluation, marker",
    [("harmless-base", 3, 2, "noisy neighbour"), ("helpful-base", 3, 2, "boil an egg")],
)
def test_hh_subsets_are_folders(tokenizer, subset, train, evaluation, marker):
    splits, _ = load(tokenizer, "data=hh", f"data.path={HH}", f"data.subset={subset}")
    assert (len(splits["train"]), len(splits["eval"])) == (train, evaluation)
    assert any(marker in prompt for prompt in splits["train"]["prompt"])


def test_subset_may_be_a_readme_config(tokenizer, tmp_path):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "few.jsonl", STRING_PAIRS[:3])
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: few\n  data_files:\n  - split: train\n"
        "    path: data/few.jsonl\n---\n"
    )
    splits, _ = load(tokenizer, "data=local", f"data.path={tmp_path}", "data.subset=few",
                     "data.eval_split=train")
    assert splits["train"].to_list() == STRING_PAIRS[:3]


def test_unknown_subset_lists_the_subsets(tokenizer):
    message = config_error(tokenizer, "data=hh", f"data.path={HH}", "data.subset=red-team")
    assert "data.subset='red-team'" in message
    assert "harmless-base, helpful-base" in message


def test_hh_pair_whose_prompts_differ_is_refused_then_dropped(tokenizer, tmp_path):
    good = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Go."}
    differ = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
              "rejected": "\n\nHuman: Bye\n\nAssistant: Later."}
    path = write_jsonl(tmp_path / "train.jsonl", [good, differ, good])
    overrides = ("data=hh", f"data.path={path}", "data.eval_split=train")
    message = config_error(tokenizer, *overrides, "data.on_bad_record=error")
    assert "1 bad record(s) in split 'train'" in message
    assert "#1 chosen and rejected prompts differ" in message
    splits, _ = load(tokenizer, *overrides)  # hh.yaml drops
    assert len(splits["train"]) == 2 and set(splits["train"]["rejected"]) == {" Go."}


# ----- imdb, emotion ---------------------------------------------------------------------


def test_imdb_prompt_is_the_first_prompt_tokens_of_the_cleaned_review(tokenizer):
    splits, kind = load(tokenizer, "data=imdb", f"data.path={IMDB}")
    assert kind == "prompts"
    assert (len(splits["train"]), len(splits["eval"])) == (4, 3)
    assert splits["eval"].column_names == ["prompt", "text"]
    first = splits["train"][0]
    assert first["prompt"] == "I rented this movie last weekend and regretted"
    assert first["text"] == ("I rented this movie last weekend and regretted every minute of it. "
                             "The plot made no sense and the acting was wooden.")
    for record in (*splits["train"], *splits["eval"]):
        assert "<br" not in record["text"] and "<br" not in record["prompt"]
        assert record["text"].startswith(record["prompt"])
        assert len(WORDS.findall(record["prompt"])) == 8
        assert len(tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]) == 8


def test_imdb_prompt_has_prompt_tokens_tokens_with_a_byte_level_bpe():
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = load_raw_splits(str(IMDB), subset="plain_text", train_split="train",
                            eval_split="test")["train"]["text"]
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe = PreTrainedTokenizerFast(tokenizer_object=backend)
    splits, _ = load(bpe, "data=imdb", f"data.path={IMDB}", "data.prompt_tokens=5")
    for record in splits["train"]:
        assert record["text"].startswith(record["prompt"])
        assert len(bpe(record["prompt"], add_special_tokens=False)["input_ids"]) == 5


def test_emotion_split_and_unsplit_subsets(tokenizer):
    splits, kind = load(tokenizer, "data=emotion", f"data.path={EMOTION}")
    assert kind == "prompts" and (len(splits["train"]), len(splits["eval"])) == (4, 3)
    by_text = {record["text"]: record["prompt"] for record in splits["train"]}
    assert by_text["i didnt feel humiliated"] == "i didnt feel humiliated"  # shorter than 8
    long_text = next(text for text in by_text if text.startswith("i can go"))
    assert by_text[long_text] == "i can go from feeling so hopeless to"
    test, _ = load(tokenizer, "data=emotion", f"data.path={EMOTION}", "data.eval_split=test")
    assert "im updating my blog because i feel shitty" in test["eval"]["text"]
    # unsplit has only a train split: 5% of it (one record) is held out.
    unsplit, _ = load(tokenizer, "data=emotion", f"data.path={EMOTION}", "data.subset=unsplit")
    assert (len(unsplit["train"]), len(unsplit["eval"])) == (4, 1)


def test_text_lines_are_whole_prompts_or_cut_to_prompt_tokens(tokenizer, tmp_path):
    (tmp_path / "train.txt").write_text("the movie was great\nI watched it twice and loved it\n")
    (tmp_path / "test.txt").write_text("a dull film\n")
    overrides = ("data=local", f"data.path={tmp_path}", "data.format=text")
    splits, kind = load(tokenizer, *overrides)
    assert kind == "prompts" and splits["eval"].to_list() == [
        {"prompt": "a dull film", "text": "a dull film"}
    ]
    assert splits["train"]["prompt"] == splits["train"]["text"]
    cut, _ = load(tokenizer, *overrides, "data.prompt_tokens=3")
    assert cut["train"]["prompt"] == ["the movie was", "I watched it"]


def test_prompt_formats_need_prompt_tokens(tokenizer):
    message = config_error(tokenizer, "data=imdb", f"data.path={IMDB}", "data.prompt_tokens=null")
    assert "data.prompt_tokens=None" in message and "'imdb'" in message


# ----- alpaca_eval -----------------------------------------------------------------------


def test_alpacaeval_references_with_and_without_chat_template(tokenizer, chat_tokenizer):
    splits, kind = load(tokenizer, "data=alpacaeval", f"data.path={ALPACA}")
    assert kind == "references"
    assert splits["train"].column_names == ["prompt", "reference"]
    assert splits["train"]["prompt"] == splits["eval"]["prompt"]  # only an eval split
    record = splits["eval"][1]
    assert record["prompt"] == "How did US states get their names?"
    assert record["reference"].startswith("Many US state names come from Native American")
    chat, _ = load(chat_tokenizer, "data=alpacaeval", f"data.path={ALPACA}")
    assert chat["eval"][1]["prompt"] == (
        "<|user|>How did US states get their names?<|end|><|assistant|>"
    )


# ----- local preference pairs ------------------------------------------------------------

STRING_PAIRS = [json.loads(line) for line in (LOCAL / "pairs.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.parquet"])
def test_local_string_pairs_load_unchanged(tokenizer, name):
    splits, kind = load(tokenizer, "data=local", f"data.path={LOCAL / name}",
                        "data.eval_split=train")
    assert kind == "pairs" and splits["train"].to_list() == STRING_PAIRS


def test_local_file_without_eval_split_holds_out_five_percent(tokenizer):
    splits, _ = load(tokenizer, "data=local", f"data.path={LOCAL / 'pairs.jsonl'}")
    assert (len(splits["train"]), len(splits["eval"])) == (5, 1)
    held_out = splits["eval"][0]
    assert held_out in STRING_PAIRS and held_out not in splits["train"].to_list()


def test_gzipped_jsonl_file_loads(tokenizer):
    splits, _ = load(tokenizer, "data=hh", f"data.path={HH / 'helpful-base' / 'test.jsonl.gz'}")
    assert len(splits["train"]) + len(splits["eval"]) == 2


@pytest.mark.parametrize("as_dict", [True, False])
def test_save_to_disk_directory_loads(tokenizer, tmp_path, as_dict):
    data = Dataset.from_list(STRING_PAIRS)
    saved = DatasetDict(train=data, test=data.select([0, 1])) if as_dict else data
    saved.save_to_disk(str(tmp_path / "saved"))
    splits, _ = load(tokenizer, "data=local", f"data.path={tmp_path / 'saved'}")
    expected = (6, 2) if as_dict else (5, 1)
    assert (len(splits["train"]), len(splits["eval"])) == expected
    assert splits["train"].column_names == ["prompt", "chosen", "rejected"]


def test_chat_messages_render_through_the_chat_template(chat_tokenizer):
    splits, _ = load(chat_tokenizer, "data=local", f"data.path={LOCAL / 'chat.jsonl'}",
                     "data.eval_split=train")
    rows = splits["train"].to_list()
    assert rows[0] == {"prompt": "<|user|>Say hi.<|end|><|assistant|>",
                       "chosen": "Hi there!<|end|>", "rejected": "No.<|end|>"}
    assert rows[1]["prompt"] == (
        "<|system|>Be brief.<|end|><|user|>Name a colour.<|end|><|assistant|>"
    )
    # chosen/rejected that repeat the prompt messages give the same split
    assert rows[2] == {"prompt": "<|user|>What is 2 + 2?<|end|><|assistant|>",
                       "chosen": "4<|end|>", "rejected": "5<|end|>"}
    assert rows[3]["prompt"].endswith("<|user|>Tell me a fact.<|end|><|assistant|>")
    assert rows[3]["chosen"] == "Honey never spoils.<|end|>"


def test_chat_messages_without_template_render_as_hh_transcripts(tokenizer):
    splits, _ = load(tokenizer, "data=local", f"data.path={LOCAL / 'chat.jsonl'}",
                     "data.eval_split=train")
    rows = splits["train"].to_list()
    assert rows[0] == {"prompt": "\n\nHuman: Say hi.\n\nAssistant:",
                       "chosen": " Hi there!", "rejected": " No."}
    assert rows[1]["prompt"] == "\n\nSystem: Be brief.\n\nHuman: Name a colour.\n\nAssistant:"
    assert rows[2]["chosen"] == " 4" and rows[2]["rejected"] == " 5"
    assert rows[3]["prompt"] == ("\n\nHuman: Hello\n\nAssistant: Hello! How can I help?"
                                 "\n\nHuman: Tell me a fact.\n\nAssistant:")


def implicit(record: dict) -> dict:
    """The record as TRL's implicit-prompt format holds it: whole conversations, no prompt."""
    prompt = record["prompt"]
    return {key: prompt + [m for m in record[key] if m not in prompt]
            for key in ("chosen", "rejected")}


def test_implicit_prompt_chat_records_split_as_explicit_ones(chat_tokenizer, tmp_path):
    records = [json.loads(line) for line in (LOCAL / "chat.jsonl").read_text().splitlines()]
    path = write_jsonl(tmp_path / "implicit.jsonl", [implicit(record) for record in records])
    explicit, _ = load(chat_tokenizer, "data=local", f"data.path={LOCAL / 'chat.jsonl'}",
                       "data.eval_split=train")
    splits, kind = load(chat_tokenizer, "data=local", f"data.path={path}", "data.eval_split=train")
    assert kind == "pairs" and splits["train"].to_list() == explicit["train"].to_list()
    assert splits["train"][3]["prompt"].startswith("<|user|>Hello<|end|><|assistant|>Hello!")


def test_implicit_prompt_strings_split_where_the_texts_part(tokenizer, tmp_path):
    pairs = [{"chosen": "Q: What colour is the sky? A: It is blue.",
              "rejected": "Q: What colour is the sky? A: It is green."},
             {"chosen": "Q: Name a colour. A: blue", "rejected": "Q: Name a colour. A: black"},
             {"chosen": "The plot was fine!", "rejected": "The plot was fine."}]
    path = write_jsonl(tmp_path / "implicit.jsonl", pairs)
    splits, _ = load(tokenizer, "data=local", f"data.path={path}", "data.eval_split=train")
    assert splits["train"].to_list() == [
        # as TRL splits them: one space goes with the responses
        {"prompt": "Q: What colour is the sky? A: It is", "chosen": " blue.",
         "rejected": " green."},
        # TRL cuts "A: bl" and its tokenization trains on "A:" + " blue": so the cut here
        {"prompt": "Q: Name a colour. A:", "chosen": " blue", "rejected": " black"},
        {"prompt": "The plot was fine", "chosen": "!", "rejected": "."},
    ]


def test_implicit_prompt_records_need_a_shared_start_and_one_type(chat_tokenizer, tmp_path):
    hi, hello = {"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello"}
    pairs = [{"chosen": "good film", "rejected": "bad film"},
             {"chosen": [hi, {"role": "assistant", "content": "Hey"}], "rejected": [hello]},
             {"chosen": "a text", "rejected": [hi]}]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    message = config_error(chat_tokenizer, "data=local", f"data.path={path}",
                           "data.eval_split=train")
    assert "3 bad record(s) in split 'train'" in message
    assert "#0 chosen and rejected share no start to use as the prompt" in message
    assert "#1 chosen and rejected share no start" in message
    assert ("#2 without a prompt column, chosen and rejected must both be strings or both "
            "message lists") in message


def test_pairs_without_chosen_or_rejected_are_refused(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "yes"}])
    message = config_error(tokenizer, "data=local", f"data.path={path}")
    assert message.startswith("data.format='preference' needs column(s) rejected in split")


# ----- bad records -----------------------------------------------------------------------

LONG_PROMPT = " ".join(["word"] * 20)  # 21 tokens with <bos>


def bad_pairs() -> list[dict[str, str]]:
    pairs = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(8)]
    pairs[1]["chosen"] = "   "
    pairs[4]["prompt"] = LONG_PROMPT
    pairs[6]["rejected"] = ""
    return pairs


def test_bad_records_are_refused_in_one_line_naming_index_reason_and_count(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", bad_pairs())
    message = config_error(tokenizer, "data=local", f"data.path={path}", "data.eval_split=train",
                           "data.max_prompt_length=16")
    assert message.startswith("data: 3 bad record(s) in split 'train': ")
    assert "#1 empty chosen" in message
    assert "#4 prompt has 21 tokens > data.max_prompt_length=16" in message
    assert "#6 empty rejected" in message
    assert "data.on_bad_record=drop" in message


def test_many_bad_records_show_five_and_the_rest_as_a_count(tokenizer, tmp_path):
    pairs = [{"prompt": f"q{i}", "chosen": "", "rejected": "no"} for i in range(8)]
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    message = config_error(tokenizer, "data=local", f"data.path={path}", "data.eval_split=train")
    assert "data: 8 bad record(s)" in message and "and 3 more" in message
    assert "#4 empty chosen" in message and "#5" not in message


def test_drop_removes_bad_records_and_counts_them(tokenizer, tmp_path, caplog):
    path = write_jsonl(tmp_path / "pairs.jsonl", bad_pairs())
    with caplog.at_level(logging.WARNING, logger="riskalign.data.records"):
        splits, _ = load(tokenizer, "data=local", f"data.path={path}", "data.eval_split=train",
                         "data.max_prompt_length=16", "data.on_bad_record=drop")
    assert splits["train"]["prompt"] == ["q0", "q2", "q3", "q5", "q7"]
    assert PROBLEM_COLUMN not in splits["train"].column_names
    assert "dropped 3 bad record(s) of 8 from split 'train'" in caplog.text


def test_check_records_reports_bad_dropped_and_identical_pairs(tokenizer, caplog):
    pairs = bad_pairs()
    pairs[2]["rejected"] = pairs[2]["chosen"]
    pairs[7]["rejected"] = pairs[7]["chosen"]
    raw = DatasetDict(train=Dataset.from_list(pairs), eval=Dataset.from_list(pairs[:3]))
    with caplog.at_level(logging.WARNING, logger="riskalign.data.records"):
        splits, report = check_records(convert(raw, "preference", tokenizer), "pairs", tokenizer,
                                       max_prompt_length=16, on_bad_record="drop")
    assert report == {"train": {"bad": 3, "dropped": 3, "identical_pairs": 2},
                      "eval": {"bad": 1, "dropped": 1, "identical_pairs": 1}}
    assert splits["train"]["prompt"] == ["q0", "q2", "q3", "q5", "q7"]
    assert "3 pair(s) with chosen == rejected kept (train: 2, eval: 1)" in caplog.text


def test_text_the_vocabulary_does_not_cover_warns_with_the_unknown_rate(caplog):
    world = word_level_tokenizer(vocabulary())  # the embedded world's word-level tokenizer
    own = [{"prompt": "the movie was", "chosen": "good .", "rejected": "very bad ."}] * 4
    outside = [{"prompt": "the cinematography was", "chosen": "breathtaking .",
                "rejected": "derivative and overlong ."}] * 4  # 4 of 9 words unknown
    for pairs, expected in ((own, None), (outside, "44.4%")):
        raw = DatasetDict(train=Dataset.from_list(pairs), eval=Dataset.from_list(pairs[:1]))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="riskalign.data.records"):
            check_records(convert(raw, "preference", world), "pairs", world,
                          max_prompt_length=16)
        warnings = [r.getMessage() for r in caplog.records if "unknown token" in r.getMessage()]
        if expected is None:
            assert warnings == []
        else:
            assert warnings == [
                f"data: {expected} of the tokens are the tokenizer's unknown token '<unk>' "
                "(20 of 45 sampled; train: 44.4%, eval: 44.4%): its vocabulary does not cover "
                "this text"
            ]


@pytest.mark.parametrize("unknown, warns", [(7, False), (8, True)])
def test_unknown_rate_warns_only_above_five_percent(caplog, unknown, warns):
    world = word_level_tokenizer(vocabulary())
    pairs = [{"prompt": "the movie was", "chosen": "good .",
               "rejected": "derivative ." if index < unknown else "bad ."}
             for index in range(20)]  # 7 unknown of 140 tokens is 5.0 %, 8 is 5.7 %
    raw = DatasetDict(train=Dataset.from_list(pairs))
    with caplog.at_level(logging.WARNING, logger="riskalign.data.records"):
        check_records(convert(raw, "preference", world), "pairs", world, max_prompt_length=16)
    assert ("data: 5.7% of the tokens are the tokenizer's unknown token" in caplog.text) == warns
    assert ("unknown token" in caplog.text) == warns


def test_empty_prompt_reference_and_text_are_bad(tokenizer):
    references = DatasetDict(train=Dataset.from_dict(
        {"instruction": ["ok", " "], "output": ["", "fine"], "generator": ["g", "g"],
         "dataset": ["d", "d"]}))
    with pytest.raises(ConfigError) as error:
        check_records(convert(references, "alpacaeval", tokenizer), "references", tokenizer,
                      max_prompt_length=16)
    assert "2 bad record(s)" in str(error.value)
    assert "#0 empty reference; #1 empty prompt" in str(error.value)
    texts = DatasetDict(train=Dataset.from_dict({"text": ["a fine text", "  "]}))
    _, report = check_records(convert(texts, "text", tokenizer, prompt_tokens=2), "prompts",
                              tokenizer, max_prompt_length=16, on_bad_record="drop")
    assert report["train"] == {"bad": 1, "dropped": 1, "identical_pairs": 0}


def test_unknown_on_bad_record_names_the_allowed_values(tokenizer):
    message = config_error(tokenizer, "data=local", f"data.path={LOCAL / 'pairs.jsonl'}",
                           "data.on_bad_record=skip")
    assert message == "data.on_bad_record='skip' is not one of: error, drop"


# ----- refusals --------------------------------------------------------------------------


def test_unknown_format_lists_the_formats(tokenizer):
    message = config_error(tokenizer, "data=local", f"data.path={LOCAL / 'pairs.jsonl'}",
                           "data.format=tldr")
    assert message == f"data.format='tldr' is not one of: {', '.join(FORMATS)}"


def test_missing_column_names_split_columns_and_present_ones(tokenizer):
    message = config_error(tokenizer, "data=imdb", f"data.path={LOCAL / 'pairs.jsonl'}",
                           "data.subset=null")
    assert message == ("data.format='imdb' needs column(s) text in split 'train' "
                       f"(has: prompt, chosen, rejected) (data.path='{LOCAL / 'pairs.jsonl'}')")


def test_missing_path_unknown_file_and_missing_split(tokenizer, tmp_path):
    assert "does not exist" in config_error(tokenizer, "data=local",
                                            f"data.path={tmp_path / 'nowhere'}")
    (tmp_path / "pairs.txt").write_text("hello")
    assert "unknown file format" in config_error(tokenizer, "data=local",
                                                 f"data.path={tmp_path / 'pairs.txt'}")
    message = config_error(tokenizer, "data=imdb", f"data.path={IMDB}",
                           "data.train_split=validation")
    assert message == (f"data.train_split='validation' is not a split of data.path='{IMDB}' "
                       "(splits: train, test)")


def test_every_kind_has_a_format_and_formats_name_their_kind():
    assert {fmt.kind for fmt in FORMATS.values()} == set(KIND_COLUMNS)
    assert all(name == fmt.name for name, fmt in FORMATS.items())


def test_load_data_takes_the_path_argument_over_the_config(tokenizer):
    cfg = compose_config("data=local", "data.path=/not/used.jsonl", "data.eval_split=train")
    splits, _ = load_data(OmegaConf.to_container(cfg.data), tokenizer,
                          path=str(LOCAL / "pairs.jsonl"))
    assert len(splits["train"]) == 6
