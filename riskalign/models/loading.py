"""Load the policy, the frozen reference and the tokenizer from a hub ID or a local path."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from riskalign.config.fields import DTYPES, Choice, check_local_path
from riskalign.errors import ConfigError
from riskalign.models import gguf

log = logging.getLogger(__name__)


def torch_dtype(name: str, key: str = "model.dtype") -> torch.dtype:
    """The torch dtype a config's dtype names (each of DTYPES is torch's name for it)."""
    return getattr(torch, Choice(DTYPES)(key, name))


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
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype(dtype), attn_implementation=attn_implementation
        )
    except pickle.UnpicklingError as error:  # torch.load(weights_only=True) of a .bin file
        raise ConfigError(unpickling_refusal("model.name_or_path", name_or_path, error)) \
            from None


def unpickling_refusal(key: str, name_or_path: str, error: pickle.UnpicklingError) -> str:
    """The refusal of a .bin file that `torch.load(weights_only=True)` would not unpickle:
    one holding other objects than tensors (named where the error names the first), or one
    that is no pickle at all."""
    local = Path(name_or_path).expanduser()
    bins = sorted(file.name for file in local.glob("pytorch_model*.bin")) if local.is_dir() else []
    where = f"{key}={name_or_path!r}: {', '.join(bins) or 'pytorch_model.bin'}"
    text = str(error)
    blocked = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if blocked:
        return (f"{where} holds pickled objects that are not tensors ({blocked[1]}); loading "
                "them is blocked for safety (weights_only): convert it to safetensors")
    reason = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
    return (f"{where} is not a readable PyTorch weights file "
            f"({reason[1] if reason else text.splitlines()[0]})")


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode, no gradients: the reference never trains."""
    model.eval()
    model.requires_grad_(False)
    return model


def load_policy(source: str, model_cfg) -> PreTrainedModel:
    """The trainable policy: dropout, gradient checkpointing and LoRA adapters as the model
    config says.

    Dropout is off unless model.disable_dropout=false, as in TRL and the DPO reference
    code: with it on, the policy's log-probs at step 0 differ from the (eval-mode)
    reference's, so rewards and margins start as noise. It goes before the adapters are
    added: their own dropout is model.lora.dropout. Checkpointing is non-reentrant, so
    double backprop (the WDPO penalty) runs through it.
    """
    from riskalign.models.lora import add_lora, lora_settings

    policy = load_causal_lm(source, model_cfg.dtype, model_cfg.attn_implementation)
    if model_cfg.get("disable_dropout", True):
        disable_dropout(policy)
    if model_cfg.get("gradient_checkpointing", False):
        policy.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
        policy.config.use_cache = False  # a KV cache is useless when activations are recomputed
    lora = lora_settings(model_cfg)
    policy = add_lora(policy, lora) if lora else policy
    return compiled(policy, model_cfg)


def compiled(model: PreTrainedModel, model_cfg) -> PreTrainedModel:
    """The model with its forward compiled (`nn.Module.compile`: in place, so the module keeps
    its type, state dict and save_pretrained) when model.compile is true. Shapes vary from
    batch to batch (dynamic padding), so dynamic shapes are asked for up front rather than
    after a first recompilation."""
    if model_cfg.get("compile", False):
        model.compile(dynamic=True)
    return model


# Float attributes some attention implementations read as their dropout probability
# (Llama's, Qwen's `attention_dropout`, OPT's `dropout`) instead of an nn.Dropout module.
DROPOUT_ATTRIBUTES = ("dropout", "attention_dropout", "attn_dropout", "activation_dropout")


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout of the model off, in train mode too."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
