"""The Hydra entry point: `python -m riskalign.train objective=radpo data=reviews ...`.

Little logic of its own: check the config, resolve data and models, wire the
Lightning pieces together, fit, and write the run's result files.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from riskalign.config.checks import check_config, reference_cache_enabled, resolve_learning_rate
from riskalign.config.launch import exit_on_resource_error
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
    identity = _identity(cfg, hydra_cfg, multirun)
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


def _identity(cfg: DictConfig, hydra_cfg: DictConfig, multirun: bool):
    from riskalign.reports.labels import run_label
    from riskalign.runs.identity import RunIdentity, multirun_identity, sweep_group_name

    label = run_label(OmegaConf.to_container(cfg, resolve=True))
    group = cfg.logger.wandb.group
    if not multirun:
        return RunIdentity(label=label, arm=hydra_cfg.runtime.choices.get("arm"), group=group)
    return multirun_identity(hydra_cfg, label, group or sweep_group_name(hydra_cfg.sweep.dir))


def train(cfg: DictConfig, run_dir: Path, identity=None) -> dict[str, Any]:
    """One run: returns the summary it also writes to `run_dir/summary.json`.

    `identity` (a run_identity.RunIdentity) gives the run's label, W&B name, tags and
    group; by default the label derived from the config and no group.
    """
    started = time.perf_counter()
    plan = check_run(cfg)
    if identity is None:
        from riskalign.reports.labels import run_label
        from riskalign.runs.identity import RunIdentity

        identity = RunIdentity(label=run_label(OmegaConf.to_container(cfg, resolve=True)),
                               group=cfg.logger.wandb.group)
    from riskalign.training.resume import find_resume_point

    resume_from = find_resume_point(cfg)  # refuses a bad target before anything loads
    lock = _claim_run_directory(resume_from.run_dir if resume_from else run_dir)
    try:
        if resume_from is not None:
            log.info("Resuming %s from step %d (%s)", resume_from.run_dir, resume_from.step,
                     resume_from.directory.name)
            _continue_log_in(resume_from.run_dir, run_dir)
            run_dir = resume_from.run_dir  # the run goes on in its own directory
        return _train(cfg, run_dir, identity, resume_from, started, plan)
    finally:
        if lock is not None:
            lock.release()


class ObjectivePlan(NamedTuple):
    """What the config asks to train, once checked."""

    online: bool  # PPO and RA-RLHF: episodes sampled during training
    kind: str  # "pairs" or "prompts": what the data gives
    objective: Any  # an offline objective, built (None online)
    settings: Any  # OnlineSettings (None offline)
    cache_reference: bool  # reference.cache in effect


def check_run(cfg: DictConfig) -> ObjectivePlan:
    """Every refusal a run makes before loading anything: the config's values and the
    objective's; also what a sweep checks for each job before the first starts."""
    resolve_learning_rate(cfg)
    check_config(cfg)
    _record_precision_that_runs(cfg)
    from riskalign import objectives  # objectives are cheap: build before anything heavy
    from riskalign.objectives.online import OnlineSettings, online_names

    objective, settings = None, None
    objective_params = OmegaConf.to_container(cfg.objective, resolve=True)
    online = cfg.objective.name in online_names()
    if online:
        settings = OnlineSettings.from_config(objective_params)
        kind = training_kind(cfg, online=True)
        if cfg.trainer.devices != 1 or cfg.trainer.get("num_nodes", 1) != 1:
            raise ConfigError(
                f"trainer.devices={cfg.trainer.devices} is invalid for objective="
                f"{cfg.objective.name}: PPO and RA-RLHF run on one process; must be 1"
            )
        accumulate = cfg.trainer.accumulate_grad_batches
        if accumulate != 1:
            raise ConfigError(
                f"trainer.accumulate_grad_batches={accumulate} is invalid for "
                f"objective={cfg.objective.name}: PPO steps once per minibatch; must be 1 "
                "(raise objective.minibatch_size instead)"
            )
    else:
        kind = training_kind(cfg)
        if kind == "prompts":  # raw text has no chosen/rejected rows: SFT trains on every row
            objective_params["rows"] = "all"
        objective = objectives.build(**objective_params)
    cache_reference = reference_cache_enabled(cfg.reference.cache, cfg.objective.name, online,
                                              None if online else objective)

    return ObjectivePlan(online, kind, objective, settings, cache_reference)


