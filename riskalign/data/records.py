"""Find bad records of converted splits; refuse them in one line or drop and count them."""

from __future__ import annotations

import logging
import math
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from riskalign.config.fields import ON_BAD_RECORD, Choice
from riskalign.data.formats import KIND_COLUMNS, PROBLEM_COLUMN, prompt_special_tokens
from riskalign.errors import ConfigError

log = logging.getLogger(__name__)

SHOWN_EXAMPLES = 5
BATCH_SIZE = 1000
# More unknown tokens than this and the tokenizer's vocabulary does not cover the text
# (the embedded world's word-level tokenizer on outside text): worth a warning.
UNKNOWN_TOKEN_RATE = 0.05
UNKNOWN_SAMPLE = 1000  # records per split, evenly spaced: a rate needs no full pass


def check_on_bad_record(value: Any) -> None:
    Choice(ON_BAD_RECORD)("data.on_bad_record", value)


def check_records(
    splits: DatasetDict,
    kind: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_prompt_length: int,
    on_bad_record: str = "error",
) -> tuple[DatasetDict, dict[str, dict[str, int]]]:
    """The splits without bad records, and {split: {"bad", "dropped", "identical_pairs"}}.

    Bad: an empty (whitespace-only) column of the kind, a prompt of more than
    `max_prompt_length` tokens (counted as `tokenize_pair` encodes it, special
    tokens included) and whatever the format flagged in `_problem`. "error"
    refuses the first split that has any; "drop" removes them with a warning.
    Pairs with chosen == rejected carry no preference but are valid: kept, counted.
    Indices are rows of the split as loaded (after holding out data.eval_fraction). A warning
    gives the rate when more than 5 % of the kept text's tokens (in a sample of
    each split) are the tokenizer's unknown token.
    """
    check_on_bad_record(on_bad_record)
    if kind not in KIND_COLUMNS:
        raise ConfigError(f"kind={kind!r} is not one of: {', '.join(KIND_COLUMNS)}")
    cleaned: dict[str, Dataset] = {}
    report: dict[str, dict[str, int]] = {}
    unknown: dict[str, tuple[int, int]] = {}
    for split, dataset in splits.items():
        problems = find_problems(dataset, kind, tokenizer, max_prompt_length=max_prompt_length)
        bad = [index for index, problem in enumerate(problems) if problem]
        if bad and on_bad_record == "error":
            raise ConfigError(
                f"data: {len(bad)} bad record(s) in split {split!r}: "
                f"{_examples(bad, problems)} (set data.on_bad_record=drop to drop them)"
            )
        if bad:
            keep = sorted(set(range(len(dataset))) - set(bad))
            dataset = dataset.select(keep, keep_in_memory=True)
            log.warning("data: dropped %d bad record(s) of %d from split %r: %s",
                        len(bad), len(problems), split, _examples(bad, problems))
            if not len(dataset):
                raise ConfigError(
                    f"data: split {split!r} has no records left after dropping {len(bad)} bad "
                    "record(s)"
                )
        if PROBLEM_COLUMN in dataset.column_names:
            dataset = dataset.remove_columns(PROBLEM_COLUMN)
        identical = _identical_pairs(dataset) if kind == "pairs" else 0
        if tokenizer.unk_token_id is not None:
            unknown[split] = _unknown_tokens(dataset, kind, tokenizer)
        cleaned[split] = dataset
        report[split] = {"bad": len(bad), "dropped": len(bad), "identical_pairs": identical}
    counts = {split: entry["identical_pairs"] for split, entry in report.items()}
    if any(counts.values()):
        log.warning(
            "data: %d pair(s) with chosen == rejected kept (%s): they carry no preference",
            sum(counts.values()), ", ".join(f"{split}: {n}" for split, n in counts.items()),
        )
    _warn_unknown_tokens(unknown, tokenizer.unk_token)
    return DatasetDict(cleaned), report


def find_problems(
    dataset: Dataset, kind: str, tokenizer: PreTrainedTokenizerBase, *, max_prompt_length: int
) -> list[str]:
    """One string per record: why it is bad, or "" when it is fine."""
    columns = KIND_COLUMNS[kind]
    read = [*columns, PROBLEM_COLUMN] if PROBLEM_COLUMN in dataset.column_names else columns
    problems: list[str] = []
    for batch in dataset.select_columns(read).iter(batch_size=BATCH_SIZE):
        # as encode_prompt encodes prompts: a rendered chat prompt gets no special tokens
        lengths = [
            len(ids) + prompt_special_tokens(tokenizer, prompt)
            for prompt, ids in zip(
                batch["prompt"], tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
            )
        ]
        for row, length in enumerate(lengths):
            flagged = batch[PROBLEM_COLUMN][row] if PROBLEM_COLUMN in batch else ""
            # a record the format could not convert has empty columns: that says no more
            reasons = [flagged] if flagged else [
                f"empty {column}" for column in columns if not batch[column][row].strip()]
            if length > max_prompt_length:
                reasons.append(
                    f"prompt has {length} tokens > data.max_prompt_length={max_prompt_length}"
                )
            problems.append(", ".join(reason for reason in reasons if reason))
    return problems


def _examples(bad: list[int], problems: list[str]) -> str:
    shown = "; ".join(f"#{index} {problems[index]}" for index in bad[:SHOWN_EXAMPLES])
    more = len(bad) - SHOWN_EXAMPLES
    return f"{shown}; and {more} more" if more > 0 else shown


def _identical_pairs(dataset: Dataset) -> int:
    return sum(
        chosen == rejected
        for batch in dataset.select_columns(["chosen", "rejected"]).iter(batch_size=BATCH_SIZE)
        for chosen, rejected in zip(batch["chosen"], batch["rejected"])
    )


def _unknown_tokens(
    dataset: Dataset, kind: str, tokenizer: PreTrainedTokenizerBase
) -> tuple[int, int]:
    """(unknown tokens, tokens) in the kind's columns of up to UNKNOWN_SAMPLE evenly spaced
    records of a split, special tokens aside."""
    stride = max(1, math.ceil(len(dataset) / UNKNOWN_SAMPLE))
    sample = dataset.select(range(0, len(dataset), stride), keep_in_memory=True)
    unknown = total = 0
    for batch in sample.select_columns(list(KIND_COLUMNS[kind])).iter(batch_size=BATCH_SIZE):
        for texts in batch.values():
            for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
                unknown += ids.count(tokenizer.unk_token_id)
                total += len(ids)
    return unknown, total


def _warn_unknown_tokens(counts: dict[str, tuple[int, int]], unk_token: str | None) -> None:
    unknown = sum(split_unknown for split_unknown, _ in counts.values())
    total = sum(split_total for _, split_total in counts.values())
    if total and unknown > UNKNOWN_TOKEN_RATE * total:
        per_split = ", ".join(f"{split}: {_percent(*pair)}" for split, pair in counts.items())
        log.warning(
            "data: %s of the tokens are the tokenizer's unknown token %r (%d of %d sampled; %s): "
            "its vocabulary does not cover this text", _percent(unknown, total), unk_token,
            unknown, total, per_split,
        )


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "no tokens"
