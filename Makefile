# `make test` and `make quickstart` create the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers for `make test` (each loads torch; on 2 cores, 2 halve the time)
TEST_WORKERS ?= 2

.PHONY: test test-fast lint quickstart install clean device-check lock docs

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25

# the unit tests: everything but the `slow` ones (console script, subprocesses, training; tests/conftest.py)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# ruff (lint + import order) and mypy (stadapt/ and plugins/), configured in pyproject.toml
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy

# the docs site (mkdocs.yml, docs/) into site/ (git-ignored), --strict: a broken link or reference fails it;
# the CLI and recipe references are generated from the code at build time (docs/_gen/reference.py)
docs: $(VENV)/.installed
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# synthetic motion clips, ST-Adapter vs linear probe on a frozen tiny image model, on the CPU
quickstart: $(VENV)/.installed
	$(VENV)/bin/stadapt quickstart

# on a CUDA machine, under 8 minutes: bench (+ --compile), bench-train, a 50-step run from K400-like clips, eval,
# export --verify, the temporal-conv forms; one summary table (scripts/device_check.py). No GPU: says so, exits 0.
# Uses .venv when it exists, else $(PYTHON) with stadapt installed (a GPU machine without a network).
device-check:
	@if [ -x $(PY) ]; then $(PY) scripts/device_check.py; else $(PYTHON) scripts/device_check.py; fi

# constraints.txt from the newest releases: `.[all,dev]` installed without constraints into a throw-away
# environment, every distribution it pulls in pinned as name==version (scripts/lock.py: never a path or URL,
# checked line by line before it replaces the file; the header comment is kept). Run the suite before committing.
LOCK_VENV ?= build/lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[all,dev]'
	$(LOCK_VENV)/bin/python scripts/lock.py constraints.txt
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) build *.egg-info
