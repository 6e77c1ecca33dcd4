r"""Reproduce the paper's claims and go past them, part by part.

    python -m experiments.reproduce --parts=scaling,warm_start \
        [--workdir=runs/quickstart --data=data/quickstart/test_interp]

A thin shell around ``pgmoe_jax.workflows`` (each part is a function there,
callable from Python, with the details in its docstring):

* ``scaling``: parameters and forward time of the dense baseline and PG-MoE
  per grid size, and of PG-MoE's envelope alone (``studies.scaling``).
* ``warm_start``: LOBPCG iterations from a trained model's prediction
  against other starts (``studies.warm_start``).
* ``grid``: the grid of runs (dense and PG-MoE, supervised and with the
  energy loss, and PG-MoE label-free) at the labelled sizes
  ``--train_sizes``, resumable (``grid_runs.run_grid``): a sweep whose
  trials are ``experiments.train`` runs of the base recipes
  ``experiments/configs/default.py`` and ``dense.py`` with a few overrides,
  ``--parallel`` at once, their output in ``<out>/logs/``:

        python -m experiments.reproduce --parts=grid --grid=32 \
            --train_sizes=100,300,1000,3000 --steps=20000 \
            --data_root=data/repro32 --out=results/repro32

* ``ablation``: a trained PG-MoE with and without its experts
  (``studies.ablation``).

The 64x64 comparison is ``grid`` at ``--grid=64``; RESULTS.md gives every
command and its figures.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
import jax

from experiments import cli
from pgmoe_jax.workflows import grid_runs
from pgmoe_jax.workflows import studies
from pgmoe_jax.workflows import sweep_runner

_PARTS = flags.DEFINE_list("parts", ["scaling", "warm_start"],
                           "Parts to run: scaling, warm_start, grid, "
                           "ablation.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart",
                               "Trained model for warm_start and ablation.")
_DATA = flags.DEFINE_string("data", "data/quickstart/test_interp",
                            "Dataset for warm_start and ablation.")
_NUM = flags.DEFINE_integer("num", 50, "Potentials for warm_start.")
_REPEATS = flags.DEFINE_integer(
    "repeats", 5, "scaling and warm_start: timed runs of every timed row "
    "(the best counts, after an untimed warm-up).", lower_bound=1)
_SIZES = flags.DEFINE_list("sizes", ["32", "64", "128", "256"],
                           "Points per axis for scaling.")
_GRID = flags.DEFINE_integer("grid", 32, "grid: points per axis (2-D).")
_TRAIN_SIZES = flags.DEFINE_list("train_sizes", ["100", "300", "1000", "3000"],
                                 "grid: labelled training sizes.")
_STEPS = flags.DEFINE_integer("steps", 20000, "grid: steps per run.")
_NUM_EVAL = flags.DEFINE_integer("num_eval", 200, "grid: samples per "
                                 "evaluation split.")
_DATA_ROOT = flags.DEFINE_string("data_root", "data/repro32",
                                 "grid: standard splits (made if missing).")
_OUT = flags.DEFINE_string("out", "results/repro32", "grid: results folder.")
_VARIANTS = flags.DEFINE_list("variants", list(grid_runs.VARIANTS),
                              "grid: runs (model_loss).")
_COARSE = flags.DEFINE_integer(
    "coarse", 0, "grid: points per axis of PG-MoE's coarse envelope; 0 "
    "takes half the grid. Must divide --grid.")
_ENVELOPE_SOLVER = flags.DEFINE_enum(
    "envelope_solver", "fixed", ["fixed", "lobpcg"],
    "grid and scaling: PG-MoE's gate solver (default.py's is 'fixed'; "
    "RESULTS.md sections 1-5 were measured with 'lobpcg').")
_PARALLEL = flags.DEFINE_integer(
    "parallel", 1, "grid: runs trained at once (each an experiments.train "
    "process; the figures do not depend on it).", lower_bound=1)
_EVAL_SPLITS = flags.DEFINE_list(
    "eval_splits", ["test_interp", "test_extrap", "ood_harmonic",
                    "ood_random_smooth"], "grid: evaluation splits.")


_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "configs")
_BASE_CONFIGS = {"pgmoe": os.path.join(_CONFIGS, "default.py"),
                 "dense": os.path.join(_CONFIGS, "dense.py")}


def _grid() -> None:
  _, table = grid_runs.run_grid(
      grid_size=_GRID.value,
      train_sizes=[int(s) for s in _TRAIN_SIZES.value], steps=_STEPS.value,
      num_eval=_NUM_EVAL.value, data_root=_DATA_ROOT.value, out=_OUT.value,
      base_configs=_BASE_CONFIGS,
      variants=_VARIANTS.value, coarse=_COARSE.value,
      envelope_solver=_ENVELOPE_SOLVER.value,
      eval_splits=_EVAL_SPLITS.value, workers=os.cpu_count() or 1,
      parallel=_PARALLEL.value, echo=lambda line: print(line, flush=True))
  print(f"\n## Grid of runs ({_OUT.value}/results.md)\n\n{table}")


PARTS = {
    "scaling": lambda: print("\n" + studies.scaling(
        [int(s) for s in _SIZES.value], repeats=_REPEATS.value,
        envelope_solver=_ENVELOPE_SOLVER.value)),
    "warm_start": lambda: print("\n" + studies.warm_start(
        _WORKDIR.value, _DATA.value, _NUM.value, _REPEATS.value)),
    "grid": _grid,
    "ablation": lambda: print("\n" + studies.ablation(_WORKDIR.value,
                                                      _DATA.value)),
}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.check_names(_PARTS.value, PARTS, "part")
  jax.config.update("jax_enable_x64", True)
  cli.quiet_library_logs()
  print(f"# reproduce on {jax.devices()[0].device_kind}")
  for name in _PARTS.value:
    try:
      PARTS[name]()
    except (ValueError, RuntimeError) as e:
      raise SystemExit(f"reproduce: error: {e}") from None
    except sweep_runner.Interrupted as e:  # the trials were stopped first
      print(f"reproduce: {e}", file=sys.stderr)
      sys.exit(e.exit_code)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("reproduce"))
