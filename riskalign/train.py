"""The Hydra entry point: `python -m riskalign.train objective=radpo data=reviews ...`.

Little logic of its own: check the config (riskalign.config.plan), find the resume point,
assemble the run with the recipe its objective chooses (riskalign.recipes), fit it
(riskalign.training.trainer), and write the run's result files.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from riskalign.config.launch import exit_on_resource_error
from riskalign.config.plan import check_run
from riskalign.errors import ConfigError, NumericalGuardError, Preempted

log = logging.getLogger("riskalign.train")
# The frozen reference is in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# The CSV logger writes into the run directory, where Hydra's files already are; the only
# file it replaces is metrics.csv (a resumed run puts the checkpoint's rows back).
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
# Lightning 2.6 builds torch's deprecated LeafSpec (torch 2.13 warns at each use); nothing
# a user can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                        category=FutureWarning)

@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from riskalign.objectives import ObjectiveConfigError

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    identity = run_identity(cfg, hydra_cfg, multirun)
    if multirun:
        _pin_process_launches_to_this_job(hydra_cfg)
    try:
        train(cfg, Path(hydra_cfg.runtime.output_dir), identity)
    except (ConfigError, ObjectiveConfigError) as error:
        if multirun:
            raise  # Hydra marks the job failed, RecordFailures writes it down, the sweep goes on
        print(f"riskalign: error: {error}", file=sys.stderr)
        sys.exit(2)
    except (NumericalGuardError, Preempted) as error:
        if multirun:
            raise
        print(f"riskalign: stopped: {error}", file=sys.stderr)
        # 143 = 128 + SIGTERM, what a job killed by it reports, so that requeue logic sees it
        sys.exit(143 if isinstance(error, Preempted) else 1)
    except Exception as error:
        exit_on_resource_error("riskalign", error, reraise=multirun)


def _pin_process_launches_to_this_job(hydra_cfg: DictConfig) -> None:
    """Lightning's DDP launcher starts each extra process by re-running sys.argv with
    hydra.run.dir set to the config's run dir. Inside a multirun, sys.argv is the whole
    sweep and hydra.run.dir is not this job's directory: every child would launch the
    sweep again. So the command line becomes this one job's overrides, and the run dir
    this job's output directory."""
    from omegaconf import open_dict, read_write

    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def train(cfg: DictConfig, run_dir: Path, identity=None) -> dict[str, Any]:
    """One run: returns the summary it also writes to `run_dir/summary.json`.

    `identity` (a runs.identity.RunIdentity) gives the run's label, W&B name, tags and
    group; by default the label derived from the config and no group.
    """
    from riskalign.runs.directory import claim_run_directory, continue_log_in
    from riskalign.training.resume import find_resume_point

    started = time.perf_counter()
    plan = check_run(cfg)
    identity = identity or run_identity(cfg)
    resume_from = find_resume_point(cfg)  # refuses a bad target before anything loads
    lock = claim_run_directory(resume_from.run_dir if resume_from else run_dir)
    try:
        if resume_from is not None:
            log.info("Resuming %s from step %d (%s)", resume_from.run_dir, resume_from.step,
                     resume_from.directory.name)
            continue_log_in(resume_from.run_dir, run_dir)
            run_dir = resume_from.run_dir  # the run goes on in its own directory
        return _fit_and_record(cfg, plan, run_dir, identity, resume_from, started)
    finally:
        if lock is not None:
            lock.release()


def _fit_and_record(cfg: DictConfig, plan, run_dir: Path, identity, resume_from,
                    started: float) -> dict[str, Any]:
    """The run itself, in `run_dir`, which this process has claimed."""
    from riskalign.evaluation.report import print_closing_table
    from riskalign.recipes import build_run
    from riskalign.runs.artifacts import write_json_atomic
    from riskalign.training import trainer as fitting
    from riskalign.training.loggers import finish_wandb, log_curve

    run_dir.mkdir(parents=True, exist_ok=True)
    run = build_run(cfg, plan, run_dir)  # heavy imports only once the config is sound
    fit = fitting.build_trainer(cfg, run, run_dir, identity, resume_from)
    launch_environment = fitting.launch_environment()
    try:
        fitting.fit(fit, run, run_dir, resume_from)
        if cfg.checkpoint.save_policy:
            fitting.save_policy(fit.trainer, run.module, run.inputs.tokenizer,
                                run_dir / "policy")
        if not fit.trainer.is_global_zero:
            return {"final": run.evaluation.curve[-1]}  # rank 0 writes the run's files
        log_curve(fit.loggers, run.evaluation.curve)
        summary = fitting.run_summary(cfg, run, fit, identity, run_dir, resume_from, started,
                                      plan.kind)
        write_json_atomic(run_dir / "summary.json", summary)
    finally:
        finish_wandb(fit.loggers)
        fitting.leave_process_group(launch_environment)
    print_closing_table(summary["reference"], summary["final"], cfg.eval.tail_fraction)
    log.info("Run written to %s", run_dir)
    return summary


def run_identity(cfg: DictConfig, hydra_cfg=None, multirun: bool = False):
    """The run's label (from the config), arm, sweep values and W&B group."""
    from riskalign.reports.labels import run_label
    from riskalign.runs.identity import RunIdentity, multirun_identity, sweep_group_name

    label = run_label(OmegaConf.to_container(cfg, resolve=True))
    group = cfg.logger.wandb.group
    if multirun:
        return multirun_identity(hydra_cfg, label, group or sweep_group_name(hydra_cfg.sweep.dir))
    arm = hydra_cfg.runtime.choices.get("arm") if hydra_cfg is not None else None
    return RunIdentity(label=label, arm=arm, group=group)


if __name__ == "__main__":
    from riskalign.config.command_line import refuse_unknown_choices
    from riskalign.config.launch import refuse_before_launch

    refuse_unknown_choices("riskalign")  # one line and exit 2, before Hydra composes
    # keys without +, unwritable paths, and every job of a sweep checked before the first
    refuse_before_launch("riskalign", "train", check_job=check_run)
    main()
