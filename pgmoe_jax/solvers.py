r"""Reference ground-state solvers for :math:`H = -\tfrac12\Delta_h + V`.

Two methods solve the same discretisation (:mod:`pgmoe_jax.hamiltonian`):

* ``"eigsh"``: SciPy ARPACK in shift-invert mode around a shift below
  ``min(V)`` (so ``H - sigma`` is positive definite and the eigenvalues
  nearest the shift are the lowest), on a sparse matrix built once per call
  from the Kronecker-sum Laplacian. The CPU reference.
* ``"lobpcg"``: a matrix-free JAX LOBPCG (Knyazev 2001) for the lowest states,
  jitted and batched over potentials with ``vmap``. It is preconditioned with
  the exact inverse of :math:`K + c` with :math:`K = -\tfrac12\Delta_h`: ``K``
  is diagonalised per axis by an orthogonal transform (the type-I sine
  transform for Dirichlet walls, a real Fourier basis when periodic), so the
  inverse costs two transforms and a division, and LOBPCG needs tens of
  iterations at any grid spacing instead of hundreds. The shift ``c`` follows
  the current Ritz pair (see :func:`make_preconditioner`). An initial guess
  (say a network's prediction) warm-starts it.

Both return energies in Hartree and states normalised per DESIGN.md
(``sum(psi**2) * prod(h) = 1``, ``sum(psi) > 0``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

from pgmoe_jax.energy import normalize
from pgmoe_jax import hamiltonian
from pgmoe_jax.grid import Grid

METHODS = ("eigsh", "lobpcg")


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
    converged: ``(...)`` whether every requested state met the tolerance.
  """
  energies: np.ndarray | jax.Array
  states: np.ndarray | jax.Array
  residuals: np.ndarray | jax.Array
  iterations: np.ndarray | jax.Array
  converged: np.ndarray | jax.Array


# --------------------------------------------------------------------------
# The kinetic operator in its eigenbasis.


def kinetic_eigenbasis(grid: Grid) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
  r"""Per axis, ``(Q, lam)`` with ``K_1d = Q diag(lam) Q^T`` (float64).

  ``K_1d`` is :math:`-\tfrac12` times the 1-D three-point Laplacian of that
  axis, so :math:`K = \sum_a \lambda_a` in the product basis of the ``Q``'s.
  Dirichlet walls use the closed-form sine basis; periodic axes use
  ``eigh`` of the circulant matrix.
  """
  out = []
  for n, h in zip(grid.shape, grid.spacing):
    if grid.boundary == "dirichlet":
      k = np.arange(1, n + 1)
      q = np.sqrt(2.0 / (n + 1)) * np.sin(np.pi * np.outer(k, k) / (n + 1))
      lam = (1.0 - np.cos(np.pi * k / (n + 1))) / h**2
    else:
      k1d = (np.eye(n) - 0.5 * np.roll(np.eye(n), 1, axis=1)
             - 0.5 * np.roll(np.eye(n), -1, axis=1)) / h**2
      lam, q = np.linalg.eigh(k1d)
    out.append((q, lam))
  return tuple(out)


def _kinetic_eigenvalues(grid: Grid) -> np.ndarray:
  lams = [lam for _, lam in kinetic_eigenbasis(grid)]
  total = np.zeros(grid.shape)
  for axis, lam in enumerate(lams):
    shape = [1] * grid.ndim
    shape[axis] = -1
    total = total + lam.reshape(shape)
  return total


def kinetic_modes(grid: Grid, count: int) -> np.ndarray:
  """The ``count`` lowest eigenvectors of K, ``(count, *grid.shape)``.

  Deterministic and positive-overlapping with any ground state, they are the
  default (cold) start of LOBPCG: no random numbers are involved.
  """
  basis = kinetic_eigenbasis(grid)
  order = np.argsort(_kinetic_eigenvalues(grid), axis=None, kind="stable")
  modes = []
  for flat in order[:count]:
    idx = np.unravel_index(flat, grid.shape)
    mode = np.ones(())
    for (q, _), i in zip(basis, idx):
      mode = np.multiply.outer(mode, q[:, i])
    modes.append(mode)
  return np.stack(modes)


def _transform(x: jax.Array, mats, grid: Grid) -> jax.Array:
  """Applies ``mats[a]`` along each trailing grid axis ``a`` (x @ Q_a)."""
  for axis, q in zip(grid.axes, mats):
    x = jnp.moveaxis(jnp.tensordot(x, q, axes=([axis], [0])), -1, axis)
  return x


