"""The fault table (issue #17): the faults a user can meet and what riskalign does.

The table itself is tests/FAULTS.md (one row per fault, naming its test here or in another
file); docs/reliability.md's "The fault table" repeats it word for word, which the last test
checks.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from riskalign.runs.artifacts import artifact_problem, build_atomically, content_digest, file_sha256
from riskalign.runs.locks import try_lock
from tests.conftest import REPO, assert_refused, check_here
from tests.test_pairs import world_model  # noqa: F401  (a fixture)

RUN = ("trainer.max_steps=8", "checkpoint.every_n_steps=4", "eval.every_n_steps=4")


def _flip_a_byte(path: Path, offset: int = 100) -> None:
    """Same size, other bytes: only a hash tells."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ----- 3: one writer per run directory -----------------------------------------------------


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run directory's lock until it is killed."""
    code = ("import sys, time; from pathlib import Path; "
            "from riskalign.runs.locks import lock_run_directory; "
            "lock = lock_run_directory(Path(sys.argv[1])); print('held', flush=True); "
            "time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_03_a_second_writer_is_refused_resume_auto_passes_over_and_resume_merges_hydra_files(
        train_here, smoke_env):
    root = Path(smoke_env["RISKALIGN_OUTPUT_ROOT"])
    run_dir = root / "runs" / "day" / "first"
    first = train_here(*RUN, f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir / "summary.json").unlink()  # unfinished, as if killed after its last checkpoint
    metrics = (run_dir / "metrics.csv").read_bytes()

    holder = _hold_lock(run_dir)
    try:
        line = assert_refused(train_here(*RUN, f"resume={run_dir}"))
        assert line == (f"riskalign: error: resume='{run_dir}' is being written by pid "
                        f"{holder.pid} on {os.uname().nodename}: one process writes a run at "
                        "a time; wait for it to finish or stop it")
        second = train_here(*RUN, "resume=auto")
        assert second.returncode == 0, second.stderr[-3000:]
        assert "resume=auto: passing over" in second.stdout + second.stderr
        assert not (run_dir / "summary.json").exists()  # the held run was left alone
        assert (run_dir / "metrics.csv").read_bytes() == metrics
    finally:
        holder.kill()
        holder.wait()

    runs_before = set(root.glob("runs/*/*"))
    third = train_here(*RUN, "resume=auto")  # the holder is gone: the run is resumed
    assert third.returncode == 0, third.stderr[-3000:]
    assert (run_dir / "summary.json").is_file()
    # 9g: no second directory holding the resumed half of the log
    assert set(root.glob("runs/*/*")) == runs_before
    assert "Resuming" in (run_dir / "train.log").read_text()
    assert len(list((run_dir / ".hydra").glob("resumed-*/config.yaml"))) == 1


# ----- 4: pairs keyed by what makes them ---------------------------------------------------


def test_04_pairs_rerun_with_other_settings_is_refused_and_never_mixed(world_model, tmp_path):
    from riskalign.data.pair_settings import PairSettings
    from riskalign.errors import ConfigError
    from riskalign.recipes.pair_generation import generate_pairs
    from tests.test_pairs import PROMPTS, FailingAfter, LengthReward

    model, tokenizer = world_model
    settings = PairSettings(samples_per_prompt=4, max_new_tokens=4, shard_size=2, seed=3)
    with pytest.raises(KeyboardInterrupt):  # interrupted after one shard
        generate_pairs(model, tokenizer, PROMPTS, FailingAfter(1), settings, tmp_path / "p")
    shards = sorted((tmp_path / "p" / "shards").rglob("*.json"))
    other = PairSettings(samples_per_prompt=3, max_new_tokens=4, shard_size=2, seed=3)
    with pytest.raises(ConfigError) as refusal:
        generate_pairs(model, tokenizer, PROMPTS, LengthReward(), other, tmp_path / "p")
    assert str(refusal.value) == (
        f"pairs output {tmp_path / 'p'} holds pairs made otherwise (settings."
        "samples_per_prompt (there: 4, now: 3)): give another output directory, or delete it "
        "to start again")
    assert sorted((tmp_path / "p" / "shards").rglob("*.json")) == shards  # nothing mixed in
    # other prompts (another dataset) are refused the same way, finished or not
    generate_pairs(model, tokenizer, PROMPTS, LengthReward(), settings, tmp_path / "p")
    fewer = {split: prompts[:-1] for split, prompts in PROMPTS.items()}
    with pytest.raises(ConfigError, match=r"\(prompts\.test \(there: '[0-9a-f]{64}', now"):
        generate_pairs(model, tokenizer, fewer, LengthReward(), settings, tmp_path / "p")


