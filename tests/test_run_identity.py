"""A run's name, tags and W&B id: what tells a sweep's job apart, and what survives a resume;
and the result files, strict JSON whatever was not measured."""

from __future__ import annotations

from omegaconf import OmegaConf

from riskalign.runs.identity import RunIdentity, job_values, run_tags, swept_keys, wandb_run_id


def test_swept_keys_are_those_with_more_than_one_value_on_the_line_or_in_the_sweeper():
    argv = ["-m", "experiment=smollm2_sentiment", "+arm=dpo,erm5", "objective.beta=0.1,0.5",
            "trainer.max_steps=16", "--config-name", "train"]
    assert swept_keys(argv, {"seed": "range(3)", "eval.num_prompts": "32"}) == [
        "arm", "objective.beta", "seed"]
    assert swept_keys([], None) == []


def test_a_job_is_named_by_its_label_the_swept_values_and_its_seed():
    values = job_values(["+arm=erm5", "objective.beta=0.1", "seed=2", "trainer.max_steps=16"])
    assert values == {"arm": "erm5", "objective.beta": "0.1", "seed": "2",
                      "trainer.max_steps": "16"}
    identity = RunIdentity(label="radpo · ERM μ=5", arm="erm5",
                           swept={key: values[key] for key in ("arm", "objective.beta", "seed")})
    # the arm is in the label, the seed at the end; the constant max_steps nowhere
    assert identity.name(seed=2) == "radpo · ERM μ=5 beta=0.1 seed=2"
    assert RunIdentity(label="dpo").name(seed=0) == "dpo seed=0"


def test_tags_name_objective_model_data_and_arm_once_each():
    cfg = OmegaConf.create({"objective": {"name": "radpo"}, "model": {"name": "tiny"},
                            "data": {"name": "reviews"}})
    tags = run_tags(cfg, RunIdentity(label="x", arm="erm5"), extra=["mine", "model:tiny"])
    assert tags == ["objective:radpo", "model:tiny", "data:reviews", "arm:erm5", "mine"]
    assert "arm:" not in " ".join(run_tags(cfg, RunIdentity(label="x")))


def test_the_wandb_run_id_is_kept_in_the_run_directory(tmp_path):
    first = wandb_run_id(tmp_path)
    assert len(first) == 8 and first.isalnum()
    assert wandb_run_id(tmp_path) == first, "a second attempt (a resume) must reuse the id"
    other = tmp_path / "other"
    other.mkdir()
    assert wandb_run_id(other) != first, "another run gets its own id"


def test_result_files_are_strict_json_with_null_for_what_was_not_measured(tmp_path):
    import json
    import math

    from riskalign.runs.artifacts import write_json_atomic

    write_json_atomic(tmp_path / "summary.json",
                      {"final": {"kl": math.nan, "reward": 0.5, "tail": [-math.inf, 1.0]},
                       "steps": (1, 2)})
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(
        ValueError(f"{name} is not JSON")))
    assert strict == {"final": {"kl": None, "reward": 0.5, "tail": [None, 1.0]},
                      "steps": [1, 2]}
