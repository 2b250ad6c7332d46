"""Lightning strategies from `trainer.strategy` (conf/trainer/): ddp, fsdp, deepspeed.

A strategy is given either as Lightning's own string ("auto", "ddp", ...) or as a
block with a `name` and its settings. FSDP needs objects a YAML file cannot hold:
the auto-wrap policy wraps every decoder block (`model.block_class`) and each
whole model (policy and reference) as FSDP units of their own, so the frozen
reference never shares a flat parameter with the trainable policy.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any

from riskalign.errors import ConfigError

STRATEGIES = ("ddp", "fsdp", "deepspeed")
FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")
DEEPSPEED_STAGES = (2, 3)
SHARDED_GPU_ONLY = ("fsdp", "deepspeed")  # Lightning runs them on CUDA devices only


def check_strategy(trainer: Any) -> None:
    """Refuse a trainer.strategy block that cannot work, or a GPU trainer on a machine without
    one, before anything loads."""
    strategy = trainer.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        _check_block(trainer, strategy)
    check_gpu(trainer)


def check_gpu(trainer: Any) -> None:
    """A trainer that asks for CUDA (trainer.accelerator gpu or cuda, or a sharded strategy,
    conf/trainer/{gpu,ddp,fsdp,deepspeed}.yaml) needs torch.cuda.is_available(); torch is
    imported only then. accelerator=auto takes the CPU where there is no GPU."""
    accelerator = str(trainer.get("accelerator", "auto"))
    sharded = _sharded_name(trainer.get("strategy"))
    if accelerator not in ("gpu", "cuda") and (sharded is None or accelerator == "cpu"):
        return
    import torch

    if torch.cuda.is_available():
        return
    if sharded is not None:
        raise ConfigError(
            f"{sharded} needs CUDA GPUs, and torch.cuda.is_available() is "
            "False on this machine: use trainer=cpu (one process) or trainer=ddp "
            "trainer.accelerator=cpu (several CPU processes)"
        )
    raise ConfigError(
        f"trainer.accelerator={accelerator!r} needs a CUDA GPU, and torch.cuda.is_available() "
        "is False on this machine: use trainer=cpu (or trainer.accelerator=cpu)"
    )


def _sharded_name(strategy: Any) -> str | None:
    """`trainer.strategy.name=fsdp` (a block) or `trainer.strategy='deepspeed_stage_3'`
    (Lightning's own string) for a strategy Lightning runs on CUDA devices only, else None."""
    if isinstance(strategy, str):
        key, name = "trainer.strategy", strategy
    elif strategy is not None:
        key, name = "trainer.strategy.name", strategy.get("name")
    else:
        return None
    if isinstance(name, str) and name.split("_")[0] in SHARDED_GPU_ONLY:
        return f"{key}={name!r}" if key == "trainer.strategy" else f"{key}={name}"
    return None


def _check_block(trainer: Any, strategy: Any) -> None:
    name = strategy.get("name")
    if name not in STRATEGIES:
        raise ConfigError(f"trainer.strategy.name={name!r} is not one of: {', '.join(STRATEGIES)}")
    if name in SHARDED_GPU_ONLY and trainer.get("accelerator") == "cpu":
        raise ConfigError(
            f"trainer.strategy.name={name} needs GPUs but trainer.accelerator=cpu: use "
            "trainer=ddp with trainer.accelerator=cpu to run several CPU processes"
        )
    if name == "fsdp" and strategy.get("sharding_strategy", "FULL_SHARD") not in FSDP_SHARDING:
        raise ConfigError(
            f"trainer.strategy.sharding_strategy={strategy['sharding_strategy']!r} is not one "
            f"of: {', '.join(FSDP_SHARDING)}"
        )
    if name == "deepspeed":
        if strategy.get("stage", 2) not in DEEPSPEED_STAGES:
            raise ConfigError(
                f"trainer.strategy.stage={strategy['stage']!r} is not one of: 2, 3"
            )
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(
                "trainer.strategy.name=deepspeed needs the deepspeed package: "
                "pip install 'riskalign[deepspeed]' (on a machine with CUDA)"
            )


def build_strategy(strategy: Any, block_class: str | None) -> Any:
    """What lightning.Trainer(strategy=...) takes for the configured strategy."""
    if strategy is None or isinstance(strategy, str):
        return strategy or "auto"
    settings = {key: value for key, value in dict(strategy).items() if key != "name"}
    name = strategy["name"]
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(**settings)
    if name == "fsdp":
        return _fsdp(settings, block_class)
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(**settings)


def _fsdp(settings: dict[str, Any], block_class: str | None) -> Any:
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy
    from transformers import PreTrainedModel

    block = _import_class(block_class) if block_class else None
    wrapped = (PreTrainedModel,) if block is None else (PreTrainedModel, block)
    activation_checkpointing = settings.pop("activation_checkpointing", False) and block
    return FSDPStrategy(
        auto_wrap_policy=functools.partial(
            lambda_auto_wrap_policy, lambda_fn=lambda module: isinstance(module, wrapped)
        ),
        # recompute each decoder block in the backward pass (FSDP's own, non-reentrant)
        activation_checkpointing_policy={block} if activation_checkpointing else None,
        # frozen reference weights and trainable LoRA adapters can share a unit
        use_orig_params=True,
        **settings,
    )


def _import_class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"model.block_class={dotted!r} cannot be imported: {error}") from None