def test_04_generated_pairs_are_keyed_by_content_not_by_where_files_lie(smoke_world, tmp_path):
    import shutil

    from riskalign.recipes.generated_pairs import pair_sources
    from tests.conftest import compose_config

    _, world = smoke_world
    for name in ("a", "b"):  # two clones: the same model at two paths
        shutil.copytree(world.model_dir, tmp_path / name)
    cfg = compose_config("debug=smoke")
    assert pair_sources(cfg, str(tmp_path / "a")) == pair_sources(cfg, str(tmp_path / "b"))
    _flip_a_byte(tmp_path / "b" / "model.safetensors")
    assert pair_sources(cfg, str(tmp_path / "a")) != pair_sources(cfg, str(tmp_path / "b"))


# ----- 5: every artifact verified by SHA-256 -----------------------------------------------


def test_05_same_size_corruption_of_a_cached_artifact_is_caught_and_rebuilt(tmp_path, caplog):
    builds = []

    def build(staging: Path) -> dict:
        builds.append(1)
        (staging / "weights.bin").write_bytes(bytes(range(256)) * 8)
        return {"what": "test"}

    artifact = build_atomically(tmp_path / "artifact", "complete.json", build)
    original = file_sha256(artifact / "weights.bin")
    _flip_a_byte(artifact / "weights.bin")
    assert artifact_problem(artifact, "complete.json") == (
        "weights.bin does not match the SHA-256 complete.json records (changed on disk)")
    build_atomically(tmp_path / "artifact", "complete.json", build)
    assert len(builds) == 2 and file_sha256(artifact / "weights.bin") == original
    assert "Replacing" in caplog.text and "does not match the SHA-256" in caplog.text
    assert artifact_problem(artifact, "complete.json") is None


