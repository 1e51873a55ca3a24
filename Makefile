# siambench: `make demo` runs the whole pipeline on synthetic data (CPU); `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.siambench-setup
RUNS   ?= runs/demo

.PHONY: setup test test-fast demo demo-seed3 doctor clean

setup: $(STAMP)  ## create .venv with pinned dependencies and detectron2 (idempotent)

$(STAMP): requirements/base.txt requirements/test.txt requirements/constraints.txt setup.py transfer/install_d2.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c requirements/constraints.txt -r requirements/test.txt
	$(BIN)/python transfer/install_d2.py
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/siambench doctor --quiet
	touch $@

test: setup  ## the full test suite (CI); pytest's exit 5 (no tests collected) is a failure
	$(BIN)/python -m pytest -q tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: setup  ## day-to-day tier: skips the slow end-to-end tests
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: setup  ## whole pipeline on the built-in synthetic dataset, CPU only
	$(BIN)/siambench run configs/benchmarks/demo.yaml OUTPUT_DIR $(RUNS)

demo-seed3: setup  ## the demo on another seed set (data, pretraining, evaluation and transfer seeds)
	$(BIN)/siambench run configs/benchmarks/demo_seed3.yaml OUTPUT_DIR $(RUNS)_seed3

doctor: setup
	$(BIN)/siambench doctor

clean:
	rm -rf $(VENV) .cache runs
