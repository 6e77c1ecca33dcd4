r"""Ground-state solvers for :math:`H = -\tfrac12\Delta_h + V`.

Three methods solve the same discretisation (:mod:`pgmoe_jax.hamiltonian`)
to a residual tolerance:

* ``"eigsh"`` (:mod:`pgmoe_jax.solvers.eigsh`): SciPy ARPACK in shift-invert
  mode, float64 on the CPU; the reference.
* ``"lobpcg"`` (:mod:`pgmoe_jax.solvers.lobpcg`): a matrix-free JAX LOBPCG,
  jitted and batched, in the input's dtype; an initial guess (say a
  network's prediction) warm-starts it.
* ``"cascade"``: the same LOBPCG started from the coarse-to-fine cascade
  (:mod:`pgmoe_jax.solvers.coarse_to_fine`), the fastest for many potentials.

:func:`cascade` itself is the fixed-cost solve (no tolerance): the
baseline every learned model's speed is measured against.

:func:`solve` returns every pair with its residual and a convergence flag;
:func:`ground_state` returns ``(E, psi)`` and refuses an unconverged answer.
Both work on ``V - min(V)`` and add ``min(V)`` back, return energies that
are their states' Rayleigh quotients (in Hartree), and states normalised so
that ``sum(psi**2) * prod(h) = 1`` and ``sum(psi) > 0``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import kinetic
from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import check_fits
from pgmoe_jax.solvers import coarse_to_fine
from pgmoe_jax.solvers.coarse_to_fine import cascade
from pgmoe_jax.solvers.eigsh import eigsh_batch
from pgmoe_jax.solvers import lobpcg
from pgmoe_jax.solvers.lobpcg import NODE_TOLERANCE
from pgmoe_jax.solvers.lobpcg import lobpcg_batch
from pgmoe_jax.solvers.lobpcg import node_fraction
from pgmoe_jax.variational import normalize_unchecked
from pgmoe_jax.variational import residual_norm

__all__ = ["METHODS", "NODE_TOLERANCE", "NotConvergedError", "SolverResult",
           "cascade", "default_cascade_iters", "default_tol", "eigsh_batch",
           "ground_state", "lobpcg_batch", "node_fraction", "solve"]

METHODS = ("eigsh", "lobpcg", "cascade")


class NotConvergedError(RuntimeError):
  """A solver did not reach the residual tolerance for some potential."""


class SolverResult(NamedTuple):
  """What a solver found, per potential (leading batch axes of ``V``).

  Attributes:
    energies: ``(..., num_states)`` eigenvalues in Hartree, ascending.
    states: ``(..., num_states, *grid.shape)`` normalised eigenstates.
    residuals: ``(..., num_states)`` ``||H psi - E psi|| / ||psi||`` in Ha.
    iterations: ``(...)`` iterations used (LOBPCG iterations, or ARPACK's
      count of operator applications for eigsh).
    converged: ``(...)`` whether every requested state met the tolerance
      and the ground state is nodeless (at most :data:`NODE_TOLERANCE` of
      its squared norm on its minority sign; LOBPCG restarts from
      ``|psi|`` before it gives up on one with a node).
  """
  energies: np.ndarray | jax.Array
  states: np.ndarray | jax.Array
  residuals: np.ndarray | jax.Array
  iterations: np.ndarray | jax.Array
  converged: np.ndarray | jax.Array


def default_tol(dtype, grid: Grid) -> float:
  """The residual tolerance (Ha) :func:`solve` uses when none is given.

  1e-8 in float64 and 1e-4 in float32, raised on fine grids to five times
  the rounding floor: LOBPCG's residual stalls at about ``eps * ||K||``
  (measured: 1-3x, for ``||K|| = sum_a 2 / h_a^2`` the kinetic operator's
  norm), which in float32 is 2.5e-5 Ha at 128x128 and 1e-4 Ha at 256x256.

  What a tolerance buys: an energy error of about ``tol**2 / gap`` when the
  state's nearest partner is well separated, but up to about ``tol / 5``
  for a near-degenerate pair (a double well's tunnelling doublet) whose
  partner the block has not caught, because the residual of a mixture of
  the pair is at most the splitting. Use float64 (or a larger
  ``block_size``) where such energies matter.
  """
  eps = float(jnp.finfo(dtype).eps)
  base = 1e-8 if jnp.finfo(dtype).bits == 64 else 1e-4
  return max(base, 5.0 * eps * kinetic.kinetic_norm(grid))


def _check_memory(method: str, grid: Grid, batch: int, chunk: int,
                  block: int, dtype) -> None:
  """Refuses a solve that cannot fit (coarse estimates; see memory)."""
  n = grid.size
  if method == "eigsh":
    # One potential at a time: the sparse H and its LU factors (fill-in
    # grows like N^1.5 in 2-D and N^(4/3) x 40 in 3-D) and ARPACK's basis.
    fill = {1: 5.0 * n, 2: 2.0 * n**1.5, 3: 40.0 * n**(4 / 3)}[grid.ndim]
    nbytes = 12.0 * fill + 8.0 * n * 40
    what, fix = (f"eigsh (shift-invert) on {grid}",
                 "use method='lobpcg' or a smaller grid")
    check_fits(nbytes, what, fix, host=True)
  else:
    # The start blocks of the whole batch, and a chunk's working blocks.
    nbytes = (batch + 16.0 * chunk) * block * n * np.dtype(dtype).itemsize
    check_fits(nbytes, f"LOBPCG on {chunk} potential(s) at once on {grid}",
               "pass a smaller chunk_size, or use a smaller grid")


def _prepare_init(init, potentials, grid: Grid, block_size: int, dtype):
  """Returns the LOBPCG start ``(b, block_size, *grid.shape)``."""
  batch = potentials.shape[:-grid.ndim]
  b = int(np.prod(batch, dtype=np.int64))
  if init is None:
    start = kinetic.kinetic_modes(grid, block_size)
    return jnp.broadcast_to(jnp.asarray(start, dtype),
                            (b, block_size) + grid.shape)
  init = checks.as_float(init, "init")
  grid.check_array("init", init)
  if init.ndim == potentials.ndim:
    init = init[..., None, *([slice(None)] * grid.ndim)]
  if init.ndim != potentials.ndim + 1 or init.shape[:len(batch)] != batch:
    raise ValueError(
        f"init has shape {init.shape}; expected one state per potential "
        f"{batch + grid.shape} or a few, {batch + ('j',) + grid.shape} with "
        f"j <= block_size = {block_size}.")
  given = init.shape[len(batch)]
  if given > block_size:
    raise ValueError(
        f"init holds {given} states per potential but the block size is "
        f"{block_size}; pass at most block_size states or raise block_size.")
  checks.check_finite("init", init)
  norms = np.asarray(jnp.sum(init * init, axis=grid.axes))
  if (norms == 0).any():
    raise ValueError("init holds an identically zero state; give a nonzero "
                     "guess or init=None for the default start.")
  init = init.reshape((b, given) + grid.shape).astype(dtype)
  return lobpcg.pad_block(init, grid, block_size)


def solve(V, grid: Grid, *, method: str = "eigsh", num_states: int = 1,
          tol: float | None = None, init=None, max_iters: int = 500,
          block_size: int | None = None,
          chunk_size: int | None = None,
          cascade_iters: Sequence[int] | None = None) -> SolverResult:
  r"""The lowest ``num_states`` eigenpairs of :math:`H` for each potential.

  Args:
    V: potentials in Hartree, ``(..., *grid.shape)``; leading axes are a
      batch.
    grid: the grid.
    method: ``"eigsh"`` (SciPy shift-invert, CPU, float64), ``"lobpcg"``
      (JAX, jitted, batched, in ``V``'s dtype), or ``"cascade"``: the
      coarse-to-fine cascade (:func:`pgmoe_jax.solvers.cascade`)
      as the start of the same batched LOBPCG, the fastest way to many
      ground states (its vmapped loop stops each potential when it
      converges; on CPU a batch waits for its slowest member).
    num_states: how many of the lowest states to return (>= 1).
    tol: target residual ``||H psi - E psi|| / ||psi||`` in Hartree; defaults
      to :func:`default_tol` (1e-8 in float64, 1e-4 in float32, more on
      grids finer than 128x128 in float32). LOBPCG iterates until every
      requested state meets it; eigsh always runs to machine precision and
      uses ``tol`` only for the ``converged`` flag.
    init: LOBPCG only: an initial guess, one state per potential
      ``(..., *grid.shape)`` or a few ``(..., j, *grid.shape)``; the block
      is filled up with low kinetic modes. ``None`` starts from the lowest
      kinetic modes (deterministic, no random numbers).
    max_iters: LOBPCG iteration cap.
    block_size: LOBPCG block size, ``>= num_states``; defaults to
      ``num_states + 1`` (one guard vector keeps near-degenerate pairs, such
      as symmetric double wells, converging).
    chunk_size: LOBPCG only: solve the batch in chunks of this many
      potentials (memory; on CPU, ``1`` is fastest per potential because a
      batch iterates until its slowest member converges).
    cascade_iters: ``method="cascade"`` only: the cascade's fixed-cost
      iterations per level, coarsest first; default
      :func:`default_cascade_iters`. A ground state (``num_states=1``)
      whose residual already meets ``tol`` after the cascade is returned
      as it is (0 LOBPCG iterations); the others continue with LOBPCG.

  What ``converged`` certifies: the residual, and for the ground state that
  it has no node (an excited eigenvector in the start block has a zero
  residual too; a ground state with a node that met the tolerance is
  restarted from ``|psi|`` up to twice). What no local solver can
  certify: a nodeless state settled in the upper well of a double well
  whose lower well it does not reach above round-off; its residual and
  sign look like a ground state's. Starting from the default kinetic
  modes (or the cascade, for ``method="cascade"``) avoids such starts.

  Returns:
    A :class:`SolverResult`; NumPy arrays for eigsh, JAX arrays for LOBPCG.
    Every energy is its returned state's Rayleigh quotient and every
    residual is measured afresh on that pair, so the two never disagree. A
    potential whose residual stays above ``tol`` is flagged in ``converged``
    (its pair is still the best found) and a ``RuntimeWarning`` is emitted:
    ``solve`` serves batch work such as data generation, which re-solves or
    drops the flagged potentials and keeps the rest. :func:`ground_state`
    raises instead.

  Raises:
    ValueError: an unknown method, ``num_states < 1``, a potential of the wrong
      shape, an empty batch or NaN/inf, a bad ``init``,
      ``block_size < num_states``.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; known methods: "
                     f"{', '.join(METHODS)}.")
  if not isinstance(num_states, (int, np.integer)) or num_states < 1:
    raise ValueError(f"num_states must be a positive integer, got "
                     f"{num_states!r}.")
  checks.check_grid(grid)
  V = checks.as_float(V, "V")
  grid.check_array("V", V)
  checks.check_nonempty("V", V, grid)
  checks.check_finite("V", V)
  if num_states >= grid.size:
    raise ValueError(f"num_states={num_states} must be below the number of "
                     f"grid points {grid.size}.")
  tol = default_tol(V.dtype, grid) if tol is None else float(tol)
  if not tol > 0:
    raise ValueError(f"tol must be positive, got {tol}.")
  batch = V.shape[:V.ndim - grid.ndim]
  b = int(np.prod(batch, dtype=np.int64))
  flat = V.reshape((b,) + grid.shape)
  # H - min(V) has the same eigenvectors and energies lower by min(V): the
  # solvers work on V - min(V) >= 0, so a huge offset (V = 1e30 everywhere)
  # neither swamps the kinetic energy in the residual nor makes eigsh's
  # shifted matrix singular. Energies get min(V) back at the end.
  column = (b,) + (1,) * grid.ndim

  if cascade_iters is not None and method != "cascade":
    raise ValueError(f"cascade_iters is only used by method='cascade', not "
                     f"{method!r}.")
  if method == "eigsh":
    if init is not None:
      raise ValueError("init is only used by method='lobpcg'; eigsh "
                       "(shift-invert) does not take an initial guess.")
    _check_memory("eigsh", grid, 1, 1, num_states, np.float64)
    flat = np.asarray(flat, np.float64)
    offset = flat.reshape(b, -1).min(axis=1)
    e, u, res, its, conv = eigsh_batch(flat - offset.reshape(column), grid,
                                       num_states, tol)
    e = e + offset[:, None]
    u = u * (np.sign(u.sum(-1, keepdims=True)) + (u.sum(-1, keepdims=True)
                                                  == 0))
    u = u / np.sqrt(grid.volume_element)
    dtype = np.dtype(V.dtype)
    result = SolverResult(
        e.reshape(batch + (num_states,)).astype(dtype),
        u.reshape(batch + (num_states,) + grid.shape).astype(dtype),
        res.reshape(batch + (num_states,)), its.reshape(batch),
        conv.reshape(batch))
  else:
    block_size = num_states + 1 if block_size is None else int(block_size)
    if not num_states <= block_size < grid.size:
      raise ValueError(f"block_size={block_size} must be >= num_states="
                       f"{num_states} and below the number of grid points.")
    chunk = b if chunk_size is None else int(chunk_size)
    if chunk < 1:
      raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    _check_memory("lobpcg", grid, b, chunk, block_size, V.dtype)
    offset = jnp.min(flat.reshape(b, -1), axis=1)
    flat = flat - offset.reshape(column)
    run = functools.partial(lobpcg.run_chunks, grid=grid, tol=tol,
                            chunk=chunk, num_states=num_states,
                            max_iters=int(max_iters))
    restarts = lobpcg.RESTARTS if max_iters else 0
    if method == "cascade":
      if init is not None:
        raise ValueError("init is only used by method='lobpcg'; the cascade "
                         "makes its own start.")
      if V.dtype not in (jnp.float32, jnp.float64):
        raise ValueError(f"method='cascade' runs in float32 or float64, got "
                         f"V of dtype {V.dtype}.")
      iters = (default_cascade_iters(grid) if cascade_iters is None
               else coarse_to_fine.check_iters(cascade_iters))
      grids = coarse_to_fine.level_grids(grid, len(iters))
      # The cascade is cheap and batched: whole batches of up to 1,024
      # (LOBPCG's chunk_size is for LOBPCG alone).
      step = max(chunk, min(b, 1024))
      x_c, e_c, r_c = (jnp.concatenate(parts) for parts in zip(*[
          _cascade_start(flat[i:i + step], grids, iters)
          for i in range(0, b, step)]))
      states = normalize_unchecked(x_c, grid)[:, None]
      e, res = e_c[:, None], r_c[:, None]
      its = jnp.zeros((b,), jnp.int32)
      nodal = node_fraction(x_c, grid) > NODE_TOLERANCE
      # Potentials the cascade already solved to the tolerance (ground
      # state only) are done; LOBPCG continues from it for the rest.
      done = (r_c <= tol) & ~nodal if num_states == 1 else jnp.zeros(
          (b,), bool)
      todo = np.flatnonzero(~np.asarray(done))
      if todo.size:
        # The cascade's state is nodeless, so the guard vectors start from
        # K's second mode (the node check catches an exact eigenvector).
        x0 = lobpcg.pad_block(x_c[todo][:, None], grid, block_size,
                              first=1)
        out = lobpcg.run_with_restarts(run, flat[todo], x0, grid=grid,
                                       tol=tol, block_size=block_size,
                                       restarts=restarts)
        if todo.size == b:  # always so for num_states > 1
          e, states, res, its, nodal = out
        else:  # one state: the cascade's rows keep their pairs
          e, states, res, its, nodal = (
              old.at[todo].set(new) for old, new in zip(
                  (e, states, res, its, nodal), out))
    else:
      x0 = _prepare_init(init, V, grid, block_size, V.dtype)
      e, states, res, its, nodal = lobpcg.run_with_restarts(
          run, flat, x0, grid=grid, tol=tol, block_size=block_size,
          restarts=restarts)
    e = e + offset[:, None]
    result = SolverResult(
        e.reshape(batch + (num_states,)),
        states.reshape(batch + (num_states,) + grid.shape),
        res.reshape(batch + (num_states,)), its.reshape(batch),
        (jnp.all(res <= tol, axis=-1) & ~nodal).reshape(batch))

  failed = int(np.size(result.converged) - np.count_nonzero(result.converged))
  if failed:
    warnings.warn(f"{method}: {_failure_text(result, tol)}; raise "
                  "max_iters or block_size, or check the potential.",
                  RuntimeWarning, stacklevel=2)
  return result


def default_cascade_iters(grid: Grid) -> tuple[int, ...]:
  """The cascade before ``solve(method="cascade")``'s LOBPCG on ``grid``.

  Up to two halvings per axis while every level keeps at least 8 points
  per axis: 6 iterations on the coarsest level, 2 on a middle one and 2
  on the grid itself (potentials whose residual then meets the tolerance
  skip LOBPCG). ``(0,)`` where the grid does not halve: LOBPCG from K's
  lowest mode.
  """
  halvings = 0
  while halvings < 2 and all(
      n % 2**(halvings + 1) == 0 and n // 2**(halvings + 1) >= 8
      for n in grid.shape):
    halvings += 1
  if not halvings:
    return (0,)
  return (6,) + (2,) * halvings


@functools.partial(jax.jit, static_argnames=("grids", "iters"))
def _cascade_start(v, grids, iters):
  """The cascade's ``(states (unit norm), energies, residual norms)``."""
  energy, x = coarse_to_fine.cascade_unchecked(v, grids, iters)
  return x, energy, residual_norm(x, v, grids[-1], energy=energy)


def _failure_text(result: SolverResult, tol: float) -> str:
  """Says how many potentials failed, and how (residual or node)."""
  converged = np.asarray(result.converged).ravel()
  residuals = np.asarray(result.residuals)
  total = max(converged.size, 1)
  met = np.all(residuals.reshape(converged.size, -1) <= tol, axis=-1)
  nodal = int(np.count_nonzero(~converged & met))
  slow = int(np.count_nonzero(~converged & ~met))
  parts = []
  if slow:
    parts.append(f"{slow} of {total} potential(s) did not reach the residual "
                 f"tolerance {tol:g} Ha (largest residual "
                 f"{float(np.max(residuals)):.3g} Ha)")
  if nodal:
    parts.append(
        f"{nodal} of {total} potential(s) ended on a state with a node "
        f"(over {NODE_TOLERANCE:g} of its norm on the minority sign): an "
        "excited state, not the ground state")
  return "; ".join(parts)


def ground_state(V, grid: Grid, *, method: str = "eigsh", num_states: int = 1,
                 tol: float | None = None, init=None, **kwargs):
  """Ground state(s) of ``H`` for one potential or a batch.

  A thin wrapper over :func:`solve` (see it for every argument) that returns
  only converged answers: where :func:`solve` flags a potential as not
  converged (and warns), this raises, because ``(E, psi)`` alone carries no
  flag that a caller could check.

  Returns:
    ``(E, psi)``. For ``num_states == 1``: ``E (...)`` in Hartree and
    ``psi (..., *grid.shape)``. For ``num_states > 1``: ``E (..., k)``
    ascending and ``psi (..., k, *grid.shape)``. States are normalised so that
    ``sum(psi**2) * prod(h) = 1`` and ``sum(psi) > 0``; each energy is its
    state's Rayleigh quotient.

  Raises:
    NotConvergedError: some potential's residual is above ``tol``.
    ValueError: as :func:`solve`.
  """
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    result = solve(V, grid, method=method, num_states=num_states, tol=tol,
                   init=init, **kwargs)
  converged = np.asarray(result.converged)
  if not converged.all():
    bad = np.argwhere(~converged.reshape(converged.shape or (1,)))
    tol = default_tol(result.energies.dtype, grid) if tol is None else tol
    shown = ", ".join(str(tuple(int(i) for i in b)) for b in bad[:5])
    raise NotConvergedError(
        f"ground_state ({method}): {_failure_text(result, tol)} "
        f"(batch indices {shown}{', ...' if len(bad) > 5 else ''}). "
        + (f"Raise max_iters (now {kwargs.get('max_iters', 500)}) or "
           "block_size, " if method != "eigsh" else "")
        + "loosen tol, or call solve() to get the results with their "
        "converged flags.")
  if num_states == 1:
    return result.energies[..., 0], result.states[..., 0, *(
        [slice(None)] * grid.ndim)]
  return result.energies, result.states
