"""The front benchmark: models against the cascade's settings, per split.

For each labelled split, every model on its grid and every cascade setting
(:func:`pgmoe_jax.evaluation.front.cascade_settings`) predicts the split's
potentials in float32; each state is scored by its energy under the exact
float64 stencil Hamiltonian against the split's float64 E0 (dE in mHa,
median and p90). Speed: one device-resident float32 batch, every candidate
a jitted function, compiled and warmed up first, then timed round-robin
(one call of each in turn, ``repeats`` rounds) so that a machine's drift
hits all of them alike; best and median states/s are kept. Each model's
matched-accuracy speed-up is read off the cascade's front
(:func:`pgmoe_jax.evaluation.front.matched_speedup`), for the median and
for the p90 dE, from the best times.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import variational
from pgmoe_jax.batching import pad_batch
from pgmoe_jax.evaluation import front as front_lib
from pgmoe_jax.grid import Grid
from pgmoe_jax.solvers.coarse_to_fine import cascade_unchecked
from pgmoe_jax.solvers.coarse_to_fine import check_sweeps
from pgmoe_jax.solvers.coarse_to_fine import level_grids


@dataclasses.dataclass
class Candidate:
  """One row of a split's table."""
  name: str
  kind: str  # "model" or "cascade"
  median_mha: float = float("nan")
  p90_mha: float = float("nan")
  best_rate: float = float("nan")  # states/s from the best time
  median_rate: float = float("nan")  # states/s from the median time
  speedup_median: front_lib.Speedup | None = None
  speedup_p90: front_lib.Speedup | None = None


@dataclasses.dataclass
class SplitFront:
  """A split's candidates and the conditions they were measured under."""
  split: str
  grid: Grid
  num_scored: int
  batch: int
  repeats: int
  rows: list[Candidate]


@functools.lru_cache(maxsize=None)
def cascade_fn(grid: Grid, iters: tuple[int, ...],
               sweeps: tuple[int, ...] | None = None) -> Callable:
  """A jitted ``V (b, *grid.shape) -> states`` of one cascade setting.

  One per (grid, setting), so every split on a grid reuses its compilation.
  """
  grids = level_grids(grid, len(iters))
  sweeps = check_sweeps(sweeps, len(iters))
  return jax.jit(lambda v: cascade_unchecked(v, grids, iters,
                                             sweeps=sweeps)[1])


@functools.lru_cache(maxsize=None)
def _scorer(grid: Grid) -> Callable:
  """A jitted float64 ``(psi, V) -> E[psi]`` on ``grid``."""
  return jax.jit(lambda psi, v: variational.energy(psi, v, grid))


def model_fn(predictor) -> Callable:
  """A model as ``V (b, *grid.shape) -> states``.

  A loaded model (:class:`pgmoe_jax.inference.Predictor`) is called
  through its jitted apply, without ``predict``'s input checks; any other
  object with ``predict`` (the evaluation's predictor protocol) through
  that.
  """
  apply = getattr(predictor, "_apply", None)
  if apply is None or not hasattr(predictor, "params"):
    return predictor.predict
  params = predictor.params
  return lambda v: apply(params, v)


def threads_text() -> str:
  """What the timings ran on: the device, and CPU threads on CPU."""
  device = jax.devices()[0]
  if device.platform == "cpu":
    try:
      cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
      cores = os.cpu_count() or 1
    return f"CPU, {cores} thread(s) (the process's CPU affinity)"
  return f"{device.device_kind} ({device.platform})"


def _energy_errors(fn: Callable, v: np.ndarray, e0: np.ndarray, grid: Grid,
                   batch: int) -> np.ndarray:
  """dE (mHa) of ``fn``'s float32 states, scored in float64, per sample."""
  errors = []
  score = _scorer(grid)
  for start in range(0, len(v), batch):
    part = v[start:start + batch]
    m = len(part)
    part = pad_batch(part, batch)  # one compilation per function
    psi = fn(jnp.asarray(part, jnp.float32))[:m]
    e = score(jnp.asarray(psi, jnp.float64), jnp.asarray(part[:m],
                                                         jnp.float64))
    errors.append(1e3 * (np.asarray(e) - e0[start:start + m]))
  return np.concatenate(errors)


def _round_robin(fns: Sequence[Callable], x, repeats: int,
                 progress: Callable[[str], None] | None) -> np.ndarray:
  """Seconds per call ``(repeats, len(fns))``, one call of each per round."""
  for fn in fns:  # compile and warm up, untimed
    jax.block_until_ready(fn(x))
    jax.block_until_ready(fn(x))
  times = np.zeros((repeats, len(fns)))
  for r in range(repeats):
    for i, fn in enumerate(fns):
      start = time.perf_counter()
      jax.block_until_ready(fn(x))
      times[r, i] = time.perf_counter() - start
    if progress:
      progress(f"timing round {r + 1}/{repeats}")
  return times