def _record_precision_that_runs(cfg: DictConfig) -> None:
    """fp16 mixed precision does not run on a CPU: Lightning runs bf16-mixed instead. The
    config says so, so that summary.json, checkpoints and W&B record what ran."""
    precision = str(cfg.trainer.precision)
    if precision not in ("16", "16-mixed") or cfg.trainer.accelerator not in ("cpu", "auto"):
        return
    import torch

    if cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available():
        log.warning("trainer.precision=%s: fp16 mixed precision does not run on a CPU; "
                    "running (and recording) bf16-mixed", precision)
        cfg.trainer.precision = "bf16-mixed"


def _claim_run_directory(run_dir: Path):
    """This process's exclusive lock on the run directory it writes (None on the other
    ranks of a distributed run, which write there with rank 0); refused in one line when
    another process holds it: two writers would mix their metrics and checkpoints."""
    from riskalign.runs.locks import is_first_process, lock_holder, lock_run_directory

    if not is_first_process():
        return None
    lock = lock_run_directory(run_dir)
    if lock is None:
        raise ConfigError(f"run directory {run_dir} is being written by {lock_holder(run_dir)}: "
                          "one process writes a run at a time; wait for it to finish or stop it")
    return lock


def _continue_log_in(run_dir: Path, opened: Path) -> None:
    """A resumed run goes on in the run it continues, but Hydra has already opened a new
    directory for this process (`.hydra/`, `train.log`). The log goes on in the continued
    run's train.log (with what this process logged so far), the new `.hydra/` is kept as
    `.hydra/resumed-<its name>/` there, and the emptied directory is removed."""
    import shutil

    if run_dir.resolve() == opened.resolve() or not _single_run():
        return  # a sweep's job directory is Hydra's bookkeeping: left as it is
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and \
                Path(handler.baseFilename).parent.resolve() == opened.resolve():
            handler.close()
            with (run_dir / "train.log").open("a") as continued:
                continued.write(Path(handler.baseFilename).read_text())
            Path(handler.baseFilename).unlink()
            handler.baseFilename = str((run_dir / "train.log").resolve())
            handler.mode = "a"  # reopened at the next record
    if (opened / ".hydra").is_dir():
        shutil.move(opened / ".hydra", run_dir / ".hydra" / f"resumed-{opened.name}")
    try:
        opened.rmdir()
    except OSError:
        log.warning("kept %s: it holds more than Hydra's files", opened)


