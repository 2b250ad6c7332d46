"""Tokenize training data and collate it into batches.

Preference pairs become chosen-first [2B, T] batches; raw text (for SFT on a
prompt dataset's `text`) becomes [N, T] rows trained on every token.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from datasets import DatasetDict
from lightning import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from riskalign.data.formats import encode_prompt, is_template_text, template_marks
from riskalign.data.resumable import ResumableLoader, ResumableSampler
from riskalign.errors import ConfigError
from riskalign.objectives.tokens import IGNORE_INDEX

DATA_KINDS = ("pairs", "prompts")  # what the data module can train on


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    chosen: str,
    rejected: str,
    *,
    max_length: int,
    max_prompt_length: int,
) -> dict[str, list[int]]:
    """Token ids of a pair (TRL's, for the records TRL reads), truncated as the DPO
    reference code does.

    A prompt the chat template rendered (chat records) is tokenized with each
    response as the template wrote the conversation, as TRL tokenizes
    conversations: no special tokens added (the template writes its own BOS, or
    none), prompt + response as one text. Other text gets the tokenizer's special
    tokens (e.g. <bos>) on the prompt, and each response is tokenized on its own,
    so one without a leading space keeps its word boundary (TRL tokenizes
    prompt + response as one text: the same ids when the boundary merges no
    tokens). A response ends with EOS unless it already closes its turn (with
    EOS, or with the template's end of turn such as "<|im_end|>\n"). If prompt +
    the longer response exceed `max_length`, the prompt keeps its last
    `max_prompt_length` tokens, then responses are cut to fit.
    """
    if is_template_text(prompt, tokenizer):
        prompt_ids, responses = _encode_conversation(tokenizer, prompt, (chosen, rejected))
    else:
        prompt_ids = encode_prompt(tokenizer, prompt)
        responses = [tokenizer(text, add_special_tokens=False)["input_ids"]
                     for text in (chosen, rejected)]
    responses = [
        ids if _closes_turn(tokenizer, text, ids) else [*ids, tokenizer.eos_token_id]
        for text, ids in zip((chosen, rejected), responses)
    ]
    longest = max(len(ids) for ids in responses)
    if len(prompt_ids) + longest > max_length:
        prompt_ids = prompt_ids[-max_prompt_length:]
    budget = max_length - len(prompt_ids)
    chosen_ids, rejected_ids = (ids[:budget] for ids in responses)
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


def _encode_conversation(
    tokenizer: PreTrainedTokenizerBase, prompt: str, responses: tuple[str, ...]
) -> tuple[list[int], list[list[int]]]:
    """Prompt and response ids of rendered conversations, each tokenized whole.

    A response starts where the prompt's ids and the conversation's part: a
    prompt's last tokens may merge with the response's first (SentencePiece
    spaces), and the prompt keeps only the ids every conversation has.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    whole = [tokenizer(prompt + text, add_special_tokens=False)["input_ids"] for text in responses]
    shared = min(_common_prefix(prompt_ids, ids) for ids in whole)
    return prompt_ids[:shared], [ids[shared:] for ids in whole]


def _common_prefix(left: list[int], right: list[int]) -> int:
    length = 0
    while length < min(len(left), len(right)) and left[length] == right[length]:
        length += 1
    return length


def _closes_turn(tokenizer: PreTrainedTokenizerBase, text: str, ids: list[int]) -> bool:
    """Whether a response already ends its turn, so a second EOS would be noise."""
    if ids and ids[-1] == tokenizer.eos_token_id:
        return True
    end_of_turn = template_marks(tokenizer).end_of_turn
    return bool(end_of_turn) and text.endswith(end_of_turn)


def collate_pairs(examples: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack B pairs into 2B right-padded rows, chosen rows first.

    Returns input_ids, attention_mask and labels [2B, T]; labels are the input
    ids with prompt and padding positions set to -100 (not yet shifted). Examples
    that carry cached `reference_logps` (chosen, rejected) add them as [2B].
    """
    rows, prompt_lengths = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for example in examples:
            rows.append(example["prompt_ids"] + example[key])
            prompt_lengths.append(len(example["prompt_ids"]))
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for index, (row, prompt_length) in enumerate(zip(rows, prompt_lengths)):
        tokens = torch.tensor(row, dtype=torch.long)
        input_ids[index, : len(row)] = tokens
        attention_mask[index, : len(row)] = 1
        labels[index, prompt_length : len(row)] = tokens[prompt_length:]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if "reference_logps" in examples[0]:
        cached = torch.tensor([example["reference_logps"] for example in examples])
        batch["reference_logps"] = torch.cat([cached[:, 0], cached[:, 1]])
    return batch


def tokenize_text(
    tokenizer: PreTrainedTokenizerBase, text: str, *, max_length: int
) -> dict[str, list[int]]:
    """Token ids of a raw text (with the tokenizer's special tokens) ending in EOS, cut to fit."""
    ids = tokenizer(text)["input_ids"][: max_length - 1] + [tokenizer.eos_token_id]
    return {"input_ids": ids}


def collate_text(examples: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad N texts; labels are the ids on real tokens, -100 on padding."""
    width = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for index, example in enumerate(examples):
        input_ids[index, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        attention_mask[index, : len(example["input_ids"])] = 1
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class PreferenceDataModule(LightningDataModule):
    """Train and eval batches from a DatasetDict with "train" and "eval" splits.

    kind "pairs": `prompt`/`chosen`/`rejected` columns, chosen-first [2B, T] batches.
    kind "prompts": `prompt`/`text` columns, [N, T] batches of the raw text (SFT).
    """

    def __init__(
        self,
        splits: DatasetDict,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        max_prompt_length: int,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        kind: str = "pairs",
    ) -> None:
        super().__init__()
        if kind not in DATA_KINDS:
            raise ConfigError(
                f"data kind {kind!r} cannot train: use one of {', '.join(DATA_KINDS)}"
            )
        self.kind = kind
        self.splits = splits
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.tokenized: DatasetDict | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.tokenized is not None:
            return
        self.tokenized = self.splits.map(
            self._tokenize_record,
            remove_columns=self.splits["train"].column_names,
            keep_in_memory=True,  # no cache files next to a dataset that sweeps share
            desc=f"tokenizing {self.kind}",
        )

    def _tokenize_record(self, record: dict[str, Any]) -> dict[str, list[int]]:
        if self.kind == "prompts":
            return tokenize_text(self.tokenizer, record["text"], max_length=self.max_length)
        return tokenize_pair(
            self.tokenizer,
            record["prompt"],
            record["chosen"],
            record["rejected"],
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
        )

    def attach_reference_logps(self, logps: dict[str, torch.Tensor]) -> None:
        """Give every pair its cached (chosen, rejected) reference log-probabilities."""
        assert self.tokenized is not None, "call setup() first"
        for split, values in logps.items():
            dataset = self.tokenized[split]
            if len(values) != len(dataset):
                raise ValueError(f"reference log-probs for {len(values)} pairs, but split "
                                 f"{split!r} has {len(dataset)}")
            if "reference_logps" in dataset.column_names:
                dataset = dataset.remove_columns("reference_logps")
            self.tokenized[split] = dataset.add_column("reference_logps", values.tolist())

    def ordered_loader(self, split: str) -> DataLoader:
        """Every example of `split` once, in dataset order (eval_batch_size per batch)."""
        return self._loader(split, self.eval_batch_size, shuffle=False)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        """Batches of `split`: shuffled (and resumable mid-epoch) for training, else in order."""
        assert self.tokenized is not None, "call setup() first"
        dataset = self.tokenized[split]
        collate = partial(collate_text if self.kind == "prompts" else collate_pairs,
                          pad_token_id=self.tokenizer.pad_token_id)
        if not shuffle:
            return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                              collate_fn=collate,
                              generator=torch.Generator().manual_seed(self.seed))
        return ResumableLoader(dataset, sampler=self._shuffled_sampler(dataset), seed=self.seed,
                               batch_size=batch_size, num_workers=self.num_workers,
                               collate_fn=collate)

    def _shuffled_sampler(self, dataset) -> ResumableSampler:
        """One seeded permutation per epoch whatever the number of processes: process r of
        W takes its every W-th element, so W processes with batch b see, step by step,
        the same pairs as one process with batch W·b."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def eval_dataloader(self) -> DataLoader:
        return self._loader("eval", self.eval_batch_size, shuffle=False)
