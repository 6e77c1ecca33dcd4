# Two entry points for a fresh machine with Python 3.11 and the package index:
#   make demo   set up .venv, generate the quick-start data, train PG-MoE,
#               evaluate it (the main job, on an embedded default)
#   make test   set up .venv with the test extra, lint (flake8) and run the
#               whole test suite
#   make results  make demo, then every command behind RESULTS.md (about 90
#               minutes on 2 cores)
# Both are idempotent: the venv is created once and the package is reinstalled
# only when setup.cfg or pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo solvers-demo lint test benchmark results clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

.make-install.stamp: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[plots]'
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

lint: .make-test.stamp
	$(PY) -m flake8 pgmoe_jax experiments tests

test: lint
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

benchmark: .make-install.stamp
	$(PY) -m experiments.benchmark

# Every command of RESULTS.md, in its order. Finished training runs are
# skipped, so a rerun only re-evaluates. Training outputs land in results/
# and data/ (both ignored); the printed tables of the parts that are not
# training runs go to results/*.md as well as stdout.
REPRO := $(PY) -m experiments.reproduce
EVAL32 := $(subst $(space),$(comma),$(addprefix data/repro32/,test_interp \
	test_extrap ood_harmonic ood_random_smooth))
ENV_SPLITS := $(subst $(space),$(comma),$(addprefix data/quickstart/,\
	test_interp test_extrap ood_harmonic))
results: demo
	mkdir -p results
	$(PY) -m experiments.train --config=experiments/configs/dense.py \
	  --workdir=runs/dense_quickstart
	for k in 1 3 6 12; do $(PY) -m experiments.train \
	  --config=experiments/configs/default.py \
	  --config.model.envelope_iters=$$k --workdir=runs/env$$k || exit 1; done
	for run in env1 env3 env6 env12 dense_quickstart; do \
	  $(PY) -m experiments.evaluate --workdir=runs/$$run \
	  --data=$(ENV_SPLITS) --out=results/envelope_iters/$$run || exit 1; done
	$(REPRO) --parts=grid --grid=32 --train_sizes=100,300,1000,3000 \
	  --steps=20000 --data_root=data/repro32 --out=results/repro32
	$(REPRO) --parts=grid --grid=32 --train_sizes=3000 \
	  --variants=dense_energy,pgmoe_label_free --steps=100000 \
	  --data_root=data/repro32 --out=results/repro32_long
	$(PY) -m experiments.evaluate --symmetrize --data=$(EVAL32) \
	  --workdir=results/repro32_long/runs/pgmoe_label_free
	$(PY) -m experiments.evaluate --symmetrize \
	  --data=data/repro32/test_interp,data/repro32/test_extrap \
	  --workdir=results/repro32/runs/dense_energy_n3000
	$(REPRO) --parts=grid --grid=64 --train_sizes=3000 \
	  --variants=dense_energy,pgmoe_energy \
	  --eval_splits=test_interp,test_extrap --steps=20000 \
	  --data_root=data/repro64 --out=results/repro64
	$(REPRO) --parts=grid --grid=64 --train_sizes=3000 \
	  --variants=pgmoe_energy --eval_splits=test_interp,test_extrap \
	  --steps=20000 --coarse=16 --data_root=data/repro64 \
	  --out=results/repro64_coarse16
	$(REPRO) --parts=ablation --data=data/repro64/test_interp \
	  --workdir=results/repro64/runs/pgmoe_energy_n3000 \
	  > results/ablation64.md && cat results/ablation64.md
	$(REPRO) --parts=ablation --data=data/repro64/test_interp \
	  --workdir=results/repro64_coarse16/runs/pgmoe_energy_n3000 \
	  > results/ablation64_coarse16.md && cat results/ablation64_coarse16.md
	$(REPRO) --parts=ablation --data=data/repro32/test_interp \
	  --workdir=results/repro32_long/runs/pgmoe_label_free \
	  > results/ablation32.md && cat results/ablation32.md
	$(REPRO) --parts=scaling > results/scaling.md && cat results/scaling.md
	$(REPRO) --parts=warm_start --data=data/repro32/test_interp \
	  --workdir=results/repro32_long/runs/pgmoe_label_free \
	  > results/warm_start.md && cat results/warm_start.md
	$(REPRO) --parts=warm_start --data=data/quickstart/test_interp \
	  --workdir=runs/env6 \
	  > results/warm_start_quickstart.md && cat results/warm_start_quickstart.md

clean:
	rm -rf $(VENV) .make-*.stamp *.egg-info
