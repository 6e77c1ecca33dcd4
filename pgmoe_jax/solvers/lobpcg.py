r"""The JAX LOBPCG (Knyazev 2001): matrix-free, jitted, batched with vmap.

The lowest eigenpairs of :math:`H = -\tfrac12\Delta_h + V` for each
potential of a batch, in the potential's dtype. Preconditioned with the exact
inverse of :math:`K + c` (:func:`pgmoe_jax.kinetic.make_kinetic_inverse`),
damped in classically forbidden regions (:func:`make_preconditioner`), so it
needs tens of iterations at any grid spacing instead of hundreds. Every
Rayleigh-Ritz step works on an explicitly orthonormal basis, which keeps
near-degenerate pairs (double wells) exact (see :func:`_lobpcg_single`).

:func:`lobpcg_batch` is the unchecked kernel, also run inside PG-MoE's
physics gate with ``tol = 0`` (a fixed number of iterations, fixed cost);
:func:`pgmoe_jax.solvers.solve` validates inputs and calls it through the
drivers at the end (:func:`run_chunks`, :func:`pad_block` for the start
block, :func:`run_with_restarts` for the node check, :func:`node_fraction`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import hamiltonian
from pgmoe_jax import kinetic
from pgmoe_jax.batching import pad_batch
from pgmoe_jax.grid import Grid
from pgmoe_jax.variational import normalize_unchecked


class _LoopState(NamedTuple):
  iteration: jax.Array
  x: jax.Array
  hx: jax.Array
  p: jax.Array
  theta: jax.Array
  r: jax.Array
  residual_norms: jax.Array


def _mm(a, b):
  """``a @ b`` at full precision (no bfloat16 or TF32 passes on TPU/GPU)."""
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _drop_threshold(dtype) -> float:
  # A candidate direction, scaled to unit norm, whose part orthogonal to the
  # basis so far is shorter than this is numerically inside it: it is
  # dropped (set to zero) rather than normalised into noise-amplified junk.
  return 1e3 * float(jnp.finfo(dtype).eps)


def _orthonormalize(basis, candidates, threshold):
  """Appends ``candidates`` to the orthonormal rows of ``basis``.

  Each candidate row is scaled to unit norm, projected off every row kept so
  far twice (classical Gram-Schmidt twice, orthogonal to working precision
  even for nearly dependent rows), and normalised; a row with too little left
  becomes zero, which keeps the shapes fixed for ``jit``.

  Args:
    basis: ``(k, N)`` orthonormal (or zero) rows, possibly ``k = 0``.
    candidates: ``(j, N)``.
    threshold: relative norm below which a candidate is dropped.

  Returns:
    ``(rows (j, N), kept (j,))``: the new rows, orthonormal to ``basis`` and
    to each other, zero where dropped.
  """
  q = basis
  rows, kept = [], []
  for c in candidates:
    norm = jnp.linalg.norm(c)
    v = c / jnp.where(norm > 0, norm, 1.0)
    for _ in range(2):
      v = v - _mm(_mm(q, v), q)
    left = jnp.linalg.norm(v)
    keep = left > threshold
    v = jnp.where(keep, v / jnp.where(keep, left, 1.0), 0.0)
    q = jnp.concatenate([q, v[None]])
    rows.append(v)
    kept.append(keep)
  return jnp.stack(rows), jnp.stack(kept)


def _rayleigh_ritz(q, hq, kept, m):
  """Lowest ``m`` Ritz pairs on the span of the orthonormal rows of ``q``.

  Rows that were dropped (``kept`` false, all zero) get a diagonal entry
  above the spectrum, so they never come out among the lowest ``m``.

  Returns:
    ``(theta (m,), coef (rows of q, m))``: the new block is ``coef.T @ q``.
  """
  a = _mm(q, hq.T)
  a = 0.5 * (a + a.T)
  lift = 2.0 * jnp.sum(jnp.abs(a)) + 1.0
  a = a + jnp.diag(jnp.where(kept, 0.0, lift))
  theta, c = jnp.linalg.eigh(a)
  return theta[:m], c[:, :m]


# Found by scanning on 2-D 64x64 gaussian_wells, harmonic and double_well
# samples: 4-6 give 15-25 iterations to a 1e-8 residual for all three, and the
# count does not grow with the grid (32 to 128 per axis).
_SHIFT_PER_KINETIC_ENERGY = 5.0


def make_preconditioner(grid: Grid, dtype):
  r"""Returns ``apply(r, x, theta, V) -> T r`` for blocks ``(m, *grid.shape)``.

  Per column, :math:`T = S (K + c)^{-1} S`, symmetric positive definite:

  * :math:`(K + c)^{-1}` is exact and cheap in the eigenbasis of ``K``; it
    tames the kinetic term, which dominates the high frequencies and is why
    unpreconditioned iterations grow like :math:`1/h^2`.
  * ``c`` is five times the current state's kinetic energy
    :math:`\theta - \langle x|V|x\rangle` (floored by K's lowest positive
    eigenvalue), the natural energy scale of the problem.
  * :math:`S = \sqrt{c / (c + \max(V - \theta, 0))}` damps the residual where
    the potential rises far above the energy (classically forbidden walls of a
    harmonic or quartic well), where :math:`(K + c)^{-1}` alone overshoots.
    It cuts harmonic-oscillator iterations from ~140 to ~22.
  """
  kinetic_inverse = kinetic.make_kinetic_inverse(grid, dtype)
  floor = kinetic_floor(grid)
  column = (-1,) + (1,) * grid.ndim

  def apply(r, x, theta, potential):
    density = x * x / jnp.sum(x * x, axis=1, keepdims=True)
    kinetic = theta - jnp.sum(density * potential.reshape(1, -1), axis=1)
    c, scale = shift_and_damping(kinetic, theta.reshape(column),
                                 potential[None], floor, column)
    r = r.reshape(-1, *grid.shape)
    return (scale * kinetic_inverse(scale * r, c)).reshape(x.shape)

  return apply


def kinetic_floor(grid: Grid) -> float:
  """K's lowest positive eigenvalue: the floor of the preconditioner shift."""
  lam = kinetic.kinetic_eigenvalues(grid).ravel()
  return float(np.min(lam[lam > 1e-12 * lam.max()]))


