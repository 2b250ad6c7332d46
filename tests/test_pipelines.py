"""End to end through the real entry points: generated pairs, SFT on raw text, the pairs
CLI, the evaluate CLI (win rate and alignment vs drift) and the SFT -> pairs -> align ->
frontier pipeline script, all on the pocket-size embedded world. The entry points run in
this process (`run_here`), the pipeline script as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from riskalign.config.plan import check_run
from riskalign.errors import ConfigError
from tests.conftest import REPO, compose_config, run_here
from tests.tiny_models import make_tiny_classifier

FIXTURES = REPO / "tests" / "fixtures" / "data"
SMALL_EVAL = ("eval.num_prompts=8", "eval.num_pairs=8")


@pytest.fixture
def world_prompts(smoke_world, tmp_path) -> Path:
    """The world's prompts as a text dataset (train.txt / test.txt, one prompt per line)."""
    from datasets import load_from_disk

    _, world = smoke_world
    saved = load_from_disk(str(world.dataset_dir))
    directory = tmp_path / "prompts"
    directory.mkdir()
    for split in ("train", "test"):
        prompts = dict.fromkeys(saved[split]["prompt"])
        (directory / f"{split}.txt").write_text("\n".join(prompts) + "\n")
    return directory


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_generated_pairs_train_then_are_reused(smoke_world, smoke_env, world_prompts, tmp_path):
    _, world = smoke_world
    overrides = ("debug=smoke", "data=movie_openings", f"data.path={world_prompts}",
                 f"model.name_or_path={world.model_dir}", "data.generate.max_new_tokens=10",
                 "data.generate.shard_size=16", *SMALL_EVAL)
    first = run_here(*overrides, f"hydra.run.dir={tmp_path}/first", env=smoke_env)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = _summary(tmp_path / "first")
    assert summary["data_kind"] == "pairs" and summary["steps"] == 4
    cached = list((Path(smoke_env["RISKALIGN_CACHE_DIR"]) / "pairs").glob("movie_openings-*"))
    assert len(cached) == 1 and (cached[0] / "dataset" / "pairs.json").is_file()

    second = run_here(*overrides, f"hydra.run.dir={tmp_path}/second", env=smoke_env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Generated pairs: reusing" in second.stdout + second.stderr
    assert _summary(tmp_path / "second")["final"] == summary["final"], "same pairs, same run"


def test_sft_trains_on_raw_text_and_saves_a_checkpoint(smoke_world, smoke_env, world_prompts,
                                                      tmp_path):
    _, world = smoke_world
    result = run_here("debug=smoke", "objective=sft", "data=movie_openings", "data.source=path",
                      f"data.path={world_prompts}", f"model.name_or_path={world.model_dir}",
                      *SMALL_EVAL, f"hydra.run.dir={tmp_path}/sft", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(tmp_path / "sft")
    assert summary["data_kind"] == "prompts"
    assert summary["config"]["objective"]["rows"] == "chosen", "the config is left as written"
    assert (tmp_path / "sft" / "policy" / "config.json").is_file()


def test_a_prompt_dataset_with_a_pair_objective_is_refused():
    # model=gpt2 cannot be fetched here: the refusal comes from the config, before any load
    cfg = compose_config("model=gpt2", "data=imdb", f"data.path={FIXTURES / 'imdb'}",
                         "objective=dpo")
    with pytest.raises(ConfigError, match="objective=dpo needs preference pairs but data=imdb "
                                          "gives prompts"):
        check_run(cfg)


def test_an_evaluation_set_cannot_train():
    cfg = compose_config("model=gpt2", "data=alpacaeval", f"data.path={FIXTURES / 'alpaca_eval'}")
    with pytest.raises(ConfigError, match="data=alpacaeval is an evaluation set"):
        check_run(cfg)


def test_evaluate_gives_a_win_rate_against_reference_answers(smoke_world, smoke_env, tmp_path):
    _, world = smoke_world
    classifier = make_tiny_classifier(tmp_path / "classifier")
    result = run_here(
        "debug=smoke", f"policy={world.model_dir}", "data=alpacaeval",
        f"data.path={FIXTURES / 'alpaca_eval'}", "reward=hf_classifier",
        f"reward.name_or_path={classifier}", "eval.num_prompts=3",
        # the world model has 64 positions: AlpacaEval's 1024-token prompts would not fit
        "data.max_prompt_length=32", f"hydra.run.dir={tmp_path}/eval", env=smoke_env,
        module="riskalign.evaluate",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").open()]
    assert evaluation["kind"] == "references" and evaluation["num_prompts"] == len(samples) == 3
    assert evaluation["win_rate"] == pytest.approx(sum(s["win"] for s in samples) / 3)


def test_evaluate_the_reference_itself_gives_zero_kl(smoke_world, smoke_env, tmp_path):
    _, world = smoke_world
    result = run_here("debug=smoke", f"policy={world.model_dir}", "data=reviews",
                      "reward=vader", f"hydra.run.dir={tmp_path}/eval", env=smoke_env,
                      module="riskalign.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["kl"] == pytest.approx(0.0, abs=1e-6)
    assert -1.0 <= evaluation["reward_tail"] <= evaluation["reward_mean"] <= 1.0


def test_world_pipeline_runs_sft_pairs_align_and_frontier(smoke_env, tmp_path):
    out = tmp_path / "pipeline"
    result = subprocess.run(
        ["bash", str(REPO / "experiments" / "pipelines" / "world_sft_pairs_align.sh")],
        cwd=REPO, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
        env={**os.environ, **smoke_env, "PY": sys.executable, "OUT": str(out),
             "EXTRA": "debug=smoke eval.num_prompts=8 eval.num_pairs=8"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "sft" / "policy" / "config.json").is_file()
    assert (out / "pairs" / "dataset" / "pairs.json").is_file()
    runs = sorted(out.glob("align/*/summary.json"))
    assert [json.loads(path.read_text())["objective"] for path in runs] == ["dpo", "radpo"]
    for path in runs:
        assert json.loads(path.read_text())["model_source"] == str(out / "sft" / "policy")
    assert (out / "align" / "frontier.csv").is_file()
