"""The bad-input table (issue #9): each bad value is refused before any model loads, with
one line on stderr naming the key, the value and what is allowed, and exit code 2.

Each case runs `python -m riskalign.train <overrides> debug=smoke` in this process (the
`refused` fixture of tests/conftest.py: `check_here`, the module's `__main__` block under
runpy with sys.argv set, so the command-line check, Hydra and the entry point's error
handling are the ones a user runs; a subprocess costs ~5 s;
`test_in_process_runs_print_what_the_command_line_prints` shows both print the same).
Loading a causal LM or a reward classifier fails the case.

Elsewhere, in tests/test_end_to_end.py: case 22, W&B `logger.wandb.mode=online` without
credentials, falls back to offline and the run goes on
(test_wandb_online_without_credentials_falls_back_to_offline). The real command line's
refusal (exit 2, one line): test_in_process_runs_print_what_the_command_line_prints here,
test_no_policy_is_refused in tests/test_evaluate_run_config.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.conftest import assert_refused, check_here, run_train
from tests.tiny_models import make_tiny_classifier

OBJECTIVES = "cdpo, cvar_dpo, dpo, drdpo, ipo, kldpo, ppo, ra_rlhf, radpo, rdpo, sft, simpo"


# ----- the composed config alone ---------------------------------------------------------

CONFIG_CASES = [
    pytest.param(["objective=nonexistent"],
                 [f"objective=nonexistent is not one of: {OBJECTIVES}, slic, tdpo, wdpo"],
                 id="01-unknown-objective"),
    pytest.param(["-m", "objective=dpo,nonexistent"],
                 [f"objective=nonexistent is not one of: {OBJECTIVES}"],
                 id="01b-unknown-objective-in-a-sweep"),
    pytest.param(["model=nonexistent"],
                 ["model=nonexistent is not one of: gpt2, gpt2-large,", "smollm2-135m, tiny"],
                 id="02-unknown-model"),
    pytest.param(["data=nonexistent"],
                 ["data=nonexistent is not one of: alpacaeval,", "local, movie_openings, reviews"],
                 id="03-unknown-data"),
    pytest.param(["reward=nonexistent"],
                 ["reward=nonexistent is not one of: distilbert-imdb,", "toxic-bert, vader"],
                 id="04-unknown-reward"),
    pytest.param(["hydra/launcher=nonexistent"],
                 ["hydra/launcher=nonexistent is not one of: basic, local, slurm"],
                 id="04b-unknown-launcher"),
    pytest.param(["objective.beta=0"], ["objective.beta=0 is out of range: must be > 0"],
                 id="05-beta-zero"),
    pytest.param(["objective=radpo", "objective.beta=-1"],
                 ["objective.beta=-1 is out of range: must be > 0"], id="05b-beta-negative"),
    pytest.param(["objective=radpo", "objective.drift.tail_mass=0"],
                 ["objective.drift.tail_mass=0 is out of range: must be in (0, 1]"],
                 id="06-tail-mass-zero"),
    pytest.param(["objective=radpo", "objective.drift.tail_mass=1.5"],
                 ["objective.drift.tail_mass=1.5 is out of range: must be in (0, 1]"],
                 id="07-tail-mass-above-one"),
    pytest.param(["objective=radpo", "objective.drift.measure=erm", "objective.drift.mu=0"],
                 ["objective.drift.mu=0 is out of range: must be > 0"], id="08-mu-zero"),
    pytest.param(["objective=cdpo", "objective.link.epsilon=0.5"],
                 ["objective.link.epsilon=0.5 is out of range: must be in [0, 0.5)"],
                 id="09-epsilon-half"),
    pytest.param(["objective=kldpo", "objective.reducer.tau=0"],
                 ["objective.reducer.tau=0 is out of range: must be > 0"], id="10-tau-zero"),
    pytest.param(["objective=wdpo", "objective.penalty.rho0=-0.1"],
                 ["objective.penalty.rho0=-0.1 is out of range: must be >= 0"],
                 id="11-rho0-negative"),
    pytest.param(["objective=ra_rlhf", "objective.risk.alpha=0"],
                 ["objective.risk.alpha=0 is out of range: must be in (0, 1]"],
                 id="12-alpha-zero"),
    pytest.param(["objective=ra_rlhf", "objective.risk.alpha=1.5"],
                 ["objective.risk.alpha=1.5 is out of range: must be in (0, 1]"],
                 id="12b-alpha-above-one"),
    pytest.param(["data.max_length=16", "data.max_prompt_length=16"],
                 ["data.max_length=16 must be greater than data.max_prompt_length=16"],
                 id="13-max-length-not-above-max-prompt-length"),
    pytest.param(["data.batch_size=0"], ["data.batch_size=0 is out of range: must be >= 1"],
                 id="14-batch-size-zero"),
    pytest.param(["model.name_or_path=/nonexistent/model"],
                 ["model.name_or_path='/nonexistent/model' does not exist: must be an existing "
                  "path or a hub ID"], id="15-model-path-missing"),
    pytest.param(["data=local", "data.path=/nonexistent"],
                 ["data.path='/nonexistent' does not exist: must be an existing path or a hub ID"],
                 id="16-data-path-missing"),
    pytest.param(["data=local"],
                 ["data.path is not set (data=local): must be a hub ID, a data file or a "
                  "dataset directory"], id="16b-data-path-not-set"),
    pytest.param(["reward=hf_classifier"],
                 ["reward.name_or_path is not set: must be a classifier's hub ID or directory"],
                 id="20b-reward-path-not-set"),
    pytest.param(["trainer.accumulate_grad_batches=0"],
                 ["trainer.accumulate_grad_batches=0 is out of range: must be >= 1"],
                 id="23-accumulate-grad-batches-zero"),
    pytest.param(["optim.lr=0"], ["optim.lr=0 is out of range: must be > 0"], id="24-lr-zero"),
    pytest.param(["guard.max_consecutive=0"],
                 ["guard.max_consecutive=0 is out of range: must be >= 1"],
                 id="25-guard-max-consecutive-zero"),
    pytest.param(["eval.tail_fraction=0"],
                 ["eval.tail_fraction=0 is out of range: must be in (0, 1]"],
                 id="26-eval-tail-fraction-zero"),
    pytest.param(["logger.wandb.mode=sometimes"],
                 ["logger.wandb.mode='sometimes' is not one of: online, offline, disabled"],
                 id="27-wandb-mode-unknown"),
    pytest.param(["trainer.max_steps=0"], ["trainer.max_steps=0 is out of range: must be >= 1"],
                 id="28-max-steps-zero"),
    pytest.param(["trainer.precision=13-true"],
                 ["trainer.precision='13-true' is not one of: 32-true, bf16-mixed"],
                 id="29-precision-unknown"),
    pytest.param(["optim.betas=[2,0.9]"],
                 ["optim.betas[0]=2 is out of range: must be in [0, 1)"], id="30-adam-beta"),
    pytest.param(["optim.weight_decay=-1"],
                 ["optim.weight_decay=-1 is out of range: must be >= 0"],
                 id="31-weight-decay-negative"),
    pytest.param(["model.attn_implementation=magic"],
                 ["model.attn_implementation='magic' is not one of: eager, sdpa"],
                 id="32-attention-unknown"),
    pytest.param(["seed=-1"], ["seed=-1 is out of range: must be an integer in [0, 4294967295]"],
                 id="33-seed-negative"),
    pytest.param(["data.num_workers=-1"],
                 ["data.num_workers=-1 is out of range: must be >= 0"], id="34-workers-negative"),
    pytest.param(["trainer.devices=0"],
                 ["trainer.devices=0 is invalid: must be an integer >= 1, -1 (all), auto"],
                 id="35-devices-zero"),
    pytest.param(["trainer.gradient_clip_val=-1"],
                 ["trainer.gradient_clip_val=-1 is out of range: must be >= 0 or null"],
                 id="36-clip-negative"),
    pytest.param(["checkpoint.every_n_steps=0"],
                 ["checkpoint.every_n_steps=0 is out of range: must be >= 1 or null"],
                 id="37-checkpoint-every-zero"),
    pytest.param(["resume=/nonexistent/run"],
                 ["resume='/nonexistent/run' is not a directory: give a run directory, one of "
                  "its checkpoints/step-N, or auto"], id="38-resume-not-a-directory"),
    # unknown keys, added with `+`, are refused in every group a run reads (issue 15)
    pytest.param(["+optim.schedule=cosine"],
                 ["optim.schedule='cosine' is not a known key: allowed keys are betas, lr, "
                  "optimizer, scheduler, warmup_ratio, warmup_steps, weight_decay"],
                 id="39-unknown-optim-key"),
    pytest.param(["+eval.num_promts=8"],
                 ["eval.num_promts=8 is not a known key: allowed keys are batch_size,"],
                 id="40-unknown-eval-key"),
    pytest.param(["+data.max_len=8"],
                 ["data.max_len=8 is not a known key: allowed keys are batch_size,"],
                 id="41-unknown-data-key"),
    pytest.param(["+model.lora.rnak=8"],
                 ["model.lora.rnak=8 is not a known key: allowed keys are alpha, dropout, "
                  "enabled, rank, target_modules"], id="42-unknown-model-key"),
    pytest.param(["+trainer.max_step=8"],
                 ["trainer.max_step=8 is not a known key: allowed keys are accelerator,"],
                 id="43-unknown-trainer-key"),
    pytest.param(["+trainer.callbacks=[]"],
                 ["trainer.callbacks cannot be set: add callbacks with the callbacks group "
                  "(+callbacks.NAME._target_=...)"], id="44-trainer-callbacks"),
    pytest.param(["+callbacks.stop=3"],
                 ["callbacks.stop=3 is not a callback: must be a block with a _target_"],
                 id="45-callback-not-a-block"),
    pytest.param(["+callbacks.stop._target_=collections.OrderedDict"],
                 ["callbacks.stop._target_='collections.OrderedDict' is not a Lightning "
                  "Callback class"], id="46-callback-not-a-callback"),
    pytest.param(["+callbacks.stop._target_=no_such_module.Stop"],
                 ["callbacks.stop._target_='no_such_module.Stop' cannot be imported "
                  "(ModuleNotFoundError: No module named 'no_such_module')"],
                 id="47-callback-not-importable"),
    pytest.param(["optim.scheduler=exponential"],
                 ["optim.scheduler='exponential' is not one of: constant, linear, cosine"],
                 id="48-unknown-scheduler"),
    pytest.param(["optim.optimizer=sgd"],
                 ["optim.optimizer='sgd' is not one of: adamw, adafactor"],
                 id="49-unknown-optimizer"),
    pytest.param(["optim.warmup_ratio=1.5"],
                 ["optim.warmup_ratio=1.5 is out of range: must be in [0, 1) or null"],
                 id="50-warmup-ratio"),
    pytest.param(["~model.lr"],
                 ["optim.lr=null needs model.lr.full (model=tiny has none): set optim.lr"],
                 id="51-no-learning-rate"),
    pytest.param(["model.lr.full=0"], ["model.lr.full=0 is out of range: must be > 0"],
                 id="51b-model-rate-zero"),
    pytest.param(["data=local", "data.path=README.md", "data.eval_fraction=1"],
                 ["data.eval_fraction=1 is out of range: must be in (0, 1)"],
                 id="52-eval-fraction"),
    pytest.param(["model.disable_dropout=sometimes"],
                 ["model.disable_dropout='sometimes' is not a boolean"], id="53-dropout-flag"),
    pytest.param(["checkpoint.save_policy=2"],
                 ["checkpoint.save_policy=2 is not a boolean"], id="54-save-policy-flag"),
    pytest.param(["+arm=nonexistent"], ["arm=nonexistent is not one of: cvar05"],
                 id="55-unknown-arm"),
    pytest.param(["reference.cache=maybe"],
                 ["reference.cache='maybe' is not allowed: must be true, false or auto"],
                 id="56-reference-cache-setting"),
    pytest.param(["eval.num_points=1"], ["eval.num_points=1 is out of range: must be >= 2"],
                 id="57-eval-points"),
]


@pytest.mark.parametrize(("overrides", "fragments"), CONFIG_CASES)
def test_bad_config_value_is_refused(refused, overrides, fragments):
    refused(overrides, *fragments)


# ----- cases that read data or a classifier ----------------------------------------------


def _local_pairs(smoke_world, path: Path, edit) -> list[str]:
    """The smoke world's pairs, train split changed by `edit`, saved as a data=local dataset;
    the overrides that train on it with the world's model."""
    _, world = smoke_world
    splits = load_from_disk(str(world.dataset_dir))
    splits["train"] = edit(splits["train"])
    splits.save_to_disk(str(path))
    return ["data=local", f"data.path={path}", f"model.name_or_path={world.model_dir}",
            "data.max_length=64", "data.max_prompt_length=16"]  # the world model's 64 positions