def make_kinetic_inverse(grid: Grid, dtype):
  r"""Returns ``apply(r, c) = (K + c)^{-1} r`` for ``r: (m, *grid.shape)``.

  ``c`` is a scalar or broadcasts against ``(m, 1, ..., 1)``; it must keep
  ``K + c`` positive definite.
  """
  basis = kinetic_eigenbasis(grid)
  q = [jnp.asarray(b[0], dtype) for b in basis]
  qt = [jnp.asarray(b[0].T, dtype) for b in basis]
  lam = jnp.asarray(_kinetic_eigenvalues(grid), dtype)

  def apply(r, c):
    r_hat = _transform(r, q, grid)
    return _transform(r_hat / (lam + c), qt, grid)

  return apply


# --------------------------------------------------------------------------
# JAX LOBPCG.


class _LoopState(NamedTuple):
  iteration: jax.Array
  x: jax.Array
  hx: jax.Array
  p: jax.Array
  theta: jax.Array
  r: jax.Array
  residual_norms: jax.Array


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
      v = v - (q @ v) @ q
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
  a = q @ hq.T
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
    :math:`	heta - \langle x|V|x
angle` (floored by K's lowest positive
    eigenvalue), the natural energy scale of the problem.
  * :math:`S = \sqrt{c / (c + \max(V - 	heta, 0))}` damps the residual where
    the potential rises far above the energy (classically forbidden walls of a
    harmonic or quartic well), where :math:`(K + c)^{-1}` alone overshoots.
    It cuts harmonic-oscillator iterations from ~140 to ~22.
  """
  kinetic_inverse = make_kinetic_inverse(grid, dtype)
  lam = _kinetic_eigenvalues(grid).ravel()
  floor = float(np.min(lam[lam > 1e-12 * lam.max()]))
  column = (-1,) + (1,) * grid.ndim

  def apply(r, x, theta, potential):
    density = x * x / jnp.sum(x * x, axis=1, keepdims=True)
    kinetic = theta - jnp.sum(density * potential.reshape(1, -1), axis=1)
    c = _SHIFT_PER_KINETIC_ENERGY * jnp.maximum(kinetic, floor)
    c = c.reshape(column)
    above = jax.nn.relu(potential[None] - theta.reshape(column))
    scale = jnp.sqrt(c / (c + above))
    r = r.reshape(-1, *grid.shape)
    return (scale * kinetic_inverse(scale * r, c)).reshape(x.shape)

  return apply


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
  x, hx = coef.T @ x, coef.T @ hx
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
    x, hx = coef.T @ q, coef.T @ hq
    # The new search direction: the step's part in [W, P], orthogonal to the
    # old X (it is orthogonalised against the new X next time).
    p = coef[m:].T @ q[m:]
    r, rn = residual_norms(x, hx, theta, jnp.linalg.norm(x, axis=1) > 0.5)
    return _LoopState(state.iteration + 1, x, hx, p, theta, r, rn)

  init = _LoopState(jnp.zeros((), jnp.int32), x, hx, jnp.zeros_like(x),
                    theta, r, rn)
  final = jax.lax.while_loop(cond, body, init)
  # What is returned is self-consistent by construction: each energy is its
  # state's Rayleigh quotient and each residual is measured with a fresh H.
  x = final.x[:num_states]
  hx = h(x)
  norm2 = jnp.sum(x * x, axis=1)
  energies = jnp.sum(x * hx, axis=1) / norm2
  res = jnp.linalg.norm(hx - energies[:, None] * x, axis=1) / jnp.sqrt(norm2)
  return energies, x, res, final.iteration


@functools.partial(jax.jit, static_argnames=("num_states", "max_iters"))
def lobpcg_batch(potentials, x0, tol, grid, *, num_states, max_iters):
  """Jitted, vmapped LOBPCG without input checks (see :func:`solve`).

  Args:
    potentials: ``(b, *grid.shape)``.
    x0: starting blocks ``(b, m, *grid.shape)``, ``m >= num_states``.
    tol: residual tolerance in Ha; 0 runs exactly ``max_iters`` iterations.
    grid: the grid.
    num_states: how many of the lowest pairs to return.
    max_iters: iteration cap.

  Returns:
    ``(energies (b, k), states (b, k, N) unnormalised, residuals (b, k),
    iterations (b,))``.
  """
  fn = functools.partial(_lobpcg_single, grid=grid, num_states=num_states,
                         max_iters=max_iters)
  return jax.vmap(fn, in_axes=(0, 0, None))(potentials, x0, tol)


# --------------------------------------------------------------------------
# SciPy reference.


def kinetic_matrix(grid: Grid) -> scipy.sparse.csr_matrix:
  r"""The sparse matrix of :math:`K = -\tfrac12\Delta_h` (Kronecker sum).

  Built once per call of :func:`solve` and reused for every potential: the
  Kronecker products cost far more than adding a diagonal.
  """
  total = None
  for n, h in zip(grid.shape, grid.spacing):
    off = np.full(n - 1, -0.5 / h**2)
    k1d = scipy.sparse.diags([off, np.full(n, 1.0 / h**2), off], [-1, 0, 1],
                             format="lil")
    if grid.boundary == "periodic":
      k1d[0, n - 1] += -0.5 / h**2
      k1d[n - 1, 0] += -0.5 / h**2
    k1d = k1d.tocsr()
    if total is None:
      total = k1d
    else:
      total = (scipy.sparse.kron(total, scipy.sparse.identity(n))
               + scipy.sparse.kron(scipy.sparse.identity(total.shape[0]), k1d))
  return total.tocsr()


def eigsh_batch(potentials: np.ndarray, grid: Grid, num_states: int,
                tol: float):
  """Shift-invert ARPACK per potential of ``(b, *grid.shape)``, no checks.

  Returns:
    ``(energies (b, k), states (b, k, N) of unit norm, residuals (b, k),
    operator applications (b,), converged (b,))``, all float64 NumPy.
  """
  kinetic = kinetic_matrix(grid)
  lam_min = float(_kinetic_eigenvalues(grid).min())
  n = grid.size
  b = potentials.shape[0]
  energies = np.empty((b, num_states))
  states = np.empty((b, num_states, n))
  iterations = np.empty((b,), np.int64)
  for i, v in enumerate(potentials.reshape(b, n)):
    h = (kinetic + scipy.sparse.diags(v)).tocsc()
    # Any sigma below min(V) makes H - sigma positive definite, and then the
    # eigenvalues nearest sigma are the lowest. E0 >= min(V) + lam_min, so
    # this shift sits a fixed fraction below E0 at any grid spacing.
    sigma = float(v.min()) - max(lam_min, 1e-3)
    operator = scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=scipy.sparse.linalg.splu(
            h - sigma * scipy.sparse.identity(n, format="csc")).solve,
        dtype=np.float64)
    counter = [0]

    def op_inv(x, solve=operator.matvec):
      counter[0] += 1
      return solve(x)

    w, u = scipy.sparse.linalg.eigsh(
        h, k=num_states, sigma=sigma, which="LM", v0=np.ones(n), tol=0,
        OPinv=scipy.sparse.linalg.LinearOperator((n, n), matvec=op_inv,
                                                 dtype=np.float64))
    order = np.argsort(w)
    energies[i] = w[order]
    states[i] = u[:, order].T
    iterations[i] = counter[0]
  h_states = np.stack([
      (kinetic @ s.T).T + potentials.reshape(b, 1, n)[j] * s
      for j, s in enumerate(states)])
  # ARPACK's eigenvalues equal these to rounding; returning the states' own
  # Rayleigh quotients makes every pair self-consistent by construction.
  energies = np.sum(states * h_states, axis=-1)
  residuals = np.linalg.norm(h_states - energies[..., None] * states, axis=-1)
  return energies, states, residuals, iterations, (residuals <= tol).all(-1)


# --------------------------------------------------------------------------
# Public API.


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
  kinetic_norm = sum(2.0 / h**2 for h in grid.spacing)
  return max(base, 5.0 * eps * kinetic_norm)


def _prepare_init(init, potentials, grid: Grid, block_size: int, dtype):
  """Returns the LOBPCG start ``(b, block_size, *grid.shape)``."""
  batch = potentials.shape[:-grid.ndim]
  b = int(np.prod(batch, dtype=np.int64))
  if init is None:
    start = kinetic_modes(grid, block_size)
    return jnp.broadcast_to(jnp.asarray(start, dtype),
                            (b, block_size) + grid.shape)
  init = hamiltonian.as_float(init, "init")
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
  hamiltonian.check_finite("init", init)
  norms = np.asarray(jnp.sum(init * init, axis=grid.axes))
  if (norms == 0).any():
    raise ValueError("init holds an identically zero state; give a nonzero "
                     "guess or init=None for the default start.")
  init = init.reshape((b, given) + grid.shape).astype(dtype)
  fill = kinetic_modes(grid, block_size)[given:]
  fill = jnp.broadcast_to(jnp.asarray(fill, dtype),
                          (b, block_size - given) + grid.shape)
  return jnp.concatenate([init, fill], axis=1)


def solve(V, grid: Grid, *, method: str = "eigsh", num_states: int = 1,
          tol: float | None = None, init=None, max_iters: int = 500,
          block_size: int | None = None,
          chunk_size: int | None = None) -> SolverResult:
  r"""The lowest ``num_states`` eigenpairs of :math:`H` for each potential.

  Args:
    V: potentials in Hartree, ``(..., *grid.shape)``; leading axes are a
      batch.
    grid: the grid.
    method: ``"eigsh"`` (SciPy shift-invert, CPU, float64) or ``"lobpcg"``
      (JAX, jitted, batched, in ``V``'s dtype).
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
  if not isinstance(grid, Grid):
    raise TypeError(
        f"grid must be a pgmoe_jax.Grid, got {type(grid).__name__}.")
  V = hamiltonian.as_float(V, "V")
  grid.check_array("V", V)
  hamiltonian.check_finite("V", V)
  if num_states >= grid.size:
    raise ValueError(f"num_states={num_states} must be below the number of "
                     f"grid points {grid.size}.")
  tol = default_tol(V.dtype, grid) if tol is None else float(tol)
  if not tol > 0:
    raise ValueError(f"tol must be positive, got {tol}.")
  batch = V.shape[:V.ndim - grid.ndim]
  b = int(np.prod(batch, dtype=np.int64))
  if b == 0:
    raise ValueError(
        f"V holds an empty batch (shape {V.shape}): there is no potential to "
        "solve; pass at least one.")
  flat = V.reshape((b,) + grid.shape)
  # H - min(V) has the same eigenvectors and energies lower by min(V): the
  # solvers work on V - min(V) >= 0, so a huge offset (V = 1e30 everywhere)
  # neither swamps the kinetic energy in the residual nor makes eigsh's
  # shifted matrix singular. Energies get min(V) back at the end.
  column = (b,) + (1,) * grid.ndim

  if method == "eigsh":
    if init is not None:
      raise ValueError("init is only used by method='lobpcg'; eigsh "
                       "(shift-invert) does not take an initial guess.")
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
    x0 = _prepare_init(init, V, grid, block_size, V.dtype)
    offset = jnp.min(flat.reshape(b, -1), axis=1)
    flat = flat - offset.reshape(column)
    chunk = b if chunk_size is None else int(chunk_size)
    if chunk < 1:
      raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    outputs = []
    for start in range(0, b, chunk):
      stop = min(start + chunk, b)
      pad = chunk - (stop - start)  # pad the last chunk: one compilation
      v_chunk = jnp.concatenate([flat[start:stop]] + [flat[stop - 1:stop]] *
                                pad)
      x_chunk = jnp.concatenate([x0[start:stop]] + [x0[stop - 1:stop]] * pad)
      out = lobpcg_batch(v_chunk, x_chunk, tol, grid, num_states=num_states,
                          max_iters=int(max_iters))
      outputs.append([o[:stop - start] for o in out])
    e, x, res, its = (jnp.concatenate(parts) for parts in zip(*outputs))
    e = e + offset[:, None]
    states = normalize(
        x.reshape((b, num_states) + grid.shape), grid)
    result = SolverResult(
        e.reshape(batch + (num_states,)),
        states.reshape(batch + (num_states,) + grid.shape),
        res.reshape(batch + (num_states,)), its.reshape(batch),
        jnp.all(res <= tol, axis=-1).reshape(batch))

  failed = int(np.size(result.converged) - np.count_nonzero(result.converged))
  if failed:
    warnings.warn(
        f"{method}: {failed} of {b} potential(s) did not reach the residual "
        f"tolerance {tol:g} Ha (largest residual "
        f"{float(np.max(result.residuals)):.3g} Ha); raise max_iters or "
        "block_size, or check the potential.", RuntimeWarning, stacklevel=2)
  return result


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
    residuals = np.asarray(result.residuals)
    tol = default_tol(result.energies.dtype, grid) if tol is None else tol
    shown = ", ".join(str(tuple(int(i) for i in b)) for b in bad[:5])
    raise NotConvergedError(
        f"ground_state ({method}): {len(bad)} of {max(converged.size, 1)} "
        f"potential(s) did not reach the residual tolerance {tol:g} Ha "
        f"(batch indices {shown}{', ...' if len(bad) > 5 else ''}; largest "
        f"residual {float(residuals.max()):.3g} Ha). "
        + (f"Raise max_iters (now {kwargs.get('max_iters', 500)}) or "
           "block_size, " if method == "lobpcg" else "")
        + "loosen tol, or call solve() to get the results with their "
        "converged flags.")
  if num_states == 1:
    return result.energies[..., 0], result.states[..., 0, *(
        [slice(None)] * grid.ndim)]
  return result.energies, result.states
