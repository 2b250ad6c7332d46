"""`python -m riskalign.evaluate policy=<run>/policy` reads the run's own config: alone it
repeats the run's final evaluation exactly, whatever the command line gives still wins, and
a policy that is not there is refused in one line.

The runs and evaluations run in this process (`run_here`); `test_no_policy_is_refused` runs
the real command line.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from riskalign.config.run_config import with_run_choices, with_run_config
from tests.conftest import CONF, assert_refused, check_here, compose_config, run_here, run_train
from tests.tiny_models import make_tiny_classifier

# what evaluate measures of the samples; the final point of a run also has pairs/* metrics
SAMPLED = ("reward_mean", "reward_tail", "reward_below_threshold", "kl")


def _sampled(point: dict) -> dict:
    return {name: point[name] for name in SAMPLED}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def evaluate(policy: Path, env: dict[str, str], tmp_path: Path, *overrides: str) -> dict:
    """`python -m riskalign.evaluate policy=<policy> *overrides`, nothing else on the command
    line (its output goes to a fresh output root's eval/<date>/<time>/); its evaluation.json."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    result = run_here(f"policy={policy}", *overrides, module="riskalign.evaluate",
                      env={**env, "RISKALIGN_OUTPUT_ROOT": str(root)})
    assert result.returncode == 0, result.stderr[-3000:]
    [written] = root.glob("eval/*/*/evaluation.json")
    return json.loads(written.read_text())


@pytest.fixture(scope="module")
def module_env(smoke_world, tmp_path_factory) -> dict[str, str]:
    cache, _ = smoke_world
    return {"RISKALIGN_CACHE_DIR": str(cache), "WANDB_SILENT": "true",
            "RISKALIGN_OUTPUT_ROOT": str(tmp_path_factory.mktemp("outputs"))}


@pytest.fixture(scope="module")
def world_run(module_env, tmp_path_factory) -> Path:
    """A finished `python -m riskalign.train debug=smoke` run directory (a checkpoint at
    step 2 for the resume test)."""
    run_dir = tmp_path_factory.mktemp("world-run")
    result = run_here("debug=smoke", "checkpoint.every_n_steps=2", f"hydra.run.dir={run_dir}",
                      env=module_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


# ----- exact reproduction ------------------------------------------------------------------


def test_a_world_run_alone_repeats_its_final_evaluation(world_run, module_env, tmp_path):
    evaluation = evaluate(world_run / "policy", module_env, tmp_path)
    assert _sampled(evaluation) == _sampled(_summary(world_run)["final"])
    assert evaluation["run_config"] == str(world_run / "summary.json")
    # the run's data and reward, not evaluate.yaml's alpacaeval and oasst-deberta
    assert evaluation["data"] == "reviews" and evaluation["kind"] == "pairs"
    assert evaluation["reward"] == {"_target_": "riskalign.rewards.vader.VaderReward"}


def test_a_local_data_run_alone_repeats_its_final_evaluation(smoke_world, smoke_env, tmp_path):
    """A single jsonl file: both hold out the same seeded 5 % of it (and cap the smoke
    config's 16 prompts to what that holds, alike)."""
    from datasets import load_from_disk

    _, world = smoke_world
    saved = load_from_disk(str(world.dataset_dir))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(
        json.dumps({column: row[column] for column in ("prompt", "chosen", "rejected")}) + "\n"
        for split in ("train", "test") for row in saved[split]))
    run_dir = tmp_path / "run"
    trained = run_here("debug=smoke", "data=local", f"data.path={pairs}",
                       f"model.name_or_path={world.model_dir}", f"hydra.run.dir={run_dir}",
                       "data.max_length=64", "data.max_prompt_length=16",
                       env=smoke_env)
    assert trained.returncode == 0, trained.stderr[-3000:]

    evaluation = evaluate(run_dir / "policy", smoke_env, tmp_path)
    assert _sampled(evaluation) == _sampled(_summary(run_dir)["final"])
    assert evaluation["config"]["data"]["path"] == str(pairs)
    assert evaluation["reference_model"] == str(world.model_dir)