def shift_and_damping(kinetic_energy, theta, potential, floor, column):
  """The preconditioner's ``c`` and ``S`` (see :func:`make_preconditioner`).

  Args:
    kinetic_energy: per column, ``theta - <x|V|x>`` (flat, one per column).
    theta: the Rayleigh quotients, shaped to broadcast against ``potential``.
    potential: the potentials, broadcast against the columns.
    floor: :func:`kinetic_floor`.
    column: the shape ``c`` takes to broadcast over a column's grid.

  Returns:
    ``(c, S)``: the shift (shape ``column``) and the damping of forbidden
    regions.
  """
  c = _SHIFT_PER_KINETIC_ENERGY * jnp.maximum(kinetic_energy, floor)
  c = c.reshape(column)
  above = jax.nn.relu(potential - theta)
  return c, jnp.sqrt(c / (c + above))


def _lobpcg_single(potential, x0, tol, *, grid: Grid, num_states: int,
                   max_iters: int):
  """LOBPCG for one potential; ``x0: (m, *grid.shape)``, ``m >= num_states``.

  Every Rayleigh-Ritz step works on an explicitly orthonormal basis
  ``[X, W, P]`` (Hetmaniuk & Lehoucq 2006; Duersch et al. 2018): W and P are
  orthogonalised against X and each other twice, nearly dependent
  directions are dropped, and ``H`` is applied to the new directions
  afresh. The Ritz coefficients are then an orthogonal matrix, so rounding
  errors are not amplified from one iteration to the next. An earlier
  version orthonormalised the raw basis through its Gram matrix and carried
  ``H X`` and ``H P`` along by the (then ill-conditioned) coefficients: when
  a near-degenerate pair (a double well's tunnelling doublet) made the basis
  nearly dependent, ``H X`` drifted from ``H`` applied to ``X`` and the Ritz
  values fell far below the ground state.
  """
  dtype = x0.dtype
  m = x0.shape[0]
  n = grid.size
  preconditioner = make_preconditioner(grid, dtype)
  threshold = _drop_threshold(dtype)

  def h(block):
    out = hamiltonian.apply_unchecked(block.reshape(-1, *grid.shape),
                                      potential, grid)
    return out.reshape(block.shape[0], n)

  def residual_norms(x, hx, theta, kept):
    r = hx - theta[:, None] * x
    # A zero row (dropped start vector) has not converged to anything.
    rn = jnp.where(kept, jnp.linalg.norm(r, axis=1), jnp.inf)
    return r, rn

  x, kept = _orthonormalize(jnp.zeros((0, n), dtype), x0.reshape(m, n),
                            threshold)
  hx = h(x)
  theta, coef = _rayleigh_ritz(x, hx, kept, m)
  x, hx = _mm(coef.T, x), _mm(coef.T, hx)
  kept = jnp.linalg.norm(x, axis=1) > 0.5
  r, rn = residual_norms(x, hx, theta, kept)

  def cond(state):
    return jnp.logical_and(state.iteration < max_iters,
                           jnp.any(state.residual_norms[:num_states] > tol))

  def body(state):
    w = preconditioner(state.r, state.x, state.theta, potential)
    # Soft locking: a converged column adds no search direction (its W would
    # be amplified noise), which keeps the remaining ones converging.
    w = jnp.where((state.residual_norms > tol)[:, None], w, 0.0)
    extra, extra_kept = _orthonormalize(
        state.x, jnp.concatenate([w, state.p]), threshold)
    q = jnp.concatenate([state.x, extra])
    hq = jnp.concatenate([state.hx, h(extra)])
    kept = jnp.concatenate([jnp.linalg.norm(state.x, axis=1) > 0.5,
                            extra_kept])
    theta, coef = _rayleigh_ritz(q, hq, kept, m)
    x, hx = _mm(coef.T, q), _mm(coef.T, hq)
    # The new search direction: the step's part in [W, P], orthogonal to the
    # old X (it is orthogonalised against the new X next time).
    p = _mm(coef[m:].T, q[m:])
    r, rn = residual_norms(x, hx, theta, jnp.linalg.norm(x, axis=1) > 0.5)
    return _LoopState(state.iteration + 1, x, hx, p, theta, r, rn)

  init = _LoopState(jnp.zeros((), jnp.int32), x, hx, jnp.zeros_like(x),
                    theta, r, rn)
  final = jax.lax.while_loop(cond, body, init)
  # What is returned is self-consistent by construction: each energy is its
  # state's Rayleigh quotient and each residual is measured with a fresh H
  # (on the flat block, like every Ritz quantity here).
  x = final.x[:num_states]
  hx = h(x)
  energies = jnp.sum(x * hx, axis=1) / jnp.sum(x * x, axis=1)
  _, res = residual_norms(x, hx, energies, jnp.ones(num_states, bool))
  return energies, x, res / jnp.linalg.norm(x, axis=1), final.iteration


