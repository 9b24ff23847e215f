# Set-up and the two everyday commands. torch==2.13.0 goes in first, so that the CPU build
# stays and no other torch is pulled in by the dependencies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test check services bench bench-peers lint gpu-check

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed  ## the main job on embedded defaults: profile, a small study, its report, its pick (SQLite, local Ray)
	$(BIN)/tcnsearch study assoc-recall --preset tiny --resume
	$(BIN)/tcnsearch report assoc-recall-tiny
	@echo "Browse the study: $(BIN)/tcnsearch dashboard   (then open http://127.0.0.1:8080)"
	$(BIN)/tcnsearch export assoc-recall-tiny --out dashboards/assoc-recall-tiny-best.yaml

test: $(BIN)/.installed services  ## the whole test suite (CI's command), two pytest workers
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

check: $(BIN)/.installed  ## the fast lane for the edit-test loop: no Ray, no cluster, no browser, nothing slow
	$(BIN)/python -m pytest -q -m "not slow and not ray and not cluster and not browser"

# What the tests talk to for real: the local PostgreSQL server (started if it is installed and down)
# and Debian's Chromium for the dashboard tests (installed if missing and this user may). Whatever
# cannot be had here is skipped by the tests that need it, with the reason in pytest's summary.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
services:
	@if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	    $(SUDO) pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql | tail -n 1)" main start \
	    || echo "make: could not start PostgreSQL; its tests will be skipped"; fi
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian's chromium for the dashboard tests"; \
	    ($(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 \
	     || ($(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1)) \
	    || echo "make: could not install chromium; the dashboard tests will be skipped"; fi

bench: $(BIN)/.installed  ## every benchmark
	$(BIN)/python benchmarks/ops.py
	$(BIN)/python benchmarks/profiling.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/attention_ablation.py
	$(BIN)/python benchmarks/study_overhead.py --tiny-study

# HEBO and SMAC3 beside the product on the replay benchmark, in a venv of their own: HEBO 0.3.6 pins
# numpy<1.25, which must not reach the product's venv. It goes in --no-deps (it runs on numpy 2 with
# pymoo 0.6.2 and gpytorch, the extra `peers`; GPy and catboost are for models it does not use here).
# The venv carries a .gitignore of its own, as venvs of Python 3.13 do.
PEERS_VENV ?= .venv-peers
PEERS_BIN := $(PEERS_VENV)/bin

$(PEERS_BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	printf '*\n' > $(PEERS_VENV)/.gitignore
	$(PEERS_BIN)/python -m pip install -q --upgrade pip
	$(PEERS_BIN)/python -m pip install -q torch==2.13.0
	$(PEERS_BIN)/python -m pip install -q -e '.[peers]' torch==2.13.0
	$(PEERS_BIN)/python -m pip install -q --no-deps hebo==0.3.6
	touch $@

bench-peers: $(PEERS_BIN)/.installed  ## the replay benchmark with HEBO and SMAC3 beside the product (reduced: ~40 min on 2 busy cores)
	nice -n 10 $(PEERS_BIN)/python benchmarks/search_quality.py --seeds 30 --gp-seeds 10 --peer-seeds 10

gpu-check: $(BIN)/.installed  ## every CUDA path once, on a machine with a GPU (about 5 minutes): one table
	$(BIN)/python benchmarks/gpu_check.py

lint: $(BIN)/.installed  ## ruff, and the package boundaries (import-linter's contracts in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
