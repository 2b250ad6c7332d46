"""Checkpoints and resume: a run killed with SIGKILL and resumed ends bit-identical to one
that was never interrupted; incomplete or corrupt checkpoints are never trusted.

The runs that are not about the process (a kill, a signal, DDP's ranks) run in this process
(`run_here`); the uninterrupted run of RUN is trained once for the module (`whole_run`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_refused, check_here, run_here, run_train

# 63 training pairs in batches of 8: 8 steps an epoch, so step 4 is mid-epoch and
# step 8 the epoch's last batch.
RUN = ("debug=smoke", "trainer.max_steps=12", "checkpoint.every_n_steps=4",
       "checkpoint.keep_last=3", "eval.every_n_steps=4", "trainer.log_every_n_steps=1")


def _start(overrides, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "riskalign.train", *overrides], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _wait_for_checkpoint(process: subprocess.Popen, root: Path, step: int) -> Path:
    """Return the run's directory as soon as its checkpoint of `step` is complete."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        markers = list(root.glob(f"runs/*/*/checkpoints/step-{step:08d}/complete.json"))
        if markers:
            return markers[0].parents[2]
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before checkpoint {step}: "
                        f"{process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no checkpoint of step {step} within 300 s")


@pytest.fixture(scope="module")
def whole_run(smoke_world, tmp_path_factory) -> Path:
    """RUN, never interrupted: its run directory (checkpoints at steps 4, 8 and 12)."""
    cache, _ = smoke_world
    full = tmp_path_factory.mktemp("whole") / "full"
    result = run_here(*RUN, f"hydra.run.dir={full}",
                      env={"RISKALIGN_CACHE_DIR": str(cache), "WANDB_SILENT": "true",
                           "RISKALIGN_OUTPUT_ROOT": str(full.parent / "outputs")})
    assert result.returncode == 0, result.stderr[-3000:]
    return full


def _kill_once_written(process: subprocess.Popen, root: Path, step: int) -> Path:
    """SIGKILL the run as soon as its checkpoint of `step` is complete; its run dir."""
    run_dir = _wait_for_checkpoint(process, root, step)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return run_dir


def test_killed_twice_and_resumed_equals_the_uninterrupted_run(whole_run, smoke_env, tmp_path):
    # a second output root, so that resume=auto cannot find the uninterrupted run
    env = {**smoke_env, "RISKALIGN_OUTPUT_ROOT": str(tmp_path / "attempts")}
    root = Path(env["RISKALIGN_OUTPUT_ROOT"])
    run_dir = _kill_once_written(_start(RUN, env), root, step=4)  # mid-epoch
    assert not (run_dir / "summary.json").exists()
    again = _kill_once_written(_start((*RUN, f"resume={run_dir}"), env), root, step=8)
    assert again == run_dir, "a resumed run goes on in the run directory it continues"
    assert not (run_dir / "summary.json").exists(), "killed after it finished: test too slow"
    last = run_here(*RUN, "resume=auto", env=env)  # from step 8: an epoch's last batch
    assert last.returncode == 0, last.stderr[-3000:]

    expected, resumed = (json.loads((d / "summary.json").read_text())
                         for d in (whole_run, run_dir))
    assert resumed["resumed_from"].endswith("step-00000008")
    assert [point["step"] for point in resumed["curve"]] == [0, 4, 8, 12]
    assert resumed["curve"] == expected["curve"]  # every number, exactly
    assert resumed["final"] == expected["final"]
    for name in ("metrics.csv", "policy/model.safetensors",
                 *(f"samples/step-{point['step']:07d}.jsonl" for point in expected["curve"])):
        assert (run_dir / name).read_bytes() == (whole_run / name).read_bytes(), name


