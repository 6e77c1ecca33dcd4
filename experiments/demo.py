r"""Demo: ground states of a few potentials of every family.

    python -m experiments.demo [--grid=48 --ndim=2 --length=20 --num=2]

For each potential family it samples ``--num`` potentials, solves for the two
lowest states with the JAX LOBPCG (warm, i.e. after compilation) and with
SciPy's shift-invert eigsh, and prints E0, the gap E1 - E0, the residual, the
time per potential of both solvers, and how well they agree. Runs on the CPU
in float64 in well under a minute.
"""

from __future__ import annotations

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import cli
from pgmoe_jax import potentials
from pgmoe_jax import solvers
from pgmoe_jax.metrics import fidelity
from pgmoe_jax.timing import timed_best

_GRID = flags.DEFINE_string("grid", "48", "Points per axis: 48 or 48,64.")
_NDIM = flags.DEFINE_integer("ndim", 2, "Dimension when --grid is one number.")
_LENGTH = flags.DEFINE_string("length", "20", "Box length(s) in bohr.")
_NUM = flags.DEFINE_integer("num", 2, "Potentials per family.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed of the potentials.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  jax.config.update("jax_enable_x64", True)

  grid = cli.grid_from_flags(_GRID.value, _LENGTH.value, ndim=_NDIM.value)
  num = _NUM.value
  print(f"pgmoe_jax demo on {grid}, {num} potential(s) per family, float64, "
        f"{jax.devices()[0].platform}\n")
  header = (f"{'family':<15} {'#':>2} {'E0 (Ha)':>11} {'gap (Ha)':>9} "
            f"{'residual':>9} {'iters':>5} {'lobpcg ms':>9} {'eigsh ms':>9} "
            f"{'|dE0|':>8} {'1-F':>8}")
  print(header)
  print("-" * len(header))
  key = jax.random.key(_SEED.value)
  for name in sorted(potentials.FAMILIES):
    key, sub = jax.random.split(key)
    v = np.asarray(potentials.sample(name, sub, grid, (num,)))
    solve = lambda m, v=v: solvers.solve(v, grid, method=m, num_states=2)
    # One timed pass each after an untimed warm-up (compilation excluded).
    fast, t_fast = timed_best(lambda: solve("lobpcg"), 1)
    ref, t_ref = timed_best(lambda: solve("eigsh"), 1)
    inf = 1 - np.asarray(fidelity(fast.states[:, 0], ref.states[:, 0], grid))
    for i in range(num):
      e = np.asarray(fast.energies[i])
      print(f"{name:<15} {i:>2} {e[0]:>11.6f} {e[1] - e[0]:>9.5f} "
            f"{float(fast.residuals[i, 0]):>9.1e} "
            f"{int(fast.iterations[i]):>5} {1e3 * t_fast / num:>9.2f} "
            f"{1e3 * t_ref / num:>9.2f} "
            f"{abs(e[0] - ref.energies[i, 0]):>8.1e} {max(inf[i], 0.0):>8.1e}")
  print("\nlobpcg: JAX LOBPCG with the sine-transform preconditioner, batched "
        "per family; eigsh: SciPy shift-invert (time per potential, one pass "
        "each after a warm-up, so compilation is excluded). |dE0| and 1-F "
        "compare the two.")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("demo"))
