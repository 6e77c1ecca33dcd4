# Entry points for a fresh machine with Python 3.11 and the package index:
#   make demo   set up .venv, generate the quick-start data, train PG-MoE,
#               evaluate it (the main job, on an embedded default)
#   make test   set up .venv with the test extra, lint (flake8) and run the
#               test suite (tests marked slow are skipped)
#   make test-slow  the tests marked slow alone (pytest --runslow -m slow),
#               in the same .venv
#   make test-lower  set up .venv-lower with the lower bounds that setup.cfg
#               declares (pinned in .ci/lower-bounds.txt), lint and run
#               the test suite there (slow tests skipped)
#   make results  make demo, then every command behind RESULTS.md,
#               sections 1-8 (well over 8 hours on 2 cores; parts below)
# All are idempotent: each venv is created once and the package is
# reinstalled only when setup.cfg or pyproject.toml (or, for .venv-lower,
# .ci/lower-bounds.txt) changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOWER_VENV := .venv-lower
LOWER_PY := $(LOWER_VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo solvers-demo lint test test-slow test-lower benchmark results \
	results-paper results-large results-universal results-baseline clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

.make-install.stamp: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[plots]'
	touch $@

.make-test.stamp: .make-install.stamp
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(LOWER_PY):
	$(PYTHON) -m venv $(LOWER_VENV)
	$(LOWER_PY) -m pip install --quiet --upgrade pip

.make-lower.stamp: $(LOWER_PY) setup.cfg pyproject.toml .ci/lower-bounds.txt
	$(LOWER_PY) -m pip install --quiet -c .ci/lower-bounds.txt -e '.[test]'
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

test-slow: .make-test.stamp
	$(PY) -m pytest -n 2 --runslow -m slow $(PYTEST_ARGS)

test-lower: .make-lower.stamp
	$(LOWER_PY) -m flake8 pgmoe_jax experiments tests
	$(LOWER_PY) -m pytest -n 2 $(PYTEST_ARGS)

benchmark: .make-install.stamp
	$(PY) -m experiments.benchmark

# Every command of RESULTS.md, section by section, in its order; `make
# results` runs them all. Finished training runs and complete datasets are
# skipped, so a rerun only re-evaluates. Training outputs land in results/,
# runs/ and data/ (all ignored); the printed tables of the parts that are
# not training runs go to results/*.md as well as stdout. Wall times on a
# 2-core CPU, from scratch:
#   results-paper      sections 1-5: the 32x32 and 64x64 grids of runs, the
#                      ablations, scaling, warm start (several hours: the
#                      32x32 grid alone is 17 runs of 20k steps, about 6
#                      minutes each, and two of 100k steps)
#   results-large      section 6: label-free PG-MoE at 32^3, 64^3, 256^2
#                      (about 3 hours: three trainings of 30-45 min, data)
#   results-universal  section 7: the gate's front, universal_32 and
#                      universal_64 trained and evaluated (about 1 hour)
#   results-baseline   section 8: every shipped model, the quick starts and
#                      the twelve learned cascades (trained here, about
#                      5 hours) against the cascade, the solvers to a
#                      tolerance (about 80 minutes)
# Sections 1-5 were measured with the LOBPCG gate (envelope_solver
# "lobpcg"); their commands pin it, since default.py now uses "fixed".
REPRO := $(PY) -m experiments.reproduce
TRAIN := $(PY) -m experiments.train
EVAL := $(PY) -m experiments.evaluate
GEN := $(PY) -m experiments.generate_data
BENCH := $(PY) -m experiments.benchmark
LOBPCG_GATE := --config.model.envelope_solver=lobpcg
EVAL32 := $(subst $(space),$(comma),$(addprefix data/repro32/,test_interp \
	test_extrap ood_harmonic ood_random_smooth))
ENV_SPLITS := $(subst $(space),$(comma),$(addprefix data/quickstart/,\
	test_interp test_extrap ood_harmonic))
UNIVERSAL_TESTS := box_well double_well double_well_symmetric \
	gaussian_wells harmonic mixture random_smooth woods_saxon
universal_splits = $(subst $(space),$(comma),$(addprefix $(1)/test_,\
	$(UNIVERSAL_TESTS)))

results: results-paper results-large results-universal results-baseline

results-paper: demo
	mkdir -p results
	$(TRAIN) --config=experiments/configs/dense.py \
	  --workdir=runs/dense_quickstart
	for k in 1 3 6 12; do $(TRAIN) --config=experiments/configs/default.py \
	  --config.model.envelope_iters=$$k $(LOBPCG_GATE) \
	  --workdir=runs/env$$k || exit 1; done
	for run in env1 env3 env6 env12 dense_quickstart; do \
	  $(EVAL) --workdir=runs/$$run \
	  --data=$(ENV_SPLITS) --out=results/envelope_iters/$$run || exit 1; done
	$(REPRO) --parts=grid --grid=32 --train_sizes=100,300,1000,3000 \
	  --steps=20000 --envelope_solver=lobpcg --data_root=data/repro32 \
	  --out=results/repro32
	$(REPRO) --parts=grid --grid=32 --train_sizes=3000 \
	  --variants=dense_energy,pgmoe_label_free --steps=100000 \
	  --envelope_solver=lobpcg --data_root=data/repro32 \
	  --out=results/repro32_long
	$(EVAL) --symmetrize --data=$(EVAL32) \
	  --workdir=results/repro32_long/runs/pgmoe_label_free
	$(EVAL) --symmetrize \
	  --data=data/repro32/test_interp,data/repro32/test_extrap \
	  --workdir=results/repro32/runs/dense_energy_n3000
	$(REPRO) --parts=grid --grid=64 --train_sizes=3000 \
	  --variants=dense_energy,pgmoe_energy \
	  --eval_splits=test_interp,test_extrap --steps=20000 \
	  --envelope_solver=lobpcg --data_root=data/repro64 --out=results/repro64
	$(REPRO) --parts=grid --grid=64 --train_sizes=3000 \
	  --variants=pgmoe_energy --eval_splits=test_interp,test_extrap \
	  --steps=20000 --coarse=16 --envelope_solver=lobpcg \
	  --data_root=data/repro64 --out=results/repro64_coarse16
	$(REPRO) --parts=ablation --data=data/repro64/test_interp \
	  --workdir=results/repro64/runs/pgmoe_energy_n3000 \
	  > results/ablation64.md && cat results/ablation64.md
	$(REPRO) --parts=ablation --data=data/repro64/test_interp \
	  --workdir=results/repro64_coarse16/runs/pgmoe_energy_n3000 \
	  > results/ablation64_coarse16.md && cat results/ablation64_coarse16.md
	$(REPRO) --parts=ablation --data=data/repro32/test_interp \
	  --workdir=results/repro32_long/runs/pgmoe_label_free \
	  > results/ablation32.md && cat results/ablation32.md
	$(REPRO) --parts=scaling --envelope_solver=lobpcg \
	  > results/scaling.md && cat results/scaling.md
	$(REPRO) --parts=warm_start --data=data/repro32/test_interp \
	  --workdir=results/repro32_long/runs/pgmoe_label_free \
	  > results/warm_start.md && cat results/warm_start.md
	$(REPRO) --parts=warm_start --data=data/quickstart/test_interp \
	  --workdir=runs/env6 \
	  > results/warm_start_quickstart.md && cat results/warm_start_quickstart.md

GW := --family=gaussian_wells --solver=lobpcg
results-large: .make-install.stamp
	mkdir -p results/large
	$(GEN) $(GW) --ndim=3 --grid=32 --num=100 --seed=2 --out=data/gw3d32/val
	$(GEN) $(GW) --ndim=3 --grid=32 --num=200 --seed=1 --out=data/gw3d32/test
	$(GEN) $(GW) --ndim=3 --grid=64 --num=25 --seed=2 --out=data/gw3d64/val
	$(GEN) $(GW) --ndim=3 --grid=64 --num=50 --seed=1 --out=data/gw3d64/test
	$(GEN) $(GW) --grid=256 --num=50 --seed=2 --out=data/gw256/val
	$(GEN) $(GW) --grid=256 --num=200 --seed=1 --out=data/gw256/test
	$(PY) -m experiments.check_labels --data=data/gw3d64/test --num=50 \
	  --method=lanczos
	$(PY) -m experiments.check_labels --data=data/gw3d32/test --num=200 \
	  --method=lanczos
	$(PY) -m experiments.check_labels --data=data/gw256/test --num=20 \
	  --method=lanczos
	$(TRAIN) --config=experiments/configs/gaussian3d.py --workdir=runs/gw3d32
	$(TRAIN) --config=experiments/configs/gaussian3d_64.py \
	  --workdir=runs/gw3d64
	$(TRAIN) --config=experiments/configs/gaussian256.py --workdir=runs/gw256
	$(EVAL) --workdir=runs/gw3d32 --data=data/gw3d32/test \
	  --out=results/large/gw3d32
	$(EVAL) --workdir=runs/gw3d64 --data=data/gw3d64/test --batch_size=25 \
	  --out=results/large/gw3d64
	$(EVAL) --workdir=runs/gw256 --data=data/gw256/test \
	  --out=results/large/gw256
	$(EVAL) --workdir=runs/gw3d32 --data=data/gw3d32/test \
	  --reference_method=eigsh --num_reference=4 \
	  --out=results/large/gw3d32_eigsh
	$(EVAL) --workdir=runs/gw256 --data=data/gw256/test \
	  --reference_method=eigsh --num_reference=8 \
	  --out=results/large/gw256_eigsh
	$(BENCH) --what=sine > results/large/sine.md
	$(BENCH) --what=solvers --repeats=1 > results/large/solvers.md
	cat results/large/sine.md results/large/solvers.md
	for run in gw3d32:gw3d32 gw3d64:gw3d64 gw256:gw256; do \
	  $(REPRO) --parts=ablation --workdir=runs/$${run%%:*} \
	  --data=data/$${run#*:}/test > results/large/ablation_$${run%%:*}.md \
	  && cat results/large/ablation_$${run%%:*}.md || exit 1; done

U64 := --config.grid.shape=64,64 \
	--config.data.val=data/universal64/val_mixture --config.model.tiles=8 \
	--config.model.envelope_iters=1 --config.model.envelope_start=32 \
	--config.model.envelope_start_iters="(4, 2)"
LONG := --config.train.num_steps=30000 --config.train.eval_every_steps=5000 \
	--config.train.checkpoint_every_steps=5000
results-universal: .make-install.stamp
	mkdir -p results
	$(BENCH) --what=gate > results/gate.md && cat results/gate.md
	$(GEN) --universal_splits --grid=32 --num_eval=200 --out=data/universal32
	$(GEN) --universal_splits --grid=64 --num_eval=200 --out=data/universal64
	$(TRAIN) --config=experiments/configs/universal.py \
	  --workdir=runs/universal32 $(LONG) \
	  --config.data.mixture.stratified=False
	$(TRAIN) --config=experiments/configs/universal.py \
	  --workdir=runs/universal64 $(U64) $(LONG)
	$(EVAL) --workdir=runs/universal32 \
	  --data=$(call universal_splits,data/universal32) \
	  --out=results/universal/universal32
	$(EVAL) --workdir=runs/universal64 \
	  --data=$(call universal_splits,data/universal64) \
	  --out=results/universal/universal64

# Section 8's labelled splits hold 256 potentials per family: their own
# folders, since section 7's hold 200 under the same seeds.
# The learned cascades of RESULTS.md section 8 (gate "sweeps", "start_net",
# "ritz_net" and "start_ritz_net", no experts; 30,000 label-free steps
# each).
LEARNED_CASCADE := --config.grid.shape=64,64 \
	--config.data.val=data/front64/val_mixture --config.model.experts=none \
	--config.model.envelope_iters=0 --config.model.envelope_start=32 \
	--config.loss.unlabelled_objective=log_residual \
	--config.optim.weight_decay=0.0 --config.train.num_steps=30000 \
	--config.train.eval_every_steps=5000 \
	--config.train.checkpoint_every_steps=5000

# The learned start of RESULTS section 8 (one 16x16 iteration; the
# start network's widths given where it is used).
ONE_ITERATION = --config.model.envelope_start_iters="(1, 0)" \
	  --config.model.envelope_sweeps="(0, 4, 8)"
START1 = $(LEARNED_CASCADE) --config.model.gate=start_net $(ONE_ITERATION)
# Both networks (start and Ritz direction) on that one iteration.
START_RITZ1 = $(LEARNED_CASCADE) --config.model.gate=start_ritz_net \
	  $(ONE_ITERATION)
# The objective of the shipped learned cascade: the residual's power mean
# and the energy term.
P5E200 = --config.loss.unlabelled_energy_weight=200 \
	  --config.loss.residual_power=0.5

results-baseline: demo
	mkdir -p results
	$(GEN) --universal_splits --grid=64 --num_eval=256 --out=data/front64
	$(GEN) --universal_splits --grid=32 --num_eval=256 --out=data/front32
	$(GEN) $(GW) --ndim=3 --grid=32 --num=200 --seed=1 --out=data/gw3d32/test
	$(GEN) $(GW) --ndim=3 --grid=32 --num=100 --seed=2 --out=data/gw3d32/val
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/sweeps64 \
	  $(LEARNED_CASCADE) --config.model.gate=sweeps \
	  --config.model.envelope_start_iters="(4, 0)" \
	  --config.model.envelope_sweeps="(0, 4, 8)"
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/startnet64 \
	  $(LEARNED_CASCADE) --config.model.gate=start_net \
	  --config.model.gate_hidden="(128,)" \
	  --config.model.envelope_start_iters="(2, 4, 0)" \
	  --config.model.envelope_sweeps="(0, 0, 4, 8)"
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/ritz64 \
	  $(LEARNED_CASCADE) --config.model.gate=ritz_net \
	  --config.model.gate_hidden="(64,)" \
	  --config.model.envelope_start_iters="(4, 0)" \
	  --config.model.envelope_sweeps="(0, 4, 8)"
	$(BENCH) --what=front --model=universal_64 --model=runs/sweeps64 \
	  --model=runs/startnet64 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/universal_64
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/ritz8 \
	  $(LEARNED_CASCADE) --config.model.gate=ritz_net \
	  --config.model.gate_hidden="(64,)" \
	  --config.model.envelope_start_iters="(2, 4, 0)" \
	  --config.model.envelope_sweeps="(0, 0, 4, 8)"
	$(BENCH) --what=front --model=runs/sweeps64 --model=runs/ritz64 \
	  --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/ritz64
	$(BENCH) --what=front --model=runs/sweeps64 --model=runs/ritz64 \
	  --model=runs/ritz8 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/ritz8
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/start1 \
	  $(START1) --config.model.gate_hidden="(128,)"
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/start1w \
	  $(START1) --config.model.gate_hidden="(256,)"
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/ritz1 \
	  $(LEARNED_CASCADE) --config.model.gate=ritz_net \
	  --config.model.gate_hidden="(128,)" \
	  --config.model.envelope_start_iters="(1, 0)" \
	  --config.model.envelope_sweeps="(0, 4, 8)"
	$(BENCH) --what=front --model=universal_64 --model=runs/sweeps64 \
	  --model=runs/start1 --model=runs/start1w --model=runs/ritz1 \
	  --front_repeats=21 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/learned
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/start2 \
	  $(LEARNED_CASCADE) --config.model.gate=start_net \
	  --config.model.gate_hidden="(128,)" \
	  --config.model.envelope_start_iters="(2, 0)" \
	  --config.model.envelope_sweeps="(0, 4, 8)"
	$(BENCH) --what=front --model=runs/start1 --model=runs/start2 \
	  --front_repeats=21 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/start2
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/start1e200 \
	  $(START1) --config.model.gate_hidden="(128,)" \
	  --config.loss.unlabelled_energy_weight=200
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/start1me200 \
	  $(START1) --config.model.gate_hidden="(128,)" \
	  --config.loss.unlabelled_energy_weight=200 \
	  --config.model.gate_start_minima=True
	$(TRAIN) --config=experiments/configs/universal.py --workdir=runs/start1we200 \
	  $(START1) --config.loss.unlabelled_energy_weight=200 \
	  --config.model.gate_hidden="(256,)"
	$(BENCH) --what=front --model=runs/start1 --model=runs/start1e200 \
	  --model=runs/start1me200 --model=runs/start1we200 \
	  --front_repeats=21 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/energy_term
	$(TRAIN) --config=experiments/configs/universal.py \
	  --workdir=runs/start1p5e200 $(START1) \
	  --config.model.gate_hidden="(128,)" $(P5E200)
	$(BENCH) --what=front --model=runs/start1e200 --model=runs/start1p5e200 \
	  --front_repeats=21 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/residual_power
	$(TRAIN) --config=experiments/configs/universal.py \
	  --workdir=runs/start1p5e200rs3 $(START1) \
	  --config.model.gate_hidden="(128,)" $(P5E200) \
	  --config.data.mixture.components.random_smooth.weight=3.0
	$(TRAIN) --config=experiments/configs/universal.py \
	  --workdir=runs/startritz1p5e200 $(START_RITZ1) \
	  --config.model.gate_hidden="(128,)" $(P5E200)
	$(BENCH) --what=front --model=runs/start1p5e200 \
	  --model=runs/start1p5e200rs3 --model=runs/startritz1p5e200 \
	  --front_repeats=21 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/random_tail
	$(BENCH) --what=front --model=learned_cascade_64 \
	  --front_repeats=21 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/learned_cascade_64
	$(TRAIN) --config=experiments/configs/universal.py \
	  --workdir=runs/startritz64p5e200 $(START_RITZ1) \
	  --config.model.gate_hidden="(64,)" $(P5E200)
	$(BENCH) --what=front --model=learned_cascade_64 \
	  --model=runs/startritz64p5e200 \
	  --front_repeats=21 --data=$(call universal_splits,data/front64) \
	  --front_out=results/front/start_ritz64
	$(BENCH) --what=front --model=universal_32 \
	  --data=$(call universal_splits,data/front32) \
	  --front_out=results/front/universal_32
	$(TRAIN) --config=experiments/configs/learned_cascade3d.py \
	  --workdir=runs/learned_cascade3d_32
	$(BENCH) --what=front --model=gaussian3d_32 \
	  --model=learned_cascade3d_32 --data=data/gw3d32/test \
	  --front_batch=64 --front_repeats=21 \
	  --front_out=results/front/gaussian3d_32
	$(PY) -m experiments.train \
	  --config=experiments/configs/quickstart_pgmoe.py \
	  --workdir=runs/quickstart_pgmoe
	$(BENCH) --what=front --model=runs/quickstart \
	  --model=runs/quickstart_pgmoe --front_repeats=21 \
	  --data=data/quickstart/test_interp,data/quickstart/test_extrap \
	  --front_out=results/front/quickstart
	$(BENCH) --what=solvers > results/solvers.md
	cat results/front/*/front.md results/solvers.md

clean:
	rm -rf $(VENV) $(LOWER_VENV) .make-*.stamp *.egg-info
