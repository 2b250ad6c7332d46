"""The suite's tiers (tests/conftest.py): a test is marked from what it calls, and what the
marks miss fails instead of slipping into `make test-fast`.

The helpers below are reached by name (`globals()[...]`, `getattr`), so that these tests
are not themselves marked: they check the guards of the fast tier from inside it.
"""

from __future__ import annotations

import os

import pytest

import tests.conftest as conftest


def _starts_a_process():
    return conftest.run_train("--help")


def _runs_here():
    return conftest.run_here("--help")


def _through_a_helper():
    return _runs_here()


def _refuses_here():
    return conftest.check_here("data.batch_size=0")


def _imports_subprocess_itself():
    import subprocess

    return subprocess.run(["true"], check=True)


@pytest.mark.parametrize(("helper", "tiers"), [
    ("_starts_a_process", {"subprocess"}),
    ("_runs_here", {"slow"}),
    ("_through_a_helper", {"slow"}),
    ("_refuses_here", set()),
    ("_imports_subprocess_itself", {"subprocess"}),
])
def test_the_tiers_of_helpers_that_name_the_runners_as_attributes(helper, tiers):
    assert conftest._tiers(globals()[helper], set()) == tiers


def test_the_tiers_follow_the_helpers_a_test_calls(tmp_path):
    """Source written as a test module would be: `from tests.conftest import ...`."""
    source = tmp_path / "sample.py"
    source.write_text(
        "from tests.conftest import check_here, run_here, run_train\n"
        "from riskalign.train import train\n"
        "def starts(): return run_train('--help')\n"
        "def trains(): return run_here()\n"
        "def fits(cfg, run_dir): return train(cfg, run_dir)\n"
        "def helper(): return trains()\n"
        "def through(): return helper()\n"
        "def refuses(): return check_here('data.batch_size=0')\n"
        "def both(): starts(); through()\n")
    namespace = {"__name__": "sample"}
    code = compile(source.read_text(), str(conftest.REPO / "tests" / "sample.py"), "exec")
    exec(code, namespace)  # noqa: S102  (a module of tests/, as the hook sees one)
    expected = {"starts": {"subprocess"}, "trains": {"slow"}, "fits": {"slow"},
                "through": {"slow"}, "refuses": set(), "both": {"subprocess", "slow"}}
    for name, tiers in expected.items():
        assert conftest._tiers(namespace[name], set()) == tiers, name


def test_a_process_started_by_an_unmarked_test_fails_it():
    with pytest.raises(pytest.fail.Exception, match="not marked @pytest.mark.subprocess"):
        os.popen("true")


def test_an_unmarked_test_cannot_run_an_entry_point_in_process():
    with pytest.raises(pytest.fail.Exception, match="mark it @pytest.mark.slow"):
        globals()["_runs_here"]()


def test_check_here_refuses_a_command_line_that_trains(smoke_env):
    with pytest.raises(pytest.fail.Exception, match="trains: use run_here"):
        conftest.check_here("debug=smoke", "trainer.max_steps=1", env=smoke_env)
