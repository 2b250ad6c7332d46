"""How a run is assembled from its checked config: the recipe the objective chooses.

- `offline`: preference pairs (or SFT rows), a frozen reference or its cached
  log-probabilities, an `AlignmentModule` (dpo, ipo, radpo, kldpo, wdpo, sft, ...);
- `online`: prompts, episodes sampled during training, an `OnlineRLModule` (ppo, ra_rlhf).

Both return a `run.Run` for `riskalign.training.trainer`. `sources` says where the world,
the model and the data come from, for every entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:  # the plan is built by riskalign.config.plan, which imports no recipe
    from riskalign.config.plan import RunPlan



def build_run(cfg: DictConfig, plan: RunPlan, run_dir: Path):
    """The run's data, models, LightningModule and evaluation, as its objective needs."""
    from riskalign.recipes import offline, online
    from riskalign.recipes.run import read_inputs

    inputs = read_inputs(cfg)
    return (online if plan.online else offline).build(cfg, plan, inputs, run_dir)