def measure_split(split: str, potentials: np.ndarray, e0: np.ndarray,
                  grid: Grid, models: dict[str, Any], *, batch: int = 256,
                  repeats: int = 9, settings=None,
                  progress: Callable[[str], None] | None = None
                  ) -> SplitFront:
  """The front of one split (see the module docstring).

  Args:
    split: the split's name (for the table).
    potentials: ``(n, *grid.shape)`` potentials (any float dtype; scored
      in float64, predicted in float32).
    e0: ``(n,)`` float64 ground-state energies (the labels).
    grid: the split's grid.
    models: name -> a loaded predictor on ``grid``.
    batch: the timed batch (and the scoring batch); the first ``batch``
      potentials, repeated if the split is smaller.
    repeats: timing rounds (at least 7).
    settings: cascade settings (:class:`pgmoe_jax.evaluation.front.Setting`
      or iterations per level alone); default
      :func:`pgmoe_jax.evaluation.front.cascade_settings` of ``grid``.
    progress: called with a short status line.

  Raises:
    ValueError: ``repeats < 7``, ``batch < 1``, mismatched shapes, or no
      cascade setting that fits the grid.
  """
  if repeats < 7:
    raise ValueError(f"repeats must be at least 7, got {repeats}.")
  if batch < 1:
    raise ValueError(f"batch must be positive, got {batch}.")
  potentials = np.asarray(potentials)
  e0 = np.asarray(e0, np.float64)
  if potentials.shape[1:] != grid.shape or e0.shape != potentials.shape[:1]:
    raise ValueError(f"{split}: potentials {potentials.shape} and E0 "
                     f"{e0.shape} do not match {grid}.")
  settings = front_lib.cascade_settings(grid) if settings is None else tuple(
      front_lib.as_setting(s) for s in settings)
  if not settings:
    raise ValueError(f"{split}: no cascade setting fits {grid}.")
  for name, model in models.items():
    if model.grid != grid:
      raise ValueError(f"{split}: model {name} works on {model.grid}, the "
                       f"split on {grid}.")
  rows, fns = [], []
  for name, model in models.items():
    rows.append(Candidate(name, "model"))
    fns.append(model_fn(model))
  for setting in settings:
    rows.append(Candidate(setting.name, "cascade"))
    fns.append(cascade_fn(grid, setting.iters, setting.sweeps))
  for row, fn in zip(rows, fns):
    if progress:
      progress(f"{split}: scoring {row.name}")
    errors = _energy_errors(fn, potentials, e0, grid, batch)
    row.median_mha = float(np.median(errors))
    row.p90_mha = float(np.percentile(errors, 90))
  timed_batch = potentials[np.arange(batch) % len(potentials)]
  x = jax.device_put(jnp.asarray(timed_batch, jnp.float32))
  times = _round_robin(fns, x, repeats, progress)
  for row, t in zip(rows, times.T):
    row.best_rate = batch / float(t.min())
    row.median_rate = batch / float(np.median(t))
  cascade_rows = [r for r in rows if r.kind == "cascade"]
  for row in rows:
    if row.kind != "model":
      continue
    row.speedup_median = front_lib.matched_speedup(
        row.median_mha, row.best_rate,
        [front_lib.Point(r.name, r.median_mha, r.best_rate)
         for r in cascade_rows])
    row.speedup_p90 = front_lib.matched_speedup(
        row.p90_mha, row.best_rate,
        [front_lib.Point(r.name, r.p90_mha, r.best_rate)
         for r in cascade_rows])
  return SplitFront(split, grid, len(potentials), batch, repeats, rows)


def format_front(result: SplitFront) -> str:
  """A split's Markdown table (states/s best and median, dE, speed-ups)."""
  median_front = {p.name for p in front_lib.pareto_front(
      [front_lib.Point(r.name, r.median_mha, r.best_rate)
       for r in result.rows if r.kind == "cascade"])}
  lines = [
      f"### {result.split} ({result.grid}, {result.num_scored} scored, "
      f"float32, batch {result.batch}, best/median of {result.repeats} "
      "round-robin rounds)",
      "",
      "| candidate | states/s (best) | states/s (median) | median dE (mHa) "
      "| p90 dE (mHa) | speed-up at median dE | speed-up at p90 dE |",
      "|---|---:|---:|---:|---:|---:|---:|"]
  for r in result.rows:
    name = r.name + (" *" if r.name in median_front else "")
    up_m = str(r.speedup_median) if r.speedup_median else ""
    up_p = str(r.speedup_p90) if r.speedup_p90 else ""
    lines.append(f"| {name} | {r.best_rate:,.0f} | {r.median_rate:,.0f} | "
                 f"{r.median_mha:.3g} | {r.p90_mha:.3g} | {up_m} | {up_p} |")
  lines.append("")
  lines.append("`*`: on the cascade's front for the median dE. Speed-ups: "
               "the model's best states/s over the front's at the model's "
               "dE (log-log interpolation); `>=`: more accurate than every "
               "setting (against the most accurate); `(fastest)`: less "
               "accurate than every setting (against the fastest).")
  return "\n".join(lines)


def plot_front(results: Sequence[SplitFront], path: str) -> str:
  """Median dE against states/s, log-log, a panel per split; saves ``path``.

  The cascade's settings are circles joined along their front; models are
  stars. Needs matplotlib (the ``plots`` extra).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(results)
  cols = min(n, 4)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows),
                           squeeze=False)
  for ax, result in zip(axes.ravel(), results):
    cascade = [r for r in result.rows if r.kind == "cascade"]
    ax.scatter([r.best_rate for r in cascade],
               [max(r.median_mha, front_lib.DE_FLOOR_MHA) for r in cascade],
               c="tab:blue", s=18, label="cascade settings")
    front = front_lib.pareto_front(
        [front_lib.Point(r.name, r.median_mha, r.best_rate) for r in cascade])
    ax.plot([p.rate for p in front],
            [max(p.error, front_lib.DE_FLOOR_MHA) for p in front],
            c="tab:blue", lw=1)
    for r in cascade:
      ax.annotate(r.name.removeprefix("cascade "), (r.best_rate, max(
          r.median_mha, front_lib.DE_FLOOR_MHA)), fontsize=6)
    for i, r in enumerate(x for x in result.rows if x.kind == "model"):
      ax.scatter([r.best_rate], [max(r.median_mha, front_lib.DE_FLOOR_MHA)],
                 marker="*", s=120, c=f"C{i + 1}", label=r.name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(result.split, fontsize=9)
    ax.set_xlabel("states/s")
    ax.set_ylabel("median dE (mHa)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
  for ax in axes.ravel()[n:]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
