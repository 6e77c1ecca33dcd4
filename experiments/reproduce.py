r"""Reproduce the paper's claims and go past them (issue 5), part by part.

    python -m experiments.reproduce --parts=scaling,warm_start \
        [--workdir=runs/quickstart --data=data/quickstart/test_interp]

Parts built so far:

* ``scaling``: parameters and forward time (batch 16, float32, jitted, best
  of 5) of the dense baseline (hidden 512, 512) and PG-MoE (8x8 tiles, the
  quick-start expert, coarse envelope at half resolution) at 32, 64, 128 and
  256 points per axis, 2-D. Models are untrained: size and speed do not
  depend on the weights.
* ``warm_start``: LOBPCG to a residual of 1e-8 Ha started from a trained
  model's prediction (``init=model.predict(V)``) against the default cold
  start (lowest kinetic modes) and against SciPy eigsh, on the first
  ``--num`` potentials of ``--data``: iterations, time per potential and the
  agreement of the energies.

Still to come (see the issue): the grid of runs over models, losses and
training sizes at 32x32, the 64x64 comparison and RESULTS.md.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

_PARTS = flags.DEFINE_list("parts", ["scaling", "warm_start"],
                           "Parts to run: scaling, warm_start.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart",
                               "Trained model for warm_start.")
_DATA = flags.DEFINE_string("data", "data/quickstart/test_interp",
                            "Dataset for warm_start.")
_NUM = flags.DEFINE_integer("num", 50, "Potentials for warm_start.")
_SIZES = flags.DEFINE_list("sizes", ["32", "64", "128", "256"],
                           "Points per axis for scaling.")


def _best_time(fn, repeats=5):
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def scaling() -> None:
  from pgmoe_jax import Grid  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import potentials  # pylint: disable=g-import-not-at-top
  from pgmoe_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from pgmoe_jax.models import count_params  # pylint: disable=g-import-not-at-top

  print("\n## Scaling: parameters and forward time, 2-D, batch 16, float32\n")
  print("| n per axis | dense params | PG-MoE params | ratio | dense ms | "
        "PG-MoE ms | dense / PG-MoE time |")
  print("|---|---|---|---|---|---|---|")
  for n in (int(s) for s in _SIZES.value):
    grid = Grid((n, n), 20.0)
    v = jnp.asarray(potentials.gaussian_wells(jax.random.key(0), grid, (16,)),
                    jnp.float32)
    row = []
    for config in (dict(name="dense", hidden=(512, 512)),
                   dict(name="pgmoe", tiles=n // 8, coarse=n // 2,
                        envelope_iters=6, gate="envelope")):
      model = build_model(config, grid)
      variables = jax.jit(model.init)(jax.random.key(0), v[:1])
      apply = jax.jit(model.apply)
      row.append((count_params(variables["params"]),
                  _best_time(lambda: apply(variables, v))))
    (pd, td), (pm, tm) = row
    print(f"| {n} | {pd:,} | {pm:,} | {pd / pm:.0f}x | {1e3 * td:.1f} | "
          f"{1e3 * tm:.1f} | {td / tm:.2f} |")


def warm_start() -> None:
  from pgmoe_jax import data  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import load_model  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import solvers  # pylint: disable=g-import-not-at-top

  model = load_model(_WORKDIR.value)
  ds = data.open_dataset(_DATA.value, grid=model.grid)
  grid = model.grid
  v = np.asarray(ds.potentials[:_NUM.value])
  e0 = np.asarray(ds.E0[:_NUM.value])
  guess = np.asarray(model.predict(jnp.asarray(v, jnp.float32)), np.float64)
  tol = 1e-8

  def run(init):
    solve = lambda: solvers.solve(v, grid, method="lobpcg", tol=tol,
                                  chunk_size=1, init=init)
    jax.block_until_ready(solve().energies)  # compile every shape involved
    start = time.perf_counter()
    out = solve()
    jax.block_until_ready(out.energies)
    return out, (time.perf_counter() - start) / len(v)

  warm, t_warm = run(guess)
  cold, t_cold = run(None)
  start = time.perf_counter()
  ref = solvers.solve(v, grid, method="eigsh", tol=tol)
  t_ref = (time.perf_counter() - start) / len(v)
  t_pred = _best_time(lambda: model.predict(jnp.asarray(v, jnp.float32))
                      ) / len(v)
  print(f"\n## Warm start: {len(v)} potentials of {_DATA.value}, model "
        f"{_WORKDIR.value} ({model.num_params:,} parameters), residual "
        f"{tol:g} Ha\n")
  print("| start | iterations mean | iterations median | ms per potential "
        "| max abs(E - E0) Ha | converged |")
  print("|---|---|---|---|---|---|")
  for label, out, t in (("cold (kinetic modes)", cold, t_cold),
                        ("warm (model prediction)", warm, t_warm)):
    its = np.asarray(out.iterations)
    err = np.max(np.abs(np.asarray(out.energies)[:, 0] - e0))
    print(f"| {label} | {its.mean():.1f} | {np.median(its):.0f} | "
          f"{1e3 * t:.2f} | {err:.1e} | {int(np.sum(out.converged))}/"
          f"{len(v)} |")
  print(f"| eigsh shift-invert | - | - | {1e3 * t_ref:.2f} | "
        f"{np.max(np.abs(ref.energies[:, 0] - e0)):.1e} | - |")
  ratio = np.mean(cold.iterations) / np.mean(warm.iterations)
  print(f"\nwarm-start iteration ratio (cold / warm): {ratio:.2f}; the "
        f"prediction itself costs {1e3 * t_pred:.3f} ms per potential "
        "(batched).")


PARTS = {"scaling": scaling, "warm_start": warm_start}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_PARTS.value) - set(PARTS))
  if unknown:
    raise app.UsageError(f"Unknown part(s) {', '.join(unknown)}; known: "
                         f"{', '.join(PARTS)}.")
  jax.config.update("jax_enable_x64", True)
  print(f"# reproduce on {jax.devices()[0].device_kind}")
  for name in _PARTS.value:
    PARTS[name]()


if __name__ == "__main__":
  app.run(main)
