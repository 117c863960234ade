# `make test` and `make quickstart` create the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers for `make test` (each loads torch; on 2 cores, 2 halve the time)
TEST_WORKERS ?= 2

.PHONY: test test-fast lint quickstart install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# the unit tests: everything but the `slow` ones (console script, subprocesses, training; tests/conftest.py)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# ruff (lint + import order) and mypy (stadapt/ and plugins/), configured in pyproject.toml
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy

# synthetic motion clips, ST-Adapter vs linear probe on a frozen tiny image model, on the CPU
quickstart: $(VENV)/.installed
	$(VENV)/bin/stadapt quickstart

clean:
	rm -rf $(VENV) build *.egg-info
