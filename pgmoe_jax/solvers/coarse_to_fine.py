r"""The coarse-to-fine cascade: a parameter-free, fixed-cost ground-state solve.

The potential is block-averaged down a ladder of grids that halve per axis;
the ground state is found on the coarsest with a few fixed-cost LOBPCG
iterations (:func:`pgmoe_jax.solvers.fixed_iters.ground_state_fixed`), or
exactly by a dense ``eigh``, and carried up: at each finer level the
iterations start from ``|psi|`` of the level below, linearly interpolated
(:mod:`pgmoe_jax.multigrid`), optionally smoothed first by a few
Chebyshev-Jacobi sweeps (:mod:`pgmoe_jax.solvers.smoothing`). The coarse
levels find the right well for a fraction of a fine iteration's cost; the
sweeps remove the interpolation's grid-scale error for one stencil
application each; the fine iterations, whose preconditioner inverts the
kinetic operator exactly, remove what is left. The cost depends on the
grid, ``iters`` and ``sweeps`` only, never on the data, so the whole
batch runs as one jitted program.

:func:`cascade` is the public, validated, batched function;
:func:`cascade_unchecked` is the kernel PG-MoE's physics gate runs inside
the model. ``solve(V, grid, method="cascade", tol=...)`` continues from the
cascade with the block LOBPCG until each potential meets a residual
tolerance (:mod:`pgmoe_jax.solvers`).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import kinetic
from pgmoe_jax import multigrid
from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import check_fits
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed_unchecked
from pgmoe_jax.solvers.smoothing import jacobi_sweeps
from pgmoe_jax.solvers.smoothing import stepped_sweeps
from pgmoe_jax.variational import normalize_unchecked

__all__ = ["cascade", "cascade_unchecked", "check_iters", "check_sweeps",
           "eigh_ground_state", "level_grids"]

# Points per axis the stencil needs at the least, on every level.
_MIN_POINTS = 3


def check_iters(iters) -> tuple[int, ...]:
  """``iters`` as a tuple of nonnegative ints (one per level), or raises."""
  values = (iters,) if np.ndim(iters) == 0 else tuple(iters)
  if not values or any(
      isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer))
      or k < 0 for k in values):
    raise ValueError(
        f"iters={iters!r} must be a nonempty sequence of nonnegative "
        "integers: the fixed-cost iterations per level, coarsest first.")
  return tuple(int(k) for k in values)


def check_sweeps(sweeps, num_levels: int) -> tuple[int, ...] | None:
  """``sweeps`` as a tuple of nonnegative ints, one per level, or raises.

  ``None`` (and all zeros) is returned as ``None``: no smoothing, the
  cascade without sweeps. The coarsest level has no interpolated start to
  smooth, so its entry must be 0.
  """
  if sweeps is None:
    return None
  values = (sweeps,) if np.ndim(sweeps) == 0 else tuple(sweeps)
  if len(values) != num_levels or any(
      isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer))
      or k < 0 for k in values):
    raise ValueError(
        f"sweeps={sweeps!r} must be {num_levels} nonnegative integer(s), "
        "one per level like iters: the Chebyshev-Jacobi sweeps on each "
        "level's interpolated start, coarsest first.")
  if values[0]:
    raise ValueError(
        f"sweeps={sweeps!r}: the coarsest level starts from K's lowest "
        "mode, not from an interpolated state; its sweeps must be 0.")
  values = tuple(int(k) for k in values)
  return values if any(values) else None


def level_grids(grid: Grid, num_levels: int) -> tuple[Grid, ...]:
  """The cascade's grids, coarsest first, ending with ``grid`` itself.

  Each level halves the points per axis of the next finer one (the same
  box and boundary).

  Raises:
    ValueError: an axis does not divide by ``2**(num_levels - 1)``, or the
      coarsest level would have fewer than 3 points on an axis.
  """
  factor = 2**(num_levels - 1)
  if any(n % factor for n in grid.shape):
    raise ValueError(
        f"{num_levels} cascade levels halve {grid} {num_levels - 1} "
        f"time(s): every axis must divide by {factor}; give fewer levels.")
  coarsest = tuple(n // factor for n in grid.shape)
  if min(coarsest) < _MIN_POINTS:
    raise ValueError(
        f"{num_levels} cascade levels halve {grid} to {coarsest} points, "
        f"below {_MIN_POINTS} per axis (the stencil's minimum); give fewer "
        "levels.")
  return tuple(
      Grid(tuple(n // 2**(num_levels - 1 - i) for n in grid.shape),
           grid.length, grid.boundary) for i in range(num_levels))


def eigh_ground_state(v: jax.Array, grid: Grid):
  """Exact ``(E0 (b,), psi0 (b, *grid.shape))`` by a dense ``eigh``.

  The states have unit Euclidean norm and an arbitrary sign.
  """
  k = jnp.asarray(kinetic.kinetic_matrix(grid, sparse=False), v.dtype)
  h = k + jax.vmap(jnp.diag)(v.reshape(v.shape[0], -1))
  energies, vectors = jnp.linalg.eigh(h)
  return energies[:, 0], vectors[..., 0].reshape(v.shape)


def cascade_unchecked(v: jax.Array, grids: Sequence[Grid],
                      iters: Sequence[int], exact_coarsest: bool = False,
                      sweeps: Sequence[int] | None = None,
                      steps: Sequence[jax.Array] | None = None,
                      start_fn: Callable[[jax.Array], jax.Array] | None = None,
                      direction_fns: Sequence[Callable | None] | None = None):
  """The cascade on explicit levels, without input checks (a model's path).

  Args:
    v: ``(b, *grids[-1].shape)`` potentials on the finest level.
    grids: the levels, coarsest first; each divides the next finer one
      per axis (not necessarily by 2).
    iters: fixed-cost iterations per level, coarsest first; 0 at a level
      passes the interpolated state on (at the coarsest: K's lowest mode).
    exact_coarsest: solve the coarsest level by a dense ``eigh`` (its
      count in ``iters`` is then not used).
    sweeps: Chebyshev-Jacobi sweeps per level on the interpolated start,
      before that level's iterations (:func:`check_sweeps`); ``None``: none.
    steps: ``None`` (the sweeps are the Chebyshev filter), or per level
      ``None`` (that level's Chebyshev filter) or an array of ``sweeps[i]``
      step sizes: the sweeps of
      :func:`pgmoe_jax.solvers.smoothing.stepped_sweeps` instead (a
      learned smoother; differentiable in the steps).
    start_fn: ``None`` (the coarsest level's iterations start from K's
      lowest mode), or ``f(v_coarsest) -> start (b, *grids[0].shape)``,
      their start (a network's state, say; not with ``exact_coarsest``).
    direction_fns: ``None``, or per level ``None`` or ``f(v_level) ->
      (x -> d)``: called once with the level's potential, it returns the
      extra Rayleigh-Ritz direction of each of that level's iterations
      (``direction_fn`` of
      :func:`~pgmoe_jax.solvers.fixed_iters.ground_state_fixed_unchecked`;
      not on an exact level).

  Returns:
    ``(energies (b,), states (b, *grids[-1].shape))``: each energy is its
    state's Rayleigh quotient; states have unit Euclidean norm and a
    positive sum, except for a single exact level (``eigh``'s sign).
  """
  sweeps = (0,) * len(grids) if sweeps is None else sweeps
  # Each level's potential: block means of the next finer level's (the
  # same averages as from the finest, from 2^d times fewer points).
  level_v = [v]
  for finer, coarser in zip(grids[:0:-1], grids[-2::-1]):
    level_v.append(multigrid.block_mean(level_v[-1], finer, coarser.shape))
  x = None
  for i, (level, vs, k, s) in enumerate(
      zip(grids, level_v[::-1], iters, sweeps)):
    if i == 0 and exact_coarsest:
      energy, x = eigh_ground_state(vs, level)
      continue
    start = None
    if i == 0 and start_fn is not None:
      start = start_fn(vs)
    if x is not None:
      start = multigrid.interpolate(jnp.abs(x), level)
      if steps is None or steps[i] is None:
        start = jacobi_sweeps(start, vs, level, int(s))
      else:
        start = stepped_sweeps(start, vs, level, steps[i])
    direction_fn = None if direction_fns is None else direction_fns[i]
    if direction_fn is None:
      energy, x = ground_state_fixed(vs, level, int(k), start=start)
    else:
      energy, x = ground_state_fixed_unchecked(
          vs, level, int(k), start=start,
          direction_fn=direction_fn(vs))
  return energy, x


@functools.partial(jax.jit, static_argnames=("grids", "iters",
                                             "exact_coarsest", "sweeps"))
def _cascade_normalized(v, grids, iters, exact_coarsest, sweeps):
  energy, x = cascade_unchecked(v, grids, iters, exact_coarsest, sweeps)
  return energy, normalize_unchecked(x, grids[-1])


def cascade(V, grid: Grid, iters: int | Sequence[int], *,
            exact_coarsest: bool = False,
            sweeps: Sequence[int] | None = None):
  """Ground states by the coarse-to-fine cascade, at a fixed cost.

  ``iters`` gives the fixed-cost LOBPCG iterations per level, coarsest
  first; the levels halve per axis up to ``grid`` itself. On 64x64,
  ``(4, 2, 1)`` runs 4 iterations at 16x16, 2 at 32x32 and 1 at 64x64;
  ``(6, 2)`` runs 6 at 32x32 then 2 at 64x64; ``(4,)`` runs 4 at 64x64
  from the kinetic operator's lowest mode. Each level's potential is the
  block mean of the next finer one's, and each level starts from ``|psi|``
  of the one below, linearly interpolated. 0 iterations at a level
  interpolates only. ``sweeps`` smooths each level's interpolated start
  by Chebyshev-Jacobi sweeps (:mod:`pgmoe_jax.solvers.smoothing`) before its
  iterations: ``iters=(4, 2, 1), sweeps=(0, 4, 8)`` runs 4 sweeps on the
  32x32 start and 8 on the 64x64 one. A sweep costs one stencil
  application, a small fraction of a fine iteration.

  Jittable (``grid``, ``iters``, ``exact_coarsest`` and ``sweeps``
  static); value checks are skipped on traced input.

  Args:
    V: potentials in Hartree, ``(..., *grid.shape)``; float32 or float64
      (the computation runs in that dtype).
    grid: the grid.
    iters: an int (one level) or one nonnegative int per level.
    exact_coarsest: solve the coarsest level exactly by a dense ``eigh``
      (its entry in ``iters`` is then not used); refused where the dense
      matrices would not fit in memory.
    sweeps: ``None`` (no smoothing) or one nonnegative int per level, the
      coarsest 0.

  Returns:
    ``(energies (...), states (..., *grid.shape))``: each energy is its
    state's Rayleigh quotient (an upper bound on E0, in Hartree); states
    are normalised so that ``sum(psi**2) * prod(h) = 1`` and
    ``sum(psi) > 0``.

  Raises:
    ValueError: bad ``iters`` or ``sweeps``, levels that do not divide the
      grid or fall below 3 points per axis, a potential of the wrong shape,
      an empty batch, NaN/inf, or a dtype other than float32 and float64.
    InsufficientMemoryError: ``exact_coarsest`` on a level too large for a
      dense ``eigh``.
  """
  checks.check_grid(grid)
  iters = check_iters(iters)
  sweeps = check_sweeps(sweeps, len(iters))
  V = checks.as_float(V, "V")
  if V.dtype not in (jnp.float32, jnp.float64):
    raise ValueError(f"cascade runs in float32 or float64, got V of dtype "
                     f"{V.dtype}; cast V first.")
  grid.check_array("V", V)
  checks.check_nonempty("V", V, grid)
  checks.check_finite("V", V)
  grids = level_grids(grid, len(iters))
  batch = V.shape[:V.ndim - grid.ndim]
  b = int(np.prod(batch, dtype=np.int64))
  if exact_coarsest:
    n = grids[0].size
    # The dense H of every potential, eigh's workspace and its vectors.
    check_fits(3.0 * b * n * n * V.dtype.itemsize,
               f"cascade's exact coarsest level ({grids[0]}, dense eigh of "
               f"{b} potential(s))",
               "use exact_coarsest=False or more levels")
  energy, states = _cascade_normalized(V.reshape((b,) + grid.shape), grids,
                                       iters, bool(exact_coarsest), sweeps)
  return energy.reshape(batch), states.reshape(batch + grid.shape)