@functools.partial(jax.jit, static_argnames=("num_states",))
def lobpcg_batch(potentials, x0, tol, grid, *, num_states, max_iters):
  """Jitted, vmapped LOBPCG without input checks (see :func:`solve`).

  Args:
    potentials: ``(b, *grid.shape)``.
    x0: starting blocks ``(b, m, *grid.shape)``, ``m >= num_states``.
    tol: residual tolerance in Ha; 0 runs exactly ``max_iters`` iterations.
    grid: the grid.
    num_states: how many of the lowest pairs to return.
    max_iters: iteration cap (a value, like ``tol``: another cap runs the
      same compiled program).

  Returns:
    ``(energies (b, k), states (b, k, N) unnormalised, residuals (b, k),
    iterations (b,))``.
  """
  fn = functools.partial(_lobpcg_single, grid=grid, num_states=num_states,
                         max_iters=max_iters)
  return jax.vmap(fn, in_axes=(0, 0, None))(potentials, x0, tol)


# --------------------------------------------------------------------------
# Driving the kernel for solve(): chunks, the start block, nodal restarts.


def pad_block(given, grid: Grid, block_size: int, first: int = 0):
  """``given (b, j, *grid.shape)`` filled up to the block with K's modes.

  The fill starts from K's mode ``first``; by default the lowest, not the
  one after ``j`` of them: a given state can be an excited eigenvector of
  H exactly (any kinetic mode is one for a constant potential), and a
  block without a nodeless vector would then settle on it at once with a
  zero residual.
  """
  b, j = given.shape[:2]
  if j == block_size:
    return given
  fill = kinetic.kinetic_modes(grid, block_size - j + first)[first:]
  fill = jnp.broadcast_to(jnp.asarray(fill, given.dtype),
                          (b, block_size - j) + grid.shape)
  return jnp.concatenate([given, fill], axis=1)


