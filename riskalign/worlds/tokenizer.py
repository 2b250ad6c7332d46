"""A word-level tokenizer for the embedded world, saved as an ordinary HF tokenizer."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def word_level_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A tokenizer with one id per word; it prepends <bos> like Llama's tokenizers do.

    Special tokens take ids 0-3 (<pad>, <bos>, <eos>, <unk>), words follow in order.
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + tuple(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    # Word pieces are whole words: decoding joins them with single spaces.
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
