"""LoRA policies whose reference is the same base model with the adapter switched off.

With `model.lora.enabled` the policy is the base model plus low-rank adapters, and
only the adapters train. The base weights never change, so the frozen reference is
the policy itself with its adapters disabled: one copy of the weights in memory
instead of two.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from riskalign.config.fields import REQUIRED, Integer, Real, boolean, read_settings, setting, text
from riskalign.errors import ConfigError

log = logging.getLogger(__name__)


def _module_names(path: str, value: Any) -> tuple[str, ...]:
    """The names of the modules to adapt: a list of names, or one name alone."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, Sequence):
        raise ConfigError(f"{path}={value!r} is not a list of module names")
    if not names:
        raise ConfigError(f"{path} is empty: name the modules to adapt, e.g. [q_proj, v_proj]")
    return tuple(text(f"{path}[{index}]", name) for index, name in enumerate(names))


@dataclass(frozen=True)
class LoraSettings:
    """model.lora: the values come from the model's config (conf/model/*.yaml)."""

    rank: int = setting(REQUIRED, Integer())
    alpha: float = setting(REQUIRED, Real(low=0.0))
    dropout: float = setting(REQUIRED, Real(low=0.0, high=1.0, low_open=False, high_open=True))
    target_modules: tuple[str, ...] = setting(REQUIRED, _module_names)
    enabled: bool = setting(False, boolean)


def lora_settings(model_cfg: Any) -> dict[str, Any] | None:
    """The model config's LoRA block as peft's LoraConfig arguments, or None when LoRA is off."""
    lora = model_cfg.get("lora") if hasattr(model_cfg, "get") else None
    if not lora or not boolean("model.lora.enabled", lora.get("enabled", False)):
        return None
    settings = read_settings(LoraSettings, "model.lora", lora)
    return {"r": settings.rank, "lora_alpha": settings.alpha, "lora_dropout": settings.dropout,
            "target_modules": list(settings.target_modules)}


def add_lora(model: torch.nn.Module, settings: dict[str, Any]) -> torch.nn.Module:
    """Wrap `model` in trainable LoRA adapters; the base weights are frozen."""
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [target for target in settings["target_modules"] if target not in names]
    if missing:
        raise ConfigError(
            f"model.lora.target_modules: {missing} not found in {type(model).__name__}; "
            f"its linear layers include: {', '.join(sorted(_linear_names(model)))}"
        )
    # GPT-2's Conv1D layers store their weight transposed; peft must be told
    conv1d = any(type(module).__name__ == "Conv1D" and name.rsplit(".", 1)[-1] in
                 settings["target_modules"] for name, module in model.named_modules())
    policy = get_peft_model(
        model, LoraConfig(task_type="CAUSAL_LM", fan_in_fan_out=conv1d, **settings)
    )
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    total = sum(p.numel() for p in policy.parameters())
    log.info("LoRA: %d of %d parameters train (%.2f%%)", trainable, total, 100 * trainable / total)
    return policy


def _linear_names(model: torch.nn.Module) -> set[str]:
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
    }


def merge_adapter(adapter_dir: Path, output_dir: Path, base: str | None = None) -> Path:
    """Write a full HF checkpoint: the base model with the adapter at `adapter_dir` merged in.

    `base` overrides the base model recorded in the adapter's config (e.g. when the
    checkpoint has moved). The output is written atomically with the tokenizer, if the
    adapter directory has one.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from riskalign.runs.artifacts import build_atomically, check_policy

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir} has no adapter_config.json: not a LoRA policy directory")
    check_policy(adapter_dir, "adapter")  # never certify a merge of a damaged adapter
    if Path(output_dir).exists():
        raise ConfigError(f"{output_dir} already exists: merge into a new directory")
    config = PeftConfig.from_pretrained(str(adapter_dir))
    base = base or config.base_model_name_or_path

    def build(staging: Path) -> dict[str, Any]:
        model = AutoModelForCausalLM.from_pretrained(base)
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(staging)
        if (adapter_dir / "tokenizer_config.json").is_file():
            AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(staging)
        return {"adapter": str(adapter_dir), "base": base}

    return build_atomically(Path(output_dir), "merged.json", build)