def test_05_a_world_with_a_flipped_weight_byte_is_rebuilt(smoke_world, tmp_path):
    import shutil

    from riskalign.worlds.reviews import COMPLETE_MARKER, ensure_reviews_world
    from tests.conftest import compose_config

    cache, world = smoke_world
    copy = tmp_path / "cache"
    shutil.copytree(cache / "worlds", copy / "worlds")
    root = copy / "worlds" / world.root.name
    weights = root / "model" / "model.safetensors"
    original = file_sha256(weights)
    _flip_a_byte(weights, offset=weights.stat().st_size // 2)
    assert "model/model.safetensors does not match" in artifact_problem(root, COMPLETE_MARKER)
    config = compose_config("debug=smoke").data.world
    from omegaconf import OmegaConf

    ensure_reviews_world(OmegaConf.to_container(config, resolve=True), copy)
    assert file_sha256(weights) == original


def test_05b_a_damaged_policy_is_refused_by_evaluate_merge_and_init_from(train_here, smoke_env,
                                                                         tmp_path):
    run_dir = tmp_path / "run"
    result = train_here("trainer.max_steps=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    policy = run_dir / "policy"
    assert artifact_problem(policy, "complete.json") is None  # written with its marker
    _flip_a_byte(policy / "model.safetensors")
    damage = ("is damaged: model.safetensors does not match the SHA-256 complete.json records "
              "(changed on disk); retrain it or restore the directory from a copy")

    evaluated = check_here(f"policy={policy}", f"hydra.run.dir={tmp_path / 'eval'}",
                           module="riskalign.evaluate")
    assert assert_refused(evaluated, program="riskalign.evaluate") == (
        f"riskalign.evaluate: error: policy='{policy}' {damage}")
    trained = train_here("trainer.max_steps=1", f"model.init_from={policy}")
    assert assert_refused(trained) == (
        f"riskalign: error: model.init_from='{policy}' {damage}")

    from riskalign.errors import ConfigError
    from riskalign.models.lora import merge_adapter

    (policy / "adapter_config.json").write_text("{}")  # reaches the check as an adapter would
    with pytest.raises(ConfigError, match="adapter='.*' is damaged: "):
        merge_adapter(policy, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_05b_a_damaged_merge_is_refused_and_one_from_before_markers_read(tmp_path, caplog):
    from riskalign.errors import ConfigError
    from riskalign.runs.artifacts import check_policy, write_marker

    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "model.safetensors").write_bytes(bytes(range(256)))
    write_marker(merged, "merged.json", {"adapter": "a"})
    check_policy(merged, "model.name_or_path")
    _flip_a_byte(merged / "model.safetensors")
    with pytest.raises(ConfigError, match="model.name_or_path='.*' is damaged: model.safetensors "
                                          "does not match the SHA-256 merged.json records"):
        check_policy(merged, "model.name_or_path")
    (merged / "merged.json").write_text(json.dumps({"_files": {"model.safetensors": 256}}))
    check_policy(merged, "model.name_or_path")  # sizes only: an older riskalign's merge
    assert "is not verified: its merged.json records no SHA-256" in caplog.text


# ----- 8: resource faults, one line naming the path and the cause --------------------------


def test_08_disk_full_while_checkpointing_is_one_line_naming_the_file(train_here, smoke_env,
                                                                       tmp_path, monkeypatch):
    def full(obj, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("riskalign.training.checkpoints.torch.save", full)
    run_dir = tmp_path / "run"
    line = assert_refused(train_here(*RUN, f"hydra.run.dir={run_dir}"), exit_code=1)
    state = run_dir / "checkpoints" / ".partial-step-00000004" / "state.ckpt"
    assert line == (f"riskalign: error: {state}: no space left on the device (No space left "
                    "on device)")


def test_08_a_name_too_long_and_a_file_in_the_way_are_refused_before_anything_runs(
        refused, tmp_path):
    long_name = "x" * 300
    line = refused([f"paths.output_root={tmp_path / long_name}"])
    assert line == (f"riskalign: error: paths.output_root='{tmp_path / long_name}' cannot be "
                    f"written: the name {'x' * 24}... is 300 bytes, over the file system's "
                    "limit of 255")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = refused([f"paths.cache_dir={blocker / 'cache'}"])
    assert line == (f"riskalign: error: paths.cache_dir='{blocker / 'cache'}' cannot be "
                    f"written: {blocker} is a file, not a directory")


def test_08_a_read_only_output_directory_is_refused_before_anything_runs(refused, tmp_path,
                                                                          monkeypatch):
    """As root (CI's and this machine's user) a mode of 0555 does not stop a write, so the
    kernel's answer for a read-only mount is given by os.access and statvfs."""
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                            if Path(path) == read_only else real_access(path, mode, **kw))
        real_statvfs = os.statvfs

        class ReadOnly:
            def __init__(self, result):
                self.f_flag = result.f_flag | os.ST_RDONLY

        monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly(real_statvfs(path))
                            if Path(path) == read_only else real_statvfs(path))
    line = refused([f"paths.output_root={read_only / 'outputs'}"])
    reason = "the file system is read-only" if os.geteuid() == 0 else "permission denied"
    assert line == (f"riskalign: error: paths.output_root='{read_only / 'outputs'}' cannot be "
                    f"written: {read_only} is not writable ({reason})")


def test_08_resource_errors_in_the_other_entry_points_are_one_line(smoke_env, tmp_path,
                                                                    monkeypatch, capsys):
    from riskalign import frontier
    from tests.test_frontier import two_by_two_by_three

    sweep = tmp_path / "sweep"
    two_by_two_by_three(sweep)
    (sweep / "frontier.csv").mkdir()  # a directory where the report writes a file
    with pytest.raises(SystemExit) as exit_:
        frontier.main([str(sweep)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        f"riskalign.frontier: error: {sweep / 'frontier.csv'}: it is a directory, not a file "
        "(Is a directory)\n")

    for name, value in smoke_env.items():
        monkeypatch.setenv(name, value)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = check_here("debug=smoke", f"output={blocker / 'pairs'}",
                        f"hydra.run.dir={tmp_path / 'pairs-run'}", module="riskalign.pairs")
    assert assert_refused(result, program="riskalign.pairs") == (
        f"riskalign.pairs: error: output='{blocker / 'pairs'}' cannot be written: {blocker} "
        "is a file, not a directory")
    result = check_here("debug=smoke", "policy=.", f"hydra.run.dir={blocker / 'eval'}",
                        module="riskalign.evaluate")
    assert assert_refused(result, program="riskalign.evaluate") == (
        f"riskalign.evaluate: error: hydra.run.dir='{blocker / 'eval'}' cannot be written: "
        f"{blocker} is a file, not a directory")

    from riskalign import merge

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
         "target_modules": ["c_attn"], "base_model_name_or_path": str(tmp_path / "base")}))
    with pytest.raises(SystemExit) as exit_:
        merge.main([str(adapter), str(blocker / "merged")])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (f"riskalign.merge: error: {blocker}: a file is in the "
                                       "way of a directory (File exists)\n")