def test_17_dataset_without_rejected_column_is_refused(refused, smoke_world, tmp_path):
    overrides = _local_pairs(smoke_world, tmp_path / "pairs",
                             lambda split: split.remove_columns("rejected"))
    refused(overrides, "data.format='preference' needs column(s) rejected in split 'train' "
            "(has: prompt, chosen, chosen_score, rejected_score)", f"data.path='{tmp_path}")


def _set(column: str, rows: range, value=None):
    """An edit of a split: `column` of `rows` set to `value` (None: the row's rejected)."""
    def edit(split):
        return split.map(lambda row, index: {column: row["rejected"] if value is None else value}
                         if index in rows else {}, with_indices=True)
    return edit


def test_18_record_with_empty_chosen_is_refused(refused, smoke_world, tmp_path):
    overrides = _local_pairs(smoke_world, tmp_path / "pairs", _set("chosen", range(2, 3), ""))
    refused(overrides, "data: 1 bad record(s) in split 'train': #2 empty chosen "
            "(set data.on_bad_record=drop to drop them)", f"data.path='{tmp_path}")


def test_19_chosen_identical_to_rejected_is_counted_and_the_run_goes_on(train_here, smoke_world,
                                                                         tmp_path):
    overrides = _local_pairs(smoke_world, tmp_path / "pairs", _set("chosen", range(3)))
    result = train_here(*overrides, "trainer.max_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    warning = ("data: 3 pair(s) with chosen == rejected kept (train: 3, eval: 0): "
               "they carry no preference")
    assert log.count(warning) == 1, log[-3000:]


