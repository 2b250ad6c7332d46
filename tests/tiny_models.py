"""Tiny randomly initialised HF models saved to disk, for tests that must run offline.

An importable helper, not a test file: `make_tiny_classifier` writes a directory that
AutoTokenizer and AutoModelForSequenceClassification load like a hub checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
MAX_POSITIONS = 128

COMMON_WORDS = """
the a an and or but if then so of to in on at by for with from about as into over after
is was are were be been being have has had do does did will would can could should may
i you he she it we they me him her us them my your his its our their this that these those
what which who when where why how not no yes all any some more most very just also only
movie film story plot actor actors acting scene scenes director music character characters
good great bad terrible awful wonderful excellent boring funny sad happy love loved hate
hated like liked enjoyed best worst beautiful ugly nice fine poor amazing brilliant dull
time people man woman day year way thing life world work place part end question answer
make made see saw watch watched think thought know knew feel felt say said tell told give
one two three first last new old long short little big small high low own other same
. , ! ? ' "
""".split()


def tiny_word_tokenizer(words: Sequence[str] = COMMON_WORDS) -> PreTrainedTokenizerFast:
    """A lowercase word-level BERT-style tokenizer: [CLS] a [SEP] (b [SEP]) with type ids."""
    tokens = (PAD, UNK, CLS, SEP, *dict.fromkeys(words))  # dict.fromkeys: drop repeats, keep order
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # splits punctuation off words
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        cls_token=CLS,
        sep_token=SEP,
        model_max_length=MAX_POSITIONS,
        padding_side="right",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def make_tiny_classifier(
    directory: str | Path, labels: Sequence[str] = ("NEGATIVE", "POSITIVE"), seed: int = 0
) -> Path:
    """Write a random 2-layer BERT sequence classifier and its tokenizer to `directory`."""
    directory = Path(directory)
    tokenizer = tiny_word_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.3,  # logits spread enough that texts score visibly apart
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