# ----- 9: the smaller ones -----------------------------------------------------------------


def test_09a_an_unknown_key_without_plus_is_one_line(refused):
    refused(["objective.bta=0.1"], "riskalign: error: objective.bta=0.1 is not a known key: "
            "check its spelling (a new key is added with +objective.bta=0.1)")


def test_09b_fp16_mixed_precision_on_a_cpu_runs_and_records_bf16(train_here, tmp_path):
    run_dir = tmp_path / "run"
    result = train_here("trainer.max_steps=1", "trainer.precision=16-mixed",
                        f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["trainer"]["precision"] == "bf16-mixed"
    assert "running (and recording) bf16-mixed" in result.stdout + result.stderr


def test_09c_a_bad_value_in_one_job_of_a_sweep_is_refused_before_the_first_job(smoke_env):
    result = check_here("-m", "objective.beta=0.1,-1", "debug=smoke", env=smoke_env)
    line = assert_refused(result)
    assert line == ("riskalign: error: job 1 of 2 (objective.beta=-1 debug=smoke): "
                    "objective.beta=-1 is out of range: must be > 0")
    assert not (Path(smoke_env["RISKALIGN_OUTPUT_ROOT"]) / "multirun").exists()


def test_09f_a_killed_builds_staging_directory_is_removed_by_the_next_build(tmp_path):
    abandoned = tmp_path / ".building-artifact-dead"
    abandoned.mkdir()
    (abandoned / "half.bin").write_bytes(b"half")
    live = tmp_path / ".building-artifact-live"
    live.mkdir()
    an_hour_ago = time.time() - 3600
    for directory in (abandoned, live):
        os.utime(directory, (an_hour_ago, an_hour_ago))
    holder = try_lock(live)  # a build still running holds its staging directory's lock
    try:
        build_atomically(tmp_path / "artifact", "complete.json",
                         lambda staging: (staging / "w.bin").write_bytes(b"w") and {})
        assert not abandoned.exists()
        assert live.is_dir()
        assert sorted(p.name for p in tmp_path.iterdir()) == [".building-artifact-live",
                                                              "artifact"]
    finally:
        holder.release()


def test_content_digest_ignores_where_a_directory_lies_and_its_build_markers(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "w.bin").write_bytes(b"weights")
        (tmp_path / name / "converted.json").write_text(name)  # build times differ
    assert content_digest(tmp_path / "a") == content_digest(tmp_path / "b")


# ----- the table and docs/reliability.md ---------------------------------------------------


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_the_docs_promise_what_the_fault_table_proves():
    table = _table_rows((REPO / "tests" / "FAULTS.md").read_text())
    reliability = (REPO / "docs" / "reliability.md").read_text()
    section = reliability.split("### The fault table", 1)[1].split("\n#", 1)[0]
    assert _table_rows(section) == table
    for row in table[1:]:
        file, name = row.rstrip(" |").rsplit("| ", 1)[1].split("::")
        assert f"def {name}(" in (REPO / "tests" / file).read_text(), row
