"""What a user sees on the console of a run: each log line once, one progress bar line
in steps, and no warning the user cannot act on."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.file_proxy import FileProxy

from tests.conftest import run_train

LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[[\w.]+\]\[[A-Z]+\] - (?P<message>.*)$")
# where Python, Lightning (rank_zero_warn) and transformers print a warning: "<file>.py:<line>: "
WARNING_SOURCE = re.compile(r"\.py:\d+: ")
WIDTH = 80


@pytest.fixture(scope="module")
def console_run(smoke_world, tmp_path_factory):
    """A short run with two checkpoints and an offline W&B run, as a user starts it (no
    WANDB_SILENT), on an 80-column console; (stdout + stderr, the run's train.log)."""
    cache, _ = smoke_world
    tmp = tmp_path_factory.mktemp("console")
    env = {
        "RISKALIGN_CACHE_DIR": str(cache),
        "RISKALIGN_OUTPUT_ROOT": str(tmp / "outputs"),
        "WANDB_SILENT": "false",
        "WANDB_DIR": str(tmp / "wandb"),
        "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
        "WANDB_DATA_DIR": str(tmp / "wandb-data"),
        "PYTHONWARNINGS": "",  # the interpreter's defaults, whatever the caller's
        "COLUMNS": str(WIDTH),
    }
    result = run_train("debug=smoke", "logger.wandb.mode=offline", "trainer.max_steps=4",
                       "checkpoint.every_n_steps=2", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [train_log] = (tmp / "outputs").glob("runs/*/*/train.log")
    return result.stdout + result.stderr, train_log.read_text()


def test_each_log_line_is_printed_once(console_run):
    output, _ = console_run
    lines = [line.rstrip() for line in output.splitlines()]
    messages = [match["message"] for line in lines if (match := LOG_LINE.match(line))]
    assert any("GPU available" in message for message in messages), "Lightning's lines missing"
    assert any("checkpoint: step 2" in message for message in messages)
    repeated = [message for message, count in Counter(messages).items() if count > 1]
    assert not repeated, f"log lines printed more than once: {repeated}"
    # nor again in another format (Lightning's own handler prints "INFO: <message>")
    for message in messages:
        copies = [line for line in lines if message in line]
        assert len(copies) == 1, f"{message!r} printed {len(copies)} times: {copies}"


def test_train_log_has_each_lightning_line_once(console_run):
    _, train_log = console_run
    lines = train_log.splitlines()
    for fragment in ("GPU available", "`Trainer.fit` stopped"):
        assert sum(fragment in line for line in lines) == 1, train_log[-3000:]
    repeated = [line for line, count in Counter(lines).items() if count > 1]
    assert not repeated, f"train.log repeats lines: {repeated}"


def test_the_progress_bar_is_one_line_in_steps(console_run):
    output, _ = console_run
    assert "Epoch 0/-" not in output and "v_num" not in output
    bars = [line.rstrip() for line in output.splitlines() if line.startswith("train ")]
    assert len(bars) == 1, f"expected one final progress bar line, got {bars}"
    assert re.fullmatch(r"train \S+ 4/4 \S+ • \S+ loss: \S+ acc: \S+ margin: \S+", bars[0]), bars
    assert len(bars[0]) <= WIDTH, bars[0]


def test_no_warning_a_user_cannot_act_on(console_run):
    output, train_log = console_run
    for text in (output, train_log):
        warnings = [line for line in text.splitlines()
                    if WARNING_SOURCE.search(line) or "Warning:" in line or "WARNING" in line]
        assert not warnings, warnings
    for noise in ("anonymous", "weights_only", "litlogger", "💡"):
        assert noise not in output, f"{noise!r} in the console output"


def test_metrics_on_the_bar_are_short_and_ordered():
    from riskalign.training.progress import StepProgressBar

    trainer = SimpleNamespace(progress_bar_metrics={
        "rewards/margins": -0.0041234, "rewards/accuracies": 1.0, "loss": 0.69314,
        "grad/norm": 1234.5})
    shown = StepProgressBar().get_metrics(trainer, None)
    assert shown == {"loss": "0.693", "acc": "1.00", "margin": "-0.00412", "norm": "1.23e+03"}


@pytest.mark.parametrize(("max_steps", "max_epochs", "accumulate", "expected"), [
    (12, -1, 1, 12),  # the usual run: max_steps bounds it, max_epochs=-1
    (-1, 1, 1, 8),  # PPO: one epoch of one batch per iteration
    (-1, 3, 3, 9),  # 3 epochs of 8 batches, 3 per optimizer step: ceil(8/3) = 3 each
    (-1, -1, 1, float("inf")),
])
def test_the_bar_counts_the_runs_steps(max_steps, max_epochs, accumulate, expected):
    from riskalign.training.progress import total_steps

    trainer = SimpleNamespace(max_steps=max_steps, max_epochs=max_epochs,
                              num_training_batches=8, accumulate_grad_batches=accumulate)
    assert total_steps(trainer) == expected


def test_log_lines_go_through_the_live_display_and_back(monkeypatch):
    """In a terminal Rich's live display swaps sys.stdout for a proxy that prints above
    the bar; the console's logging handler follows it while the bar is live, and only
    the console's (not train.log's)."""
    from riskalign.training.progress import StepProgressBar

    real = io.StringIO()
    console, log_file = logging.StreamHandler(real), logging.FileHandler(
        "/dev/null", delay=True)
    log_file.stream = real  # a FileHandler on the same stream stays where it is
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [console, log_file])
    proxy = FileProxy(Console(file=io.StringIO()), real)
    monkeypatch.setattr(sys, "stdout", proxy)

    bar = StepProgressBar()
    bar._route_log_lines_above_the_bar()
    assert console.stream is proxy and log_file.stream is real
    bar._restore_log_lines()
    assert console.stream is real
