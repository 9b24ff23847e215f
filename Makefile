# Set-up and the two everyday commands. torch==2.13.0 goes in first, so that the CPU build
# stays and no other torch is pulled in by the dependencies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed  ## the main job on embedded defaults: profile, a small study, its report (SQLite, local Ray)
	$(BIN)/tcnsearch study assoc-recall --preset tiny --resume
	$(BIN)/tcnsearch report assoc-recall-tiny
	@echo "Browse the study: $(BIN)/tcnsearch dashboard   (then open http://127.0.0.1:8080)"

test: $(BIN)/.installed  ## the test suite
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed  ## every benchmark
	$(BIN)/python benchmarks/ops.py
	$(BIN)/python benchmarks/profiling.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/attention_ablation.py
	$(BIN)/python benchmarks/study_overhead.py --tiny-study

lint: $(BIN)/.installed
	$(BIN)/ruff check .