def test_sigterm_checkpoints_the_finished_step_and_resume_equals_the_whole_run(
        whole_run, smoke_env, tmp_path):
    """SIGTERM (a preemption's warning): Lightning finishes the step; the run checkpoints
    it, whatever the checkpoint cadence, and exits 143. Evaluations (every 4) and the
    checkpoint then fall on different steps."""
    env = {**smoke_env, "RISKALIGN_OUTPUT_ROOT": str(tmp_path / "attempts")}
    process = _start(RUN, env)
    run_dir = _wait_for_checkpoint(process, Path(env["RISKALIGN_OUTPUT_ROOT"]), step=4)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert not (run_dir / "summary.json").exists(), "SIGTERM came after the end: test too slow"
    step = max(int(d.name.split("-")[1]) for d in (run_dir / "checkpoints").glob("step-*"))
    assert step > 4, "no checkpoint of the step SIGTERM interrupted"
    assert (f"riskalign: stopped: SIGTERM at step {step}; checkpoint: "
            f"{run_dir / 'checkpoints' / f'step-{step:08d}'}") in stderr
    resumed = run_here(*RUN, "resume=auto", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = (json.loads((d / "summary.json").read_text()) for d in (whole_run, run_dir))
    assert got["resumed_from"].endswith(f"step-{step:08d}")
    assert got["curve"] == expected["curve"]
    for name in ("metrics.csv", "policy/model.safetensors"):
        assert (run_dir / name).read_bytes() == (whole_run / name).read_bytes(), name


MIDDLE = (*RUN, "trainer.max_steps=6", "checkpoint.every_n_steps=2", "eval.every_n_steps=2")


def _resumed_from_the_middle_equals_the_whole_run(run, runner, env, tmp_path) -> Path:
    """`run` trained whole, then resumed from checkpoint 2 of a copy cut as a crash after
    step 3 would have left it: both end alike, file for file; the resumed run's directory."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    result = runner(*run, f"hydra.run.dir={full}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # checkpoint 2 (and a metrics.csv with later rows, which the resumed run must drop), no
    # summary, no policy
    shutil.copytree(full, cut)
    for leftover in ("summary.json", "policy", "checkpoints/step-00000004",
                     "checkpoints/step-00000006"):
        path = cut / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    result = runner(*run, f"resume={cut}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    expected, resumed = (json.loads((d / "summary.json").read_text()) for d in (full, cut))
    assert resumed["resumed_from"].endswith("step-00000002")
    assert resumed["curve"] == expected["curve"] and resumed["final"] == expected["final"]
    assert (cut / "metrics.csv").read_bytes() == (full / "metrics.csv").read_bytes()
    for weights in sorted(full.glob("policy/*.safetensors")) + sorted(full.glob("policy/*.pt")):
        assert (cut / "policy" / weights.name).read_bytes() == weights.read_bytes(), weights.name
    return cut


@pytest.mark.parametrize("overrides", [
    # LoRA: dropout in the adapters draws on the global generator; the base is not saved
    ("model.lora.enabled=true", "model.lora.rank=4"),
    # RA-RLHF: PPO iterations, its own sampling generator, KL controller, soft-risk step
    ("objective=ra_rlhf", "objective.batch_size=16", "objective.minibatch_size=8",
     "objective.max_new_tokens=10", "objective.risk.warmup=1", "objective.risk.alpha=0.25"),
], ids=["lora", "ra_rlhf"])
def test_resuming_from_a_middle_checkpoint_equals_the_whole_run(overrides, smoke_env, tmp_path):
    cut = _resumed_from_the_middle_equals_the_whole_run((*MIDDLE, *overrides), run_here,
                                                        smoke_env, tmp_path)
    if "model.lora.enabled=true" in overrides:
        import torch

        state = torch.load(cut / "checkpoints/step-00000006/state.ckpt", weights_only=True)
        assert state["state_dict"] and all("lora_" in key for key in state["state_dict"])


def test_resuming_ddp_from_a_middle_checkpoint_equals_the_whole_run(smoke_env, tmp_path):
    """Two processes (gloo): rank 0 writes; each rank's sampler resumes at its position."""
    _resumed_from_the_middle_equals_the_whole_run(
        (*MIDDLE, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         "trainer.precision=32-true", "data.batch_size=4", "eval.num_prompts=8"),
        run_train, smoke_env, tmp_path)


def _cut_after(source: Path, target: Path, step: int) -> None:
    """`source` as a crash right after its checkpoint of `step` would have left it."""
    shutil.copytree(source, target)
    for leftover in ("summary.json", "policy"):
        path = target / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for later in target.glob("checkpoints/step-*"):
        if int(later.name.split("-")[1]) > step:
            shutil.rmtree(later)


def test_three_chained_resumes_at_epoch_ends_and_mid_epoch_equal_the_whole_run(
        smoke_env, tmp_path):
    """Resumed at step 4 (mid-epoch), then 8 (epoch 0's last batch), then 16 (epoch 1's
    last batch): a run resumed from an epoch end once miscounted its epochs, and resuming
    from one of its later checkpoints replayed another data order from step 16 on."""
    run = (*RUN, "trainer.max_steps=24", "checkpoint.keep_last=6")
    full = tmp_path / "full"
    result = run_here(*run, f"hydra.run.dir={full}", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    previous = full
    for attempt, step in enumerate((4, 8, 16)):
        cut = tmp_path / f"attempt-{attempt}"
        _cut_after(previous, cut, step)
        result = run_here(*run, f"resume={cut}", env=smoke_env)
        assert result.returncode == 0, result.stderr[-3000:]
        previous = cut
    expected, resumed = (json.loads((d / "summary.json").read_text()) for d in (full, previous))
    assert resumed["resumed_from"].endswith("step-00000016")
    assert resumed["curve"] == expected["curve"]
    assert (previous / "metrics.csv").read_bytes() == (full / "metrics.csv").read_bytes()
    assert ((previous / "policy/model.safetensors").read_bytes()
            == (full / "policy/model.safetensors").read_bytes())


@pytest.mark.subprocess  # W&B's service
def test_a_resumed_run_continues_its_wandb_run(smoke_env, tmp_path):
    run = (*RUN, "trainer.max_steps=4", "checkpoint.every_n_steps=2", "eval.every_n_steps=2",
           "logger.wandb.mode=offline")
    cut = tmp_path / "cut"
    result = run_here(*run, f"hydra.run.dir={cut}", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    for leftover in ("summary.json", "policy", "checkpoints/step-00000004"):
        shutil.rmtree(cut / leftover) if (cut / leftover).is_dir() else (cut / leftover).unlink()
    result = run_here(*run, f"resume={cut}", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]

    run_id = (cut / "wandb_run_id").read_text().strip()
    attempts = sorted(cut.glob("wandb/offline-run-*"))
    assert len(attempts) == 2, attempts
    assert all(path.name.endswith(f"-{run_id}") for path in attempts), (run_id, attempts)
    assert json.loads((cut / "summary.json").read_text())["resumed_from"].endswith("step-00000002")


def test_checkpoints_hold_the_state_to_resume_and_never_the_reference(smoke_env, tmp_path):
    import torch

    result = run_here(*RUN, "trainer.max_steps=8", "checkpoint.keep_last=1",
                      f"hydra.run.dir={tmp_path / 'run'}", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    directories = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [d.name for d in directories] == ["step-00000008"]  # keep_last=1 pruned step 4
    marker = json.loads((directories[0] / "complete.json").read_text())
    assert marker["step"] == 8 and marker["config"]["objective"]["name"] == "dpo"
    state = torch.load(directories[0] / "state.ckpt", weights_only=True)
    assert state["global_step"] == 8
    assert state["state_dict"] and not any(k.startswith("reference.") for k in state["state_dict"])
    assert state["optimizer_states"] and state["lr_schedulers"]
    callbacks = state["callbacks"]
    curve = next(v["curve"] for k, v in callbacks.items() if "AlignmentEvaluation" in k)
    assert [point["step"] for point in curve] == [0, 4, 8]
    assert any("RandomState" in k for k in callbacks)
    loader = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader == [{"epoch": 0, "batches": 8}]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["checkpoints"]["written"] == 2
    assert summary["checkpoints"]["last"].endswith("step-00000008")
    assert summary["checkpoints"]["bytes"] == sum(
        f.stat().st_size for f in directories[0].iterdir() if f.name != "complete.json")


    # killed after the last checkpoint but before the summary: resuming only finishes
    run_dir = tmp_path / "run"
    expected = json.loads((run_dir / "summary.json").read_text())
    metrics = (run_dir / "metrics.csv").read_bytes()
    (run_dir / "summary.json").unlink()
    shutil.rmtree(run_dir / "policy")
    result = run_here(*RUN, "trainer.max_steps=8", "checkpoint.keep_last=1",
                      f"resume={run_dir}", env=smoke_env)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["curve"] == expected["curve"] and resumed["steps"] == 8
    assert (run_dir / "metrics.csv").read_bytes() == metrics


def test_incomplete_and_corrupt_checkpoints_are_passed_over(whole_run, tmp_path):
    from riskalign.training.checkpoints import complete_checkpoints
    from riskalign.training.resume import _newest_intact

    run = tmp_path / "run"
    shutil.copytree(whole_run, run)
    checkpoints = run / "checkpoints"
    # a crash between the state and the marker leaves a staging directory
    (checkpoints / ".partial-step-00000016").mkdir()
    (checkpoints / ".partial-step-00000016" / "state.ckpt").write_bytes(b"half")
    # a checkpoint directory without its marker
    (checkpoints / "step-00000020").mkdir()
    assert [s.step for s in complete_checkpoints(run)] == [4, 8, 12]

    newest = checkpoints / "step-00000012" / "state.ckpt"
    data = bytearray(newest.read_bytes())
    data[100] ^= 0xFF  # same size, different bytes: only the hash tells
    newest.write_bytes(bytes(data))
    assert _newest_intact(complete_checkpoints(run)).step == 8

    newest.write_bytes(bytes(data[: len(data) // 2]))  # truncated: not complete any more
    assert [s.step for s in complete_checkpoints(run)] == [4, 8]


def test_resume_from_a_directory_without_a_checkpoint_is_refused(smoke_env, tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    result = check_here("debug=smoke", f"resume={empty}", env=smoke_env)
    assert_refused(result, f"resume='{empty}' has no complete checkpoint", "nothing to resume")


def test_resume_with_another_config_is_refused_naming_the_key(whole_run, smoke_env, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(whole_run, run, ignore=shutil.ignore_patterns("summary.json"))
    # as if it had been killed at the end
    result = check_here(*RUN, "objective.beta=0.2", f"resume={run}", env=smoke_env)
    assert_refused(result, "was written with another config",
                   "objective.beta (checkpoint: 0.1, now: 0.2)")
