# Two entry points for a fresh machine with Python 3.11 and the package index:
#   make demo   set up .venv, generate the quick-start data, train PG-MoE,
#               evaluate it (the main job, on an embedded default)
#   make test   set up .venv with the test extra and run the whole test suite
# Both are idempotent: the venv is created once and the package is reinstalled
# only when setup.cfg or pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo solvers-demo test benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

.make-install.stamp: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

.make-test.stamp: .make-install.stamp
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

QUICKSTART_SPLITS := test_interp test_extrap ood_harmonic ood_double_well \
	ood_box_well ood_random_smooth
comma := ,
empty :=
space := $(empty) $(empty)

# The quick start: data (resumed if present), PG-MoE training (resumed from
# its latest checkpoint, a no-op once finished), evaluation table and figures.
demo: .make-install.stamp
	$(PY) -m experiments.generate_data --standard_splits --grid=32 \
	  --num=2000 --num_eval=200 --out=data/quickstart
	$(PY) -m experiments.train --config=experiments/configs/quickstart.py \
	  --workdir=runs/quickstart
	$(PY) -m experiments.evaluate --workdir=runs/quickstart \
	  --data=$(subst $(space),$(comma),$(addprefix data/quickstart/,$(QUICKSTART_SPLITS)))

# Ground states of every potential family with both reference solvers.
solvers-demo: .make-install.stamp
	$(PY) -m experiments.demo

test: .make-test.stamp
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

benchmark: .make-install.stamp
	$(PY) -m experiments.benchmark

clean:
	rm -rf $(VENV) .make-*.stamp *.egg-info
