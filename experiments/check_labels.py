r"""Checks a dataset's labels against an independent solver on a few samples.

    python -m experiments.check_labels --data=data/gw3d32/test --num=5

Re-solves the first ``--num`` potentials of each labelled split in float64
with one of:

* ``eigsh``: SciPy's ARPACK in shift-invert mode (the package's reference
  solver; its sparse LU takes minutes and gigabytes at 64^3);
* ``lanczos``: ARPACK in its regular mode
  (:func:`pgmoe_jax.solvers.lanczos.lanczos`: Lanczos on H itself, no
  factorisation, memory of a few dozen vectors). An independent check at
  any size; it converges slowly only where the gap E1 - E0 is tiny against
  the spectrum's width (near-degenerate double wells), and says so by its
  residual;
* ``lobpcg``: the JAX LOBPCG (not independent of labels it made);

and prints, per sample, the stored E0 against the solver's, the difference,
the infidelity ``1 - <psi_stored, psi_solver>^2 h^d`` of the stored state
and, where the split stores E1, that difference too. Datasets labelled by
the JAX LOBPCG (the fastest labeller for large 3-D grids) are checked this
way against ARPACK. Exits with status 1 if any
``|dE0|`` exceeds ``--tol`` (Hartree), so it can gate a script.
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import cli
from pgmoe_jax import data as data_lib
from pgmoe_jax import infidelity
from pgmoe_jax import solvers
from pgmoe_jax.solvers.lanczos import lanczos

_DATA = flags.DEFINE_list("data", None, "Labelled dataset folders.",
                          required=True)
_NUM = flags.DEFINE_integer("num", 5, "Samples re-solved per split (the "
                            "first ones).")
METHODS = ("eigsh", "lanczos", "lobpcg")
_METHOD = flags.DEFINE_enum("method", "eigsh", list(METHODS),
                            "The independent solver (float64).")
_TOL = flags.DEFINE_float("tol", 1e-6, "Largest |E0 - E0_solver| in Ha "
                          "that passes.")


def check_split(ds, num: int, method: str):
  """Rows (index, E0, E0 solver, dE0, 1-F, dE1 or None) and the seconds."""
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; known: "
                     f"{', '.join(METHODS)}.")
  num = min(num, len(ds))
  num_states = 2 if ds.E1 is not None else 1
  potentials = np.asarray(ds.potentials[:num], np.float64)
  start = time.perf_counter()
  if method == "lanczos":
    energies, states = lanczos(potentials, ds.grid, num_states)
  else:
    result = solvers.solve(potentials, ds.grid, method=method,
                           num_states=num_states)
    energies = np.asarray(result.energies, np.float64).reshape(num, -1)
    states = np.asarray(result.states, np.float64).reshape(
        (num, num_states) + ds.grid.shape)
  seconds = time.perf_counter() - start
  stored = np.asarray(ds.psi0[:num], np.float64)
  infid = np.asarray(infidelity(stored, states[:, 0], ds.grid))
  e0 = np.asarray(ds.E0[:num], np.float64)
  de1 = (np.asarray(ds.E1[:num], np.float64) - energies[:, 1]
         if num_states > 1 else [None] * num)
  rows = [(int(ds.index[i]), float(e0[i]), float(energies[i, 0]),
           float(e0[i] - energies[i, 0]), float(infid[i]),
           None if de1[i] is None else float(de1[i])) for i in range(num)]
  return rows, seconds


def verdict(differences, tol: float) -> tuple[float, bool]:
  """``(largest |dE0|, whether it passes tol)``; NaN or inf never passes."""
  values = np.abs(np.asarray(differences, np.float64))
  if not values.size:
    return 0.0, True
  if np.isnan(values).any():
    return float("nan"), False
  worst = float(values.max())
  return worst, worst <= tol


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _NUM.value < 1:
    raise app.UsageError(f"--num={_NUM.value}: give at least 1.")
  cli.quiet_library_logs()
  jax.config.update("jax_enable_x64", True)
  try:
    splits = [data_lib.open_dataset(path) for path in _DATA.value]
  except ValueError as e:
    raise SystemExit(f"check_labels: {e}") from None
  differences = []
  for path, ds in zip(_DATA.value, splits):
    labeller = ds.spec.solver if ds.spec is not None else "?"
    try:
      rows, seconds = check_split(ds, _NUM.value, _METHOD.value)
    except RuntimeError as e:
      raise SystemExit(f"check_labels: {path}: {e}") from None
    print(f"\n{path}: {ds.grid}, labelled by {labeller}; {len(rows)} "
          f"samples re-solved by {_METHOD.value} in {seconds:.1f} s "
          f"({seconds / len(rows):.2f} s each, compilation included)\n")
    print("| sample | E0 stored (Ha) | E0 " + _METHOD.value +
          " (Ha) | dE0 (Ha) | 1-F | dE1 (Ha) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for index, e0, e0_ref, de0, infid, de1 in rows:
      de1_text = "-" if de1 is None else f"{de1:.2e}"
      print(f"| {index} | {e0:.10f} | {e0_ref:.10f} | {de0:.2e} | "
            f"{infid:.2e} | {de1_text} |")
      differences.append(de0)
  worst, ok = verdict(differences, _TOL.value)
  print(f"\nlargest |dE0| = {worst:.2e} Ha (tol {_TOL.value:g}): "
        f"{'pass' if ok else 'FAIL'}")
  if not ok:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