def test_a_bf16_true_run_is_evaluated_in_bfloat16_as_it_was(module_env, tmp_path):
    """Lightning's bf16-true converts the module: training evaluated the policy and the
    reference it holds in bfloat16 (a float32 reference gives another KL)."""
    run_dir = tmp_path / "run"
    trained = run_here("debug=smoke", "trainer.precision=bf16-true", f"hydra.run.dir={run_dir}",
                       env=module_env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluation = evaluate(run_dir / "policy", module_env, tmp_path)
    assert (evaluation["dtype"], evaluation["reference_dtype"]) == ("bfloat16", "bfloat16")
    assert _sampled(evaluation) == _sampled(_summary(run_dir)["final"])


@pytest.mark.parametrize(("overrides", "dtypes"), [
    ((), ("bfloat16", "bfloat16")),
    (("objective=simpo",), ("bfloat16", "float32")),  # its module holds no reference
    (("reference.cache=true",), ("bfloat16", "float32")),  # the evaluation loads its own
    (("model.lora.enabled=true",), ("bfloat16", "bfloat16")),  # the adapter-disabled policy
    (("objective=ppo",), ("bfloat16", "bfloat16")),
    (("trainer.precision=bf16-mixed",), ("float32", "float32")),  # autocast in steps only
])
def test_the_dtypes_are_those_of_the_runs_own_evaluation(overrides, dtypes):
    from riskalign.evaluate import evaluated_dtypes

    cfg = compose_config("trainer.precision=bf16-true", *overrides)
    assert evaluated_dtypes(cfg) == dtypes


@pytest.mark.parametrize(("overrides", "attention"), [
    (("objective=wdpo",), "eager"),  # training switches the policy to eager for its penalty
    (("objective=dpo", "objective.penalty.name=wasserstein"), "eager"),
    (("objective=dpo",), "sdpa"),
])
def test_the_policy_attends_as_in_the_runs_own_evaluation(overrides, attention):
    from riskalign.evaluate import policy_attention

    assert policy_attention(compose_config("model.attn_implementation=sdpa", *overrides)) == \
        attention


def test_an_unfinished_run_is_read_from_its_hydra_config(world_run, module_env, tmp_path):
    """Without summary.json (a run stopped after writing policy/), .hydra/config.yaml."""
    copy = tmp_path / "unfinished"
    shutil.copytree(world_run, copy, ignore=shutil.ignore_patterns("summary.json"))
    evaluation = evaluate(copy / "policy", module_env, tmp_path)
    assert evaluation["run_config"] == str(copy / ".hydra" / "config.yaml")
    assert _sampled(evaluation) == _sampled(_summary(world_run)["final"])


def test_a_resumed_run_is_read_where_it_finished(world_run, module_env, tmp_path):
    """A resumed run finishes in the directory it continues (its own Hydra directory is
    elsewhere): its summary.json there is the config read."""
    cut = tmp_path / "cut"  # the run as a crash after step 2 would have left it
    shutil.copytree(world_run, cut, ignore=shutil.ignore_patterns(
        "summary.json", "policy", "step-00000004"))
    resumed = run_here("debug=smoke", "checkpoint.every_n_steps=2", f"resume={cut}",
                       env=module_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _summary(cut)["resumed_from"].endswith("step-00000002")

    evaluation = evaluate(cut / "policy", module_env, tmp_path)
    assert evaluation["run_config"] == str(cut / "summary.json")
    assert _sampled(evaluation) == _sampled(_summary(cut)["final"])


# ----- the command line wins ---------------------------------------------------------------


def test_the_command_line_wins_over_the_runs_config(world_run, module_env, tmp_path):
    classifier = make_tiny_classifier(tmp_path / "classifier")
    overrides = ("reward=hf_classifier", f"reward.name_or_path={classifier}",
                 "eval.num_prompts=8")
    # data.world.seed=0, the run's own value: a key of its data=reviews that evaluate.yaml's
    # default data lacks, so Hydra accepts it only when composing with the run's options
    evaluation = evaluate(world_run / "policy", module_env, tmp_path, *overrides,
                          "data.world.seed=0")
    hf_classifier = OmegaConf.load(CONF / "reward" / "hf_classifier.yaml")
    hf_classifier.name_or_path = str(classifier)
    expected = json.loads(json.dumps(OmegaConf.to_container(hf_classifier)))
    assert evaluation["reward"] == expected, "hf_classifier's block as composed, and only it"
    eval_cfg = evaluation["config"]["eval"]
    assert eval_cfg["num_prompts"] == 8 and eval_cfg["max_new_tokens"] == 12, "12: the run's"

    # the numbers of the same config spelled out for a copy of the policy outside the run
    bare = tmp_path / "bare" / "policy"
    shutil.copytree(world_run / "policy", bare)
    spelled = evaluate(bare, module_env, tmp_path, "debug=smoke", "data=reviews", *overrides)
    assert spelled["run_config"] is None
    assert _sampled(evaluation) == _sampled(spelled)
    assert evaluation["reward_mean"] != _summary(world_run)["final"]["reward_mean"]


@pytest.fixture
def recorded_run(tmp_path) -> Path:
    """A run directory as train leaves it, without training: the resolved config of
    `data.max_length=50` (no debug preset) in summary.json and its options in .hydra."""
    run_dir = tmp_path / "run"
    (run_dir / "policy").mkdir(parents=True)
    config = compose_config("data.max_length=50")
    (run_dir / "summary.json").write_text(
        json.dumps({"config": OmegaConf.to_container(config, resolve=True)}))
    choices = {"model": "tiny", "data": "reviews", "reward": "vader", "eval": "default",
               "paths": "default", "objective": "dpo", "debug": None}
    (run_dir / ".hydra").mkdir()
    OmegaConf.save({"hydra": {"runtime": {"choices": choices}}}, run_dir / ".hydra" / "hydra.yaml")
    return run_dir


def _evaluate_config(run_dir: Path, *overrides: str):
    """What evaluate's main evaluates with, for `policy=<run>/policy *overrides`."""
    argv = with_run_choices([f"policy={run_dir / 'policy'}", *overrides])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return with_run_config(compose("evaluate", overrides=argv), argv)


def test_the_runs_own_options_are_composed_beside_policy(recorded_run):
    policy = f"policy={recorded_run / 'policy'}"
    assert with_run_choices(["eval.num_prompts=8", policy, "reward=hf_classifier"]) == [
        "eval.num_prompts=8", "model=tiny", "data=reviews", "eval=default", "paths=default",
        policy, "reward=hf_classifier"]
    (recorded_run / ".hydra" / "hydra.yaml").unlink()
    assert with_run_choices([policy]) == [policy], "no record of its options: none added"


def test_naming_the_runs_own_option_keeps_the_runs_block(recorded_run):
    cfg, source = _evaluate_config(recorded_run, "data=reviews")
    assert source == recorded_run / "summary.json"
    assert cfg.data.max_length == 50, "the run's reviews, not conf/data/reviews.yaml's 64"
    cfg, _ = _evaluate_config(recorded_run, "data=local", "data.path=pairs.jsonl")
    assert cfg.data.name == "local" and cfg.data.max_length == 512 and "world" not in cfg.data


def test_a_preset_merges_into_the_run_and_values_win_over_it(recorded_run):
    cfg, _ = _evaluate_config(recorded_run, "debug=smoke", "eval.num_pairs=3")
    assert cfg.eval.num_prompts == 16 and cfg.eval.max_new_tokens == 12, "smoke's values"
    assert cfg.eval.num_pairs == 3, "the command line's value, over the preset's 16"
    assert cfg.data.max_length == 50 and cfg.data.world.corpus_size == 1500, "merged, not set"


# ----- refusals ----------------------------------------------------------------------------


def _refused(result, *fragments: str) -> str:
    """Exit 2, and stderr is one `riskalign.evaluate: error:` line holding the fragments."""
    return assert_refused(result, *fragments, program="riskalign.evaluate", only_line=True)


@pytest.mark.parametrize("where", ["nowhere", "run without it"])
def test_a_policy_that_is_not_there_is_refused(where, recorded_run, module_env, tmp_path):
    policy = (tmp_path / "nowhere" if where == "nowhere" else recorded_run) / "no-policy"
    result = check_here(f"policy={policy}", env=module_env, module="riskalign.evaluate")
    _refused(result, f"policy='{policy}' does not exist: must be an existing path or a hub ID")


def test_a_run_whose_summary_is_not_json_is_refused(tmp_path, module_env):
    (tmp_path / "run" / "policy").mkdir(parents=True)
    (tmp_path / "run" / "summary.json").write_text("{truncated")
    policy = tmp_path / "run" / "policy"
    result = check_here(f"policy={policy}", env=module_env, module="riskalign.evaluate")
    _refused(result, f"policy='{policy}': its run's {tmp_path / 'run' / 'summary.json'} is not "
             "a JSON object")


def test_no_policy_is_refused(module_env):
    """The real command line: one error line on stderr, exit 2."""
    result = run_train(env=module_env, module="riskalign.evaluate")
    _refused(result, "policy is missing: must be the trained policy's directory")
