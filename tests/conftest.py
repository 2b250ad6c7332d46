"""Shared helpers and fixtures, and the suite's tiers.

Two markers (pyproject.toml) sort the tests into tiers:

- `subprocess`: the test starts another process (`run_train`: `python -m riskalign...` as a
  user runs it; a shell script, DDP ranks, W&B's service, a lock holder);
- `slow`: it runs an entry point end to end in this process (`run_here`, or
  `riskalign.train.train`): a training run, an evaluation, a sweep.

`make test-fast` runs the rest (`-m "not subprocess and not slow"`), `make test` all. The
markers are set here from what a test calls, itself or through its fixtures and helpers
(`pytest_collection_modifyitems`); what that misses cannot slip into the fast tier: a test
not marked `subprocess` that starts a process fails, and so does one not marked `slow`
that calls `run_here`.

Under pytest-xdist (`make test`: `-n auto --dist loadscope`), each worker keeps torch to
one thread (so do the processes it starts), the session's embedded world is built once for
all workers, a module's tests run on one worker (so a module-scoped run is trained once),
and the modules that start processes or train go first, so that no long one is left for
the end.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import multiprocessing
import multiprocessing.process
import os
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

import riskalign  # noqa: F401  (registers the config resolvers)

# pytest imports this file as `conftest`; the tests import it as `tests.conftest`: one module
# for both, so that the helpers the tests call are those the hooks below recognise
sys.modules.setdefault("tests.conftest", sys.modules[__name__])

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:  # two workers on two cores: one thread each, in the processes they start too
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# the optimizer settings of the unit tests that build an AlignmentModule or an online module
OPTIM = {"lr": 1e-2, "weight_decay": 0.0, "betas": [0.9, 0.999], "warmup_steps": 0}


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=False)


# ----- running the entry points ----------------------------------------------------------


def run_train(*overrides: str, env: dict[str, str] | None = None, timeout: int = 600,
              module: str = "riskalign.train") -> subprocess.CompletedProcess:
    """`python -m riskalign.train ...` (or another entry point) in a subprocess, as a user
    would run it. Costs ~5 s of imports before the run starts: use `run_here` unless the
    test is about the process itself (its exit code from the real command line, signals,
    concurrent processes, DDP)."""
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


_current: list[pytest.Item] = []  # the test running now


def run_here(*argv: str, env: dict[str, str] | None = None,
             module: str = "riskalign.train") -> subprocess.CompletedProcess:
    """`python -m <module> <argv>` in this process, as `run_train` runs it in another: the
    module's `__main__` block under runpy with sys.argv set, so the command-line check,
    Hydra and the entry point's error handling are the ones a user runs; its exit code,
    stdout and stderr. `env` is set for the run only. The test must be marked `slow`
    (automatic for one that calls it, itself or through its fixtures and helpers)."""
    if _current and not _current[-1].get_closest_marker("slow"):
        pytest.fail(f"{_current[-1].nodeid} runs {module} in-process: mark it "
                    "@pytest.mark.slow", pytrace=False)
    return _main_in_process(module, argv, env)


def check_here(*argv: str, env: dict[str, str] | None = None,
               module: str = "riskalign.train") -> subprocess.CompletedProcess:
    """`run_here` for a command line that stops before anything trains (a refusal,
    `--help`, `--cfg job`): a test of the fast tier. Fails the test if a Trainer fits."""
    from unittest import mock

    from lightning.pytorch import Trainer

    def fit(*args, **kwargs):
        pytest.fail(f"`{module} {' '.join(argv)}` trains: use run_here", pytrace=False)

    with mock.patch.object(Trainer, "fit", fit):
        return _main_in_process(module, argv, env)


def _main_in_process(module: str, argv, env) -> subprocess.CompletedProcess:
    """The environment, sys.argv, Hydra's state and the root logger's handlers (Hydra
    configures logging for the job) are put back afterwards."""
    script = REPO / Path(*module.split(".")).with_suffix(".py")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    environment, old_argv = dict(os.environ), sys.argv
    os.environ.update(env or {})
    sys.argv = [str(script), *argv]
    GlobalHydra.instance().clear()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(script), run_name="__main__")
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(environment)
        GlobalHydra.instance().clear()
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess([str(script), *argv], code, out.getvalue(),
                                       err.getvalue())


def assert_refused(result, *fragments: str, program: str = "riskalign", exit_code: int = 2,
                   only_line: bool = False) -> str:
    """Exit code 2 (or `exit_code`) and exactly one `<program>: error:` line on stderr (no
    traceback), holding every fragment; returns that line. `only_line`: stderr holds nothing
    else. `result` as `subprocess.run` or `run_here` returns it."""
    assert result.returncode == exit_code, f"exit {result.returncode}: {result.stderr[-2000:]}"
    prefix = f"{program}: error: "
    errors = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, f"expected one error line, got: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    if only_line:
        assert result.stderr.strip() == errors[0], result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


# ----- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smoke_world(tmp_path_factory):
    """The `debug=smoke` world, built into a session cache directory: under pytest-xdist
    one directory for all workers, the first to get there builds it while the others
    wait."""
    from filelock import FileLock

    from riskalign.worlds.reviews import ensure_reviews_world

    cfg = compose_config("debug=smoke")
    config = OmegaConf.to_container(cfg.data.world, resolve=True)
    if not XDIST_WORKER:
        cache = tmp_path_factory.mktemp("cache")
        return cache, ensure_reviews_world(config, cache)
    cache = tmp_path_factory.getbasetemp().parent / "cache"  # shared by the workers
    cache.mkdir(exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        return cache, ensure_reviews_world(config, cache)


@pytest.fixture
def smoke_env(smoke_world, tmp_path) -> dict[str, str]:
    """Environment for a run that reuses the session's world."""
    cache, _ = smoke_world
    return {
        "RISKALIGN_CACHE_DIR": str(cache),
        "RISKALIGN_OUTPUT_ROOT": str(tmp_path / "outputs"),
        "WANDB_SILENT": "true",
    }


