"""The optimizer and learning-rate schedule of every riskalign LightningModule (conf: optim).

    optim.optimizer   adamw (fused where allowed) | adafactor (factored second moments:
                      O(rows + cols) state per matrix instead of AdamW's 2x the weights)
    optim.scheduler   constant | linear | cosine, each after a linear warm-up
    optim.lr          null: the model config's rate (model.lr.full, or model.lr.lora)

The schedules are transformers' (`get_scheduler`), so a run's rate at every step is the
one a TRL or HF Trainer user gets from the same `lr_scheduler_type` and warm-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # torch loads with the first optimizer: config checks import the names
    import torch

OPTIMIZERS = ("adamw", "adafactor")
SCHEDULERS = ("constant", "linear", "cosine")
# transformers' name of each schedule with a warm-up
_HF_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def build_optimizer(parameters: Iterable[torch.nn.Parameter], optim: dict[str, Any],
                    total_steps: int, precision: str | None = None) -> dict:
    """The optimizer over the trainable parameters and its per-step schedule, as
    Lightning's `configure_optimizers` returns them. `total_steps` is how many times
    the schedule steps in the run (where linear and cosine reach zero)."""
    trainable = [p for p in parameters if p.requires_grad]
    optimizer = _optimizer(trainable, optim, precision)
    from transformers import get_scheduler

    schedule = get_scheduler(_HF_SCHEDULES[optim.get("scheduler", "constant")], optimizer,
                             num_warmup_steps=warmup_steps(optim, total_steps),
                             num_training_steps=max(total_steps, 1))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def warmup_steps(optim: dict[str, Any], total_steps: int) -> int:
    """optim.warmup_steps when set, else optim.warmup_ratio of the run's steps (TRL's
    warmup_ratio)."""
    if optim.get("warmup_steps") is not None:
        return int(optim["warmup_steps"])
    return int(round((optim.get("warmup_ratio") or 0.0) * total_steps))


def _optimizer(trainable: list[torch.nn.Parameter], optim: dict[str, Any],
               precision: str | None) -> torch.optim.Optimizer:
    import torch

    name = optim.get("optimizer", "adamw")
    lr, weight_decay = float(optim["lr"]), float(optim["weight_decay"])
    if name == "adafactor":
        # torch's Adafactor keeps no first moment and factors the second: for a [r, c]
        # matrix r + c floats of state, where AdamW keeps 2·r·c.
        return torch.optim.Adafactor(trainable, lr=lr, weight_decay=weight_decay)
    # One fused kernel over all parameters instead of a loop of small ops per tensor; not
    # under Lightning's mixed precision, which refuses to clip gradients for an optimizer
    # that unscales them itself.
    fused_dtypes = (torch.float32, torch.bfloat16, torch.float16)
    fused = (all(p.dtype in fused_dtypes for p in trainable)
             and not str(precision).endswith("mixed"))
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay,
                             betas=tuple(optim["betas"]), fused=fused or None)


def gradient_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The total L2 norm of the gradients the optimizer is about to apply, before
    clipping: what `clip_grad_norm_` returns and HF/TRL log as grad_norm."""
    import torch

    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


# Published DPO fine-tuning of models of 100M+ parameters uses rates up to ~5e-6 (full) and
# ~5e-5 (LoRA adapters); ten times that is where a real model collapses within steps.
LARGE_MODEL_PARAMETERS = 50_000_000
HIGH_RATE = {"full": 5e-5, "lora": 5e-4}


def learning_rate_warning(lr: float, mode: str, parameters: int,
                          model_name: str, model_rate: float | None) -> str | None:
    """One line when `lr` looks an order of magnitude too high for the model's size and
    mode ("full" or "lora"): 10x the model config's own rate, or above `HIGH_RATE` for a
    model of `LARGE_MODEL_PARAMETERS` or more. None when it looks sane."""
    if model_rate is not None and lr >= 10 * model_rate:
        return (f"optim.lr={lr:g} is {lr / model_rate:.0f}x model={model_name}'s {mode} "
                f"fine-tuning rate model.lr.{mode}={model_rate:g}: expect the policy to "
                "collapse within steps")
    if parameters >= LARGE_MODEL_PARAMETERS and lr > HIGH_RATE[mode]:
        return (f"optim.lr={lr:g} is above {HIGH_RATE[mode]:g}, 10x the top of published "
                f"{mode} DPO rates for a model of {parameters / 1e6:.0f}M parameters: expect "
                "the policy to collapse within steps")
    return None


def training_mode(cfg: DictConfig) -> str:
    """"lora" when the run trains LoRA adapters, else "full": which model.lr rate applies."""
    return "lora" if OmegaConf.select(cfg, "model.lora.enabled", default=False) else "full"
