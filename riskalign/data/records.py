"""Find bad records of converted splits; refuse them in one line or drop and count them."""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from riskalign.config_checks import ConfigError
from riskalign.data.formats import KIND_COLUMNS, PROBLEM_COLUMN

log = logging.getLogger(__name__)

ON_BAD_RECORD = ("error", "drop")
SHOWN_EXAMPLES = 5
BATCH_SIZE = 1000


def check_on_bad_record(value: Any) -> None:
    if value not in ON_BAD_RECORD:
        raise ConfigError(f"data.on_bad_record={value!r} is not one of: {', '.join(ON_BAD_RECORD)}")


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
    `max_prompt_length` tokens (counted as the trainer tokenizes it, special
    tokens included) and whatever the format flagged in `_problem`. "error"
    refuses the first split that has any; "drop" removes them with a warning.
    Pairs with chosen == rejected carry no preference but are valid: kept, counted.
    Indices are rows of the split as loaded (after any 95/5 division).
    """
    check_on_bad_record(on_bad_record)
    if kind not in KIND_COLUMNS:
        raise ConfigError(f"kind={kind!r} is not one of: {', '.join(KIND_COLUMNS)}")
    cleaned: dict[str, Dataset] = {}
    report: dict[str, dict[str, int]] = {}
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
        cleaned[split] = dataset
        report[split] = {"bad": len(bad), "dropped": len(bad), "identical_pairs": identical}
    counts = {split: entry["identical_pairs"] for split, entry in report.items()}
    if any(counts.values()):
        log.warning(
            "data: %d pair(s) with chosen == rejected kept (%s): they carry no preference",
            sum(counts.values()), ", ".join(f"{split}: {n}" for split, n in counts.items()),
        )
    return DatasetDict(cleaned), report


def find_problems(
    dataset: Dataset, kind: str, tokenizer: PreTrainedTokenizerBase, *, max_prompt_length: int
) -> list[str]:
    """One string per record: why it is bad, or "" when it is fine."""
    columns = KIND_COLUMNS[kind]
    read = [*columns, PROBLEM_COLUMN] if PROBLEM_COLUMN in dataset.column_names else columns
    problems: list[str] = []
    for batch in dataset.select_columns(read).iter(batch_size=BATCH_SIZE):
        lengths = [len(ids) for ids in tokenizer(batch["prompt"])["input_ids"]]
        for row, length in enumerate(lengths):
            reasons = [batch[PROBLEM_COLUMN][row]] if PROBLEM_COLUMN in batch else []
            reasons += [f"empty {column}" for column in columns if not batch[column][row].strip()]
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
