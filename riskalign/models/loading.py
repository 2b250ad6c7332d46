"""Load the policy, the frozen reference and the tokenizer from a hub ID or a local path."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from riskalign.config_checks import ConfigError, check_local_path
from riskalign.models import gguf

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r} is not one of: {', '.join(DTYPES)}")
    return DTYPES[name]


def is_local(name_or_path: str) -> bool:
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()


def resolve_model_source(name_or_path: str, cache_dir: str | Path) -> str:
    """What `from_pretrained` should read: hub IDs and HF directories as they are,
    a .gguf file as its cached HF conversion."""
    check_local_path(name_or_path, "model.name_or_path")
    if gguf.is_gguf(name_or_path):
        return str(gguf.ensure_converted(name_or_path, cache_dir))
    return name_or_path


def load_tokenizer(name_or_path: str):
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token_id is None:  # GPT-2 and Llama ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, dtype: str, attn_implementation: str) -> PreTrainedModel:
    check_local_path(name_or_path, "model.name_or_path")
    return AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=torch_dtype(dtype), attn_implementation=attn_implementation
    )


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode, no gradients: the reference never trains."""
    model.eval()
    model.requires_grad_(False)
    return model
