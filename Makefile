# Set-up and entry points. `make test` and `make demo` create .venv on first use, install the
# pinned lock into it and the package (editable), then run; later runs skip the installation
# unless requirements/lock.txt or setup.py changed (the stamp file name carries their hash).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCK_HASH := $(shell cat requirements/lock.txt setup.py | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(LOCK_HASH)
# Quiet pip's notes about package locations configured on some machines but absent.
PIP_FILTER := grep -v -e '^WARNING: Location' -e '^WARNING: Running pip as' || true

.PHONY: install test test-slow test-all demo benchmark lock clean

install: $(STAMP)

$(STAMP): requirements/lock.txt setup.py
	@echo "==> Installing the pinned stack into $(VENV) (first run: about 3-5 minutes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements/lock.txt 2>&1 | $(PIP_FILTER)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . 2>&1 | $(PIP_FILTER)
	rm -f $(VENV)/.installed-*
	touch $@

test: install
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile --no-loadscope-reorder

test-slow: install
	$(PY) -m pytest -m slow

test-all: install
	$(PY) -m pytest

demo: install
	$(VENV)/bin/tfrec-onerec demo

benchmark: install
	$(PY) benchmarks/simulator_benchmark.py
	$(PY) benchmarks/din_benchmark.py
	$(PY) benchmarks/multitask_benchmark.py
	$(PY) benchmarks/pipeline_benchmark.py
	$(PY) benchmarks/serving_benchmark.py
	$(PY) benchmarks/batching_benchmark.py
	$(PY) benchmarks/training_levers.py

# Re-resolve the lock (needs uv: `pip install uv`); review the diff before committing it.
lock:
	uv pip compile --python-version 3.11 --override requirements/overrides.txt \
	    requirements/stack.in -o requirements/lock.txt

clean:
	rm -rf $(VENV) build *.egg-info
