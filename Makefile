# Two entry points for a fresh machine with Python 3.11 and the package index:
#   make demo   set up .venv and run the main job on an embedded default
#   make test   set up .venv with the test extra and run the whole test suite
# Both are idempotent: the venv is created once and the package is reinstalled
# only when setup.cfg or pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

.make-install.stamp: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

.make-test.stamp: .make-install.stamp
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: .make-install.stamp
	$(PY) -m experiments.demo

test: .make-test.stamp
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

benchmark: .make-install.stamp
	$(PY) -m experiments.benchmark

clean:
	rm -rf $(VENV) .make-*.stamp *.egg-info
