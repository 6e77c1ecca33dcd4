r"""The reproduction studies behind RESULTS.md, as functions.

Each returns its Markdown table (what ``python -m experiments.reproduce``
prints):

* :func:`scaling`: parameters and forward time (batch 16, float32, jitted,
  best of ``repeats``, default 5, after a warm-up) of the dense baseline
  (hidden 512, 512) and PG-MoE (8x8 tiles, the quick-start expert, coarse
  envelope at half resolution) per grid size, 2-D, and the time of
  PG-MoE's coarse envelope alone (the physics gate). Models are untrained:
  size and speed do not depend on the weights.
* :func:`warm_start`: LOBPCG iterations to residuals of 1e-8 Ha and 1e-4 Ha
  started from a trained model's prediction (``init=model.predict(V)``),
  against the default cold start (lowest kinetic modes), a random start, the
  exact state rounded to float32 (the ceiling for any float32 predictor) and
  SciPy eigsh: the start's infidelity and residual, iterations, time per
  potential (every row, and the prediction, the best of the same number of
  passes after a warm-up), the agreement of the energies, and the residual
  history.
* :func:`ablation`: a trained PG-MoE with and without its experts
  (``use_experts=False``): what the gate alone gives.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import data
from pgmoe_jax import potentials
from pgmoe_jax import solvers
from pgmoe_jax import timing
from pgmoe_jax.evaluation import report
from pgmoe_jax.evaluation import scorer
from pgmoe_jax.grid import Grid
from pgmoe_jax.inference import load_model
from pgmoe_jax.kinetic import kinetic_modes
from pgmoe_jax.metrics import infidelity
from pgmoe_jax.models import build_model
from pgmoe_jax.models import count_params
from pgmoe_jax.variational import residual


def scaling(sizes=(32, 64, 128, 256), batch: int = 16,
            repeats: int = 5, envelope_solver: str = "fixed") -> str:
  """The scaling table (see the module docstring).

  Args:
    sizes: points per axis.
    batch: potentials per call.
    repeats: timed calls of each model and of the envelope (the best
      counts, after a warm-up call).
    envelope_solver: PG-MoE's gate, ``"fixed"`` (``default.py``'s) or
      ``"lobpcg"``; 6 iterations either way.
  """
  lines = ["## Scaling: parameters and forward time, 2-D, batch "
           f"{batch}, float32, gate {envelope_solver!r}", "",
           "| n per axis | dense params | PG-MoE params | ratio | dense ms | "
           "PG-MoE ms | dense / PG-MoE time | PG-MoE envelope alone ms |",
           "|---|---|---|---|---|---|---|---|"]
  for n in sizes:
    grid = Grid((n, n), 20.0)
    v = jnp.asarray(potentials.gaussian_wells(jax.random.key(0), grid,
                                              (batch,)), jnp.float32)
    row = []
    for config in (dict(name="dense", hidden=(512, 512)),
                   dict(name="pgmoe", tiles=n // 8, coarse=n // 2,
                        envelope_iters=6, envelope_solver=envelope_solver,
                        gate="envelope")):
      model = build_model(config, grid)
      variables = jax.jit(model.init)(jax.random.key(0), v[:1])
      apply = jax.jit(model.apply)
      row.append((count_params(variables["params"]),
                  timing.best_time(lambda: apply(variables, v), repeats)))
    # The physics gate alone (model is PG-MoE, the loop's last).
    envelope = jax.jit(lambda variables, v, model=model: model.apply(
        variables, v, method="coarse_envelope"))
    te = timing.best_time(lambda: envelope(variables, v), repeats)
    (pd, td), (pm, tm) = row
    lines.append(f"| {n} | {pd:,} | {pm:,} | {pd / pm:.0f}x | "
                 f"{1e3 * td:.1f} | {1e3 * tm:.1f} | {td / tm:.2f} | "
                 f"{1e3 * te:.1f} |")
  return "\n".join(lines) + "\n"


def _residuals(psi, v, grid) -> np.ndarray:
  """``||H psi - E psi|| / ||psi||`` per state, in Ha (the solver's norm)."""
  return np.asarray(residual(jnp.asarray(psi), jnp.asarray(v), grid))


def warm_start(workdir: str, data_path: str, num: int = 50,
               repeats: int = 5) -> str:
  """The warm-start tables (see the module docstring).

  Each start is solved to two residuals: 1e-8 Ha and 1e-4 Ha (about
  float32 round-off on these grids; the energy is then within roughly 1e-8
  Ha, since its error is quadratic in the state's). A random start and the
  exact state rounded to float32 bound what any warm start can gain.

  Args:
    workdir: the trained model's run.
    data_path: a labelled dataset on the model's grid.
    num: potentials (the dataset's first).
    repeats: timed passes of every timed row (each LOBPCG start, eigsh, the
      prediction): the best of each counts, after an untimed warm-up pass.
  """
  model = load_model(workdir)
  ds = data.open_dataset(data_path, grid=model.grid, what="the model")
  grid = model.grid
  v = np.asarray(ds.potentials[:num], np.float64)
  e0 = np.asarray(ds.E0[:num], np.float64)
  psi0 = np.asarray(ds.psi0[:num], np.float64)
  guess = np.asarray(model.predict(jnp.asarray(v, jnp.float32)), np.float64)
  rounded = psi0.astype(np.float32).astype(np.float64)
  noise = np.random.default_rng(0).standard_normal(
      (len(v), 2) + grid.shape)
  tols = (1e-8, 1e-4)

  def run(init, tol):
    solve = lambda: solvers.solve(v, grid, method="lobpcg", tol=tol,
                                  chunk_size=1, init=init)
    out, seconds = timing.timed_best(solve, repeats)
    return out, seconds / len(v)

  starts = (("cold: lowest kinetic modes (default)", None),
            ("cold: random", noise),
            ("warm: `init=model.predict(V)`", guess),
            ("warm: exact state rounded to float32", rounded))
  results = {label: [run(init, tol) for tol in tols]
             for label, init in starts}
  ref, t_ref = timing.timed_best(
      lambda: solvers.solve(v, grid, method="eigsh", tol=tols[0]), repeats)
  t_ref /= len(v)
  t_pred = timing.best_time(
      lambda: model.predict(jnp.asarray(v, jnp.float32)), repeats) / len(v)

  lines = [f"## Warm start: {len(v)} potentials of {data_path}, model "
           f"{workdir} ({model.num_params:,} parameters); times: best of "
           f"{repeats} passes after a warm-up", "",
           "| start | start 1-F median | start residual median (Ha) | "
           "iterations to 1e-8 Ha (mean) | ms per potential | "
           "max abs(E - E0) Ha | converged | iterations to 1e-4 Ha (mean) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  mean_iters = {}
  for label, init in starts:
    (tight, t_tight), (loose, _) = results[label]
    if init is None:  # the lowest kinetic mode, the same for every V
      first = np.broadcast_to(kinetic_modes(grid, 1)[0], v.shape)
    else:
      first = init if init.ndim == v.ndim else init[:, 0]
    start_inf = np.median(np.asarray(infidelity(first, psi0, grid)))
    start_res = np.median(_residuals(first, v, grid))
    mean_iters[label] = (np.mean(tight.iterations), np.mean(loose.iterations))
    err = np.max(np.abs(np.asarray(tight.energies)[:, 0] - e0))
    lines.append(
        f"| {label} | {start_inf:.1e} | {start_res:.1e} | "
        f"{mean_iters[label][0]:.1f} | {1e3 * t_tight:.2f} | {err:.1e} | "
        f"{int(np.sum(tight.converged))}/{len(v)} | "
        f"{mean_iters[label][1]:.1f} |")
  lines.append(f"| SciPy eigsh shift-invert | - | - | - | {1e3 * t_ref:.2f} "
               f"| {np.max(np.abs(ref.energies[:, 0] - e0)):.1e} | - | - |")
  # The residual history: LOBPCG converges linearly, at about the same rate
  # from the default, the model's and the exact start, so a start saves
  # iterations only by its log residual.
  counts = (1, 2, 4, 8, 12)
  lines += ["", "| start | " + " | ".join(f"residual after {k} (Ha)"
                                          for k in counts)
            + " | reduction per iteration, 1 to 8 |",
            "|---|" + "---:|" * (len(counts) + 1)]
  for label, init in starts:
    with warnings.catch_warnings():  # exactly k iterations never reach tol
      warnings.simplefilter("ignore", RuntimeWarning)
      history = [np.median(np.asarray(solvers.solve(
          v, grid, method="lobpcg", tol=1e-300, max_iters=k, chunk_size=1,
          init=init).residuals)[:, 0]) for k in counts]
    rate = (history[0] / history[3])**(1 / (counts[3] - counts[0]))
    lines.append(f"| {label} | " + " | ".join(f"{r:.1e}" for r in history)
                 + f" | {rate:.1f}x |")
  cold, model_row, ceiling = (mean_iters[starts[i][0]] for i in (0, 2, 3))
  ratio = lambda a, b: f"{a / b:.2f}" if b else "no iterations needed"
  lines += ["", f"warm-start iteration ratio (cold / warm) at 1e-8 Ha: "
            f"{ratio(cold[0], model_row[0])} (at 1e-4 Ha: "
            f"{ratio(cold[1], model_row[1])}); exact state in float32: "
            f"{ratio(cold[0], ceiling[0])} (at 1e-4 Ha: "
            f"{ratio(cold[1], ceiling[1])}). The prediction costs "
            f"{1e3 * t_pred:.3f} ms per potential (batched)."]
  return "\n".join(lines) + "\n"


def ablation(workdir: str, data_path: str) -> str:
  """A trained PG-MoE with and without its experts, on one dataset.

  ``use_experts=False`` leaves the experts' corrections out, so what
  remains is the gate's log-envelope (for ``gate="envelope"`` the coarse
  Hamiltonian's ground state, with no learned parameter at all).

  Raises:
    ValueError: the run is not a PG-MoE, or the data are on another grid.
  """
  model = load_model(workdir)
  if model.config.model.name != "pgmoe":
    raise ValueError(f"ablation needs a PG-MoE run; {workdir} holds a "
                     f"{model.config.model.name} model.")
  ds = data.open_dataset(data_path, grid=model.grid, what="the model")
  gate_only = model.replace(apply_kwargs={"use_experts": False})
  coarse = model.config.model.coarse
  lines = [f"## Ablation: {workdir} (gate {model.config.model.gate!r}, "
           f"coarse {'full grid' if coarse is None else coarse}) on "
           f"{data_path}", "",
           "| model | 1-F median | 1-F p90 | dE median (mHa) | dE p90 (mHa) | "
           "dE < 1.6 mHa |", "|---|---:|---:|---:|---:|---:|"]
  for label, predictor in (("PG-MoE", model),
                           ("gate alone (experts off)", gate_only)):
    summary = scorer.evaluate_predictor(predictor, ds,
                                        num_reference=0).summary()
    lines.append(f"| {label} | " + " | ".join(
        report.format_value(k, summary[k]) for k in (
            "infidelity_median", "infidelity_p90", "energy_error_mha_median",
            "energy_error_mha_p90", "frac_chemical_accuracy")) + " |")
  return "\n".join(lines) + "\n"