@pytest.fixture
def train_here(smoke_env):
    """`train_here(*args)`: `python -m riskalign.train *args debug=smoke` run in this process
    (`run_here`), with the smoke world's cache and a temporary output root."""
    return lambda *args: run_here(*args, "debug=smoke", env=smoke_env)


@pytest.fixture
def refused(smoke_env, monkeypatch):
    """`refused(overrides, *fragments)`: `python -m riskalign.train *overrides debug=smoke`,
    in this process (`check_here`), exits 2 with one error line holding every fragment, and
    loads no model; returns the line."""
    loads = []

    def load(name_or_path, *args, **kwargs):
        loads.append(str(name_or_path))
        raise AssertionError(f"a model loaded: {name_or_path}")

    monkeypatch.setattr("riskalign.models.loading.load_causal_lm", load)
    monkeypatch.setattr("riskalign.rewards.hf_classifier.AutoModelForSequenceClassification"
                        ".from_pretrained", load)

    def check(overrides: list[str], *fragments: str) -> str:
        result = check_here(*overrides, "debug=smoke", env=smoke_env)
        assert not loads, f"models loaded before the refusal: {loads}"
        return assert_refused(result, *fragments)

    return check


# ----- the tiers -------------------------------------------------------------------------


def _code_names(code: types.CodeType):
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _tiers(function, seen: set) -> set[str]:
    """The tiers `function` reaches: what it names, and the functions of tests/ it names,
    followed."""
    inner = getattr(getattr(function, "hypothesis", None), "inner_test", None)
    function = inspect.unwrap(inner or function)
    code = getattr(function, "__code__", None)
    if code is None or code in seen:
        return set()
    seen.add(code)
    tiers = set()
    for name in _code_names(code):
        if name in ("subprocess", "Popen", "multiprocessing", "run_train"):  # imported in
            tiers.add("subprocess")  # the function, or an attribute (conftest.run_train)
        elif name == "run_here":
            tiers.add("slow")
        target = function.__globals__.get(name)
        if target is run_train or target in (subprocess, multiprocessing) or \
                getattr(target, "__name__", "") == "torch.multiprocessing":
            tiers.add("subprocess")
        elif target is run_here or (getattr(target, "__module__", None) == "riskalign.train"
                                    and name == "train"):
            tiers.add("slow")
        elif _in_tests(target) and target.__code__.co_filename != __file__:
            tiers |= _tiers(target, seen)  # (this file's helpers: run_train and run_here)
    return tiers


def _in_tests(function) -> bool:
    """A function of tests/ (not this file's guard)."""
    return (isinstance(function, types.FunctionType)
            and function.__name__ != "_processes_only_where_marked"
            and function.__code__.co_filename.startswith(str(REPO / "tests")))


# what a test costs, roughly, by tier: for the order of the modules under pytest-xdist
COST = {"subprocess": 8.0, "slow": 3.0}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        seen: set = set()
        tiers = _tiers(item.function, seen)
        for name in item.fixturenames:
            definitions = item._fixtureinfo.name2fixturedefs.get(name)
            if definitions and _in_tests(inspect.unwrap(definitions[-1].func)):
                tiers |= _tiers(definitions[-1].func, seen)
        for tier in sorted(tiers):
            if not item.get_closest_marker(tier):
                item.add_marker(tier)
    if XDIST_WORKER:  # the costliest modules first (the same order in every worker)
        cost: dict[str, float] = {}
        for item in items:
            tiers = [COST[tier] for tier in COST if item.get_closest_marker(tier)]
            cost[item.nodeid.split("::")[0]] = cost.get(item.nodeid.split("::")[0], 0.0) + \
                max(tiers, default=0.2)
        items.sort(key=lambda item: -cost[item.nodeid.split("::")[0]])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _current.append(item)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    if _current and _current[-1] is item:
        _current.pop()


@pytest.fixture(autouse=True)
def _processes_only_where_marked(request, monkeypatch):
    """A test not marked `subprocess` fails if it starts a process."""
    if request.node.get_closest_marker("subprocess"):
        return

    def refuse(what):
        def start(*args, **kwargs):
            pytest.fail(f"{request.node.nodeid} starts a process ({what}) but is not marked "
                        "@pytest.mark.subprocess", pytrace=False)
        return start

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("subprocess.Popen"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start",
                        refuse("multiprocessing"))
    monkeypatch.setattr(os, "fork", refuse("os.fork"))


def pytest_configure(config):
    if XDIST_WORKER:
        import torch

        torch.set_num_threads(1)