def test_20_reward_label_index_out_of_range_is_refused(refused, tmp_path):
    classifier = make_tiny_classifier(tmp_path / "classifier")
    refused(["reward=hf_classifier", f"reward.name_or_path={classifier}",
             "+reward.label_weights.5=1.0"],
            "reward.label_weights: label 5 is out of range: the classifier at "
            f"'{classifier}' has 2 labels (0: NEGATIVE, 1: POSITIVE)")


# Case 21, more eval prompts than the held-out split has, is no longer refused: the sizes are
# capped with one warning (tests/test_run_options.py, test_small_dataset_runs_with_...).


# ----- the in-process runs are the command line ------------------------------------------


@pytest.mark.parametrize(("module", "argv"), [
    ("riskalign.train", ["data.batch_size=0", "debug=smoke"]),
    ("riskalign.pairs", ["reward=nonexistent"]),  # evaluate's: test_no_policy_is_refused
])
def test_in_process_runs_print_what_the_command_line_prints(module, argv, smoke_env):
    """The real command line exits 2 with one error line, the line check_here gives."""
    here = check_here(*argv, env=smoke_env, module=module)
    there = run_train(*argv, env=smoke_env, module=module)
    program = module.replace(".train", "")
    assert assert_refused(here, program=program) == assert_refused(there, program=program)