# A ground state's negative part may carry this fraction of its squared
# norm at most (rounding in the far tails carries ~1e-10 in float32).
NODE_TOLERANCE = 1e-6
# Restarts from |psi| of a ground state found with a node.
RESTARTS = 2


def node_fraction(states, grid: Grid):
  """The fraction of each state's squared norm on its minority sign.

  The stencil Hamiltonian on a connected grid has nonpositive off-diagonal
  entries, so its ground state is simple and of one sign (Perron-Frobenius):
  a state whose minority sign carries real norm has a node and is provably
  not the ground state.
  """
  sq = states * states
  pos = jnp.sum(jnp.where(states > 0, sq, 0.0), axis=grid.axes)
  neg = jnp.sum(jnp.where(states < 0, sq, 0.0), axis=grid.axes)
  return jnp.minimum(pos, neg) / jnp.maximum(pos + neg, jnp.finfo(
      states.dtype).tiny)


def run_with_restarts(run, flat, x0, *, grid: Grid, tol: float,
                      block_size: int, restarts: int):
  """LOBPCG from ``x0``; ground states with a node restarted from ``|psi|``.

  Returns:
    ``(energies (b, k), states (b, k, *grid.shape) normalised, residuals
    (b, k), iterations (b,), nodal (b,))``; energies without the offset.
  """
  b = flat.shape[0]
  e, x, res, its = run(flat, x0)
  num_states = e.shape[-1]
  states = normalize_unchecked(
      x.reshape((b, num_states) + grid.shape), grid)
  nodal = node_fraction(states[:, 0], grid) > NODE_TOLERANCE
  for _ in range(restarts):
    # A ground state with a node that met the tolerance is an excited
    # state (or a mixture with one) that the block settled on: start
    # again from |psi|, whose Rayleigh quotient is at most psi's for this
    # H. (One that ran out of iterations is left as it is.)
    rows = np.flatnonzero(np.asarray(nodal & jnp.all(res <= tol, -1)))
    if not rows.size:
      break
    again = pad_block(jnp.concatenate(
        [jnp.abs(states[rows, :1]), states[rows, 1:]], axis=1), grid,
        block_size)
    e2, x2, res2, its2 = run(flat[rows], again)
    s2 = normalize_unchecked(x2.reshape((len(rows), num_states)
                                        + grid.shape), grid)
    e, res = e.at[rows].set(e2), res.at[rows].set(res2)
    its, states = its.at[rows].add(its2), states.at[rows].set(s2)
    nodal = nodal.at[rows].set(node_fraction(s2[:, 0], grid) > NODE_TOLERANCE)
  return e, states, res, its, nodal


def run_chunks(flat, x0, *, grid: Grid, tol: float, chunk: int,
               num_states: int, max_iters: int):
  """``lobpcg_batch`` over ``flat (b, *grid.shape)`` in chunks (padded)."""
  b = flat.shape[0]
  chunk = min(chunk, b)
  outputs = []
  for start in range(0, b, chunk):
    stop = min(start + chunk, b)
    # The last chunk is padded: one compilation.
    v_chunk = pad_batch(jnp.asarray(flat[start:stop]), chunk)
    x_chunk = pad_batch(jnp.asarray(x0[start:stop]), chunk)
    out = lobpcg_batch(v_chunk, x_chunk, tol, grid, num_states=num_states,
                       max_iters=max_iters)
    outputs.append([o[:stop - start] for o in out])
  return tuple(jnp.concatenate(parts) for parts in zip(*outputs))