def _single_run() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def _train(cfg: DictConfig, run_dir: Path, identity, resume_from, started: float,
           plan: ObjectivePlan) -> dict[str, Any]:
    """The run itself, in `run_dir`, which this process has claimed."""
    online, kind, objective, settings, cache_reference = plan

    # Heavy imports only once the config is known to be sound.
    import lightning
    import transformers
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from riskalign.config.keys import build_callbacks
    from riskalign.data.preference import PreferenceDataModule
    from riskalign.data.prompt_batches import PromptDataModule
    from riskalign.evaluation.alignment import EvalSettings
    from riskalign.evaluation.callback import AlignmentEvaluation, evaluation_interval
    from riskalign.evaluation.report import print_closing_table
    from riskalign.models.loading import load_policy, load_tokenizer
    from riskalign.models.references import LazyReference, load_reference
    from riskalign.modules.alignment import AlignmentModule
    from riskalign.modules.common import progress_step
    from riskalign.modules.online import OnlineRLModule
    from riskalign.recipes.sources import (
        distinct_prompts,
        ensure_world,
        eval_sizes,
        load_configured_data,
        model_source,
    )
    from riskalign.runs.artifacts import write_json_atomic
    from riskalign.training.checkpoints import PeriodicCheckpoint, StagedCheckpointIO
    from riskalign.training.guard import NumericalGuard
    from riskalign.training.loggers import (
        build_loggers,
        finish_wandb,
        lightning_lines_once,
        log_curve,
        restore_csv_rows,
    )
    from riskalign.training.progress import StepProgressBar
    from riskalign.training.random_state import RandomState
    from riskalign.training.resume import saved_metrics_rows
    from riskalign.training.step_timer import StepTimer
    from riskalign.training.strategies import build_strategy

    transformers.logging.set_verbosity_error()
    lightning_lines_once()  # `import lightning` added a console handler of its own
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir.mkdir(parents=True, exist_ok=True)

    world = ensure_world(cfg)
    source = model_source(cfg, world)
    from riskalign.models.limits import check_training_lengths
    check_training_lengths(cfg, source)  # its config only: before any weights load
    tokenizer = load_tokenizer(source)
    reward_model = functools.cache(lambda: instantiate(cfg.reward))  # after the data checks
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs["strategy"] = build_strategy(trainer_kwargs.get("strategy"),
                                                cfg.model.block_class)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    if online:
        # the prompts only: an online run samples its own episodes, even from a data config
        # whose source is `generated`
        splits, _ = load_configured_data(cfg, world, tokenizer)
        prompts, num_pairs = eval_sizes(cfg.eval, splits["eval"], pairs=False)
        iterations = int(trainer_kwargs["max_steps"])
        datamodule = PromptDataModule(distinct_prompts(splits["train"]), settings.batch_size,
                                      iterations, cfg.seed)
        pair_batches = None
    else:
        splits = _training_data(cfg, world, source, tokenizer, reward_model)
        datamodule = PreferenceDataModule(
            splits,
            tokenizer,
            max_length=cfg.data.max_length,
            max_prompt_length=cfg.data.max_prompt_length,
            batch_size=cfg.data.batch_size,
            eval_batch_size=cfg.data.eval_batch_size,
            num_workers=cfg.data.num_workers,
            seed=cfg.seed,
            kind=kind,
        )
        prompts, num_pairs = eval_sizes(cfg.eval, splits["eval"])
        datamodule.setup("fit")
    reward = reward_model()

    policy = load_policy(source, cfg.model)
    _warn_about_learning_rate(cfg, policy)
    if online:
        reference = load_reference(source, cfg.model, policy)
        module = OnlineRLModule(
            policy, reference, tokenizer, reward, settings, optim, iterations,
            gradient_clip_val=trainer_kwargs.pop("gradient_clip_val", None), seed=cfg.seed,
        )
        # one training step is one PPO iteration of several optimizer steps
        trainer_kwargs.update(max_steps=-1, max_epochs=1)
        eval_reference, reference_cache = reference, None
    else:
        train_reference, eval_reference, reference_cache = _references(
            cfg, source, policy, objective, datamodule, cache_reference
        )
        module = AlignmentModule(policy, train_reference, objective, optim)
        pair_batches = datamodule.eval_dataloader()  # with the cached log-probs, if any
    evaluation = AlignmentEvaluation(
        eval_reference if cfg.eval.kl else None,
        tokenizer,
        prompts,
        reward,
        EvalSettings.from_config(cfg.eval),
        pair_batches=pair_batches,
        num_pairs=num_pairs,
        every_n_steps=evaluation_interval(cfg.eval.every_n_steps, cfg.eval.num_points,
                                          int(cfg.trainer.max_steps)),
        offload_reference=isinstance(eval_reference, LazyReference),
        run_dir=run_dir,
    )
    step_timer = StepTimer()
    guard = NumericalGuard(cfg.guard.max_consecutive)
    loggers = build_loggers(cfg, run_dir, identity)
    if resume_from is not None:
        restore_csv_rows(loggers, saved_metrics_rows(resume_from))
    checkpoints = None
    if cfg.checkpoint.every_n_steps and trainer_kwargs.get("enable_checkpointing", True):
        checkpoints = PeriodicCheckpoint(run_dir, cfg.checkpoint.every_n_steps,
                                         cfg.checkpoint.keep_last,
                                         OmegaConf.to_container(cfg, resolve=True), guard)
    trainer_kwargs["enable_checkpointing"] = checkpoints is not None
    trainer = lightning.Trainer(
        **trainer_kwargs,
        default_root_dir=str(run_dir),
        logger=loggers,
        # the timer first: its batch-end hook runs before an evaluation does; Lightning
        # runs checkpoints last, after that step's evaluation
        callbacks=[step_timer, guard, evaluation, RandomState(), StepProgressBar()]
        + ([checkpoints] if checkpoints else []) + build_callbacks(cfg),
        plugins=[StagedCheckpointIO()] if checkpoints else None,
    )
    launch_environment = {name: os.environ.get(name) for name in DISTRIBUTED_ENV}
    try:
        try:
            trainer.fit(module, datamodule=datamodule,
                        ckpt_path=resume_from.state_file if resume_from else None,
                        weights_only=True)
        except (NumericalGuardError, SIGTERMException) as error:
            kept = (checkpoints.last_saved if checkpoints else None) or resume_from
            where = kept.directory if kept else "none (none written yet)"
            if isinstance(error, NumericalGuardError):
                raise NumericalGuardError(f"{error}; last good checkpoint: {where}") from None
            raise Preempted(f"SIGTERM at step {progress_step(trainer, module)}; checkpoint: "
                            f"{where}; continue with resume=auto or resume={run_dir}") from None
        if cfg.checkpoint.save_policy:
            _save_policy(trainer, module, tokenizer, run_dir / "policy")
        if not trainer.is_global_zero:
            return {"final": evaluation.curve[-1]}  # rank 0 writes the run's files
        log_curve(loggers, evaluation.curve)
        summary = {
            "objective": cfg.objective.name,
            "label": identity.label,
            "arm": identity.arm,
            "seed": cfg.seed,
            "swept": identity.swept,
            "wandb_group": identity.group,
            "run_dir": str(run_dir),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "steps": progress_step(trainer, module),
            "resumed_from": str(resume_from.directory) if resume_from else None,
            "checkpoints": checkpoints.summary() if checkpoints else None,
            "timing": step_timer.summary(),
            "reference_cache": reference_cache,
            "cuda_peak_gb": _cuda_peak_gb(),
            "reference": evaluation.curve[0],
            "final": evaluation.curve[-1],
            "curve": evaluation.curve,
            "world": str(world.root) if world else None,
            "model_source": source,
            "data_kind": kind,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        write_json_atomic(run_dir / "summary.json", summary)
    finally:
        finish_wandb(loggers)
        _leave_process_group(launch_environment)
    print_closing_table(summary["reference"], summary["final"], cfg.eval.tail_fraction)
    log.info("Run written to %s", run_dir)
    return summary


def _warn_about_learning_rate(cfg: DictConfig, policy) -> None:
    from riskalign.config.checks import training_mode
    from riskalign.modules.optimization import learning_rate_warning

    mode = training_mode(cfg)
    parameters = sum(p.numel() for p in policy.parameters())
    warning = learning_rate_warning(cfg.optim.lr, mode, parameters, cfg.model.name,
                                    OmegaConf.select(cfg, f"model.lr.{mode}"))
    if warning:
        log.warning(warning)


def _save_policy(trainer, module, tokenizer, directory: Path) -> None:
    """The trained policy and its tokenizer, written beside `directory` and renamed into
    place: a crash never leaves a half-written policy that evaluation would read."""
    import shutil

    from riskalign.runs.artifacts import (
        POLICY_MARKER,
        move_into_place,
        staging_directory,
        write_marker,
    )

    staging = staging_directory(directory)
    if trainer.is_global_zero:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.strategy.barrier("riskalign-policy-staging")
    module.save_policy(staging)  # every process: FSDP gathers the weights
    if trainer.is_global_zero:
        tokenizer.save_pretrained(staging)
        # last: evaluate, merge and model.init_from check every file against it
        write_marker(staging, POLICY_MARKER, {"step": trainer.global_step})
        move_into_place(staging, directory)


def _references(cfg: DictConfig, source: str, policy, objective, datamodule,
                cache_reference: bool):
    """(training's reference or None, the evaluation's reference, the cache's record or None)
    of an offline objective.

    With reference.cache the training reads cached log-probabilities: the reference is
    built only to fill a missing cache, and the evaluation gets one that loads at its
    first KL measurement (LoRA: the adapter-disabled policy, which costs nothing).
    """
    from riskalign.models.references import LazyReference, load_reference
    from riskalign.training.reference_cache import attach_reference_logps

    if not (cache_reference and objective.requires_reference):
        reference = load_reference(source, cfg.model, policy)
        return (reference if objective.requires_reference else None), reference, None
    cache = attach_reference_logps(
        datamodule, source, cfg.model, Path(cfg.paths.reference_cache),
        lambda: load_reference(source, cfg.model, policy), _compute_device(cfg.trainer),
    )
    return None, LazyReference(lambda: load_reference(source, cfg.model, policy)), cache


def _cuda_peak_gb() -> float | None:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def _compute_device(trainer_cfg: DictConfig):
    """Where a pass before training (the reference cache) runs: this process's GPU if the
    trainer uses one, else the CPU."""
    import torch

    if trainer_cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


# Set in this process by Lightning's DDP launcher; a later job that still saw them would
# take its processes for launched already and wait forever for peers that never start.
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _leave_process_group(environment: dict[str, str | None]) -> None:
    """End a DDP/FSDP run's process group and put back the launch variables as they were,
    so that the next job of a sweep running in this process launches its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def training_kind(cfg: DictConfig, online: bool = False) -> str:
    """What the run trains on, "pairs" or "prompts"; refused early if the objective cannot.

    Online objectives sample their own episodes: any dataset with prompts will do.
    """
    from riskalign.data.formats import format_kind

    kind = format_kind(cfg.data.format)
    name, data = cfg.objective.name, cfg.data.name
    if online and kind != "references":
        return "prompts"
    if cfg.data.source == "generated":
        if kind != "prompts":
            raise ConfigError(
                f"data.source=generated samples pairs for prompts, but data.format="
                f"{cfg.data.format} gives {kind}: use a prompt dataset (imdb, emotion, ...)"
            )
        return "pairs"
    if kind == "references":
        raise ConfigError(
            f"data={data} is an evaluation set (instructions with reference answers): "
            "use it with python -m riskalign.evaluate, not for training"
        )
    if kind == "prompts" and name != "sft":
        raise ConfigError(
            f"objective={name} needs preference pairs but data={data} gives prompts: set "
            "data.source=generated (pairs sampled from the model, scored by the reward), "
            "train objective=sft on it, or use data=local with a pairs dataset"
        )
    return kind


def _training_data(cfg: DictConfig, world, source: str, tokenizer, reward_model):
    """Train/eval splits in the standard columns, loaded (and generated) as the config says."""
    from riskalign.data.generated import ensure_generated_pairs
    from riskalign.data.loading import load_data
    from riskalign.recipes.sources import load_configured_data

    splits, _ = load_configured_data(cfg, world, tokenizer)
    if cfg.data.source != "generated":
        return splits
    pairs = ensure_generated_pairs(cfg, source, splits, tokenizer, reward_model())
    generated = {**OmegaConf.to_container(cfg.data, resolve=True), "format": "preference",
                 "subset": None, "train_split": "train", "eval_split": "test"}
    splits, _ = load_data(generated, tokenizer, path=str(pairs))
    return splits


if __name__ == "__main__":
    from riskalign.config.command_line import refuse_unknown_choices
    from riskalign.config.launch import refuse_before_launch

    refuse_unknown_choices("riskalign")  # one line and exit 2, before Hydra composes
    # keys without +, unwritable paths, and every job of a sweep checked before the first
    refuse_before_launch("riskalign", "train", check_job=check_run)
    main()