@pytest.mark.parametrize("entry_point", ["evaluate", "pairs"])
def test_the_other_entry_points_refuse_unknown_options_alike(entry_point):
    result = check_here("reward=nonexistent", module=f"riskalign.{entry_point}")
    assert result.returncode == 2
    assert result.stderr.startswith(f"riskalign.{entry_point}: error: reward=nonexistent is "
                                    "not one of: distilbert-imdb,")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("entry_point", ["evaluate", "pairs"])
def test_the_other_entry_points_check_the_keys_they_share_with_training(
        entry_point, smoke_env, monkeypatch):
    monkeypatch.setattr("riskalign.models.loading.load_causal_lm",
                        lambda *args, **kwargs: pytest.fail("a model loaded"))
    policy = ["policy=."] if entry_point == "evaluate" else []
    result = check_here("debug=smoke", *policy, "model.dtype=float13", env=smoke_env,
                        module=f"riskalign.{entry_point}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == (f"riskalign.{entry_point}: error: model.dtype='float13' is not one "
                             "of: float32, bfloat16, float16\n")
    result = check_here("debug=smoke", *policy, "+eval.num_promts=8", env=smoke_env,
                        module=f"riskalign.{entry_point}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"riskalign.{entry_point}: error: eval.num_promts=8 is not a "
                                    "known key: allowed keys are batch_size,")
