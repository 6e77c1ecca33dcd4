r"""The kinetic operator :math:`K = -\tfrac12\Delta_h` in its other forms.

:mod:`pgmoe_jax.hamiltonian` applies ``K`` matrix-free as a stencil. The
solvers and the PG-MoE gate need it as a matrix or in its eigenbasis; every
such form is built here from one definition of the 1-D operator
(:func:`kinetic_matrix_1d`): ``1/h^2`` on the diagonal and ``-1/(2 h^2)`` on
the neighbours, wrapped around the corners on a periodic axis, so that
``K = sum_a I x .. x K_a x .. x I`` (a Kronecker sum) in C order.

* :func:`kinetic_matrix`: the Kronecker sum, sparse (SciPy) or dense.
* :func:`kinetic_eigenbasis` / :func:`kinetic_eigenvalues`: per axis
  ``K_a = Q_a diag(lam_a) Q_a^T``; the closed-form sine basis on Dirichlet
  axes, ``eigh`` of the circulant on periodic ones.
* :func:`kinetic_modes`: the lowest eigenvectors of ``K`` (LOBPCG's
  deterministic start).
* :func:`make_kinetic_inverse`: ``(K + c)^{-1}`` applied by two transforms
  and a division (the LOBPCG preconditioner's core).
* :func:`kinetic_norm`: an upper bound of ``K``'s spectrum (rounding floors).

Everything is float64 NumPy built on demand (compile-time constants under
``jit``), except :func:`make_kinetic_inverse`, which returns a JAX function.
SciPy is imported only by the sparse :func:`kinetic_matrix`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.grid import Grid


def kinetic_matrix_1d(n: int, h: float, boundary: str = "dirichlet"):
  r"""The dense ``(n, n)`` matrix of :math:`-\tfrac12 d^2/dx^2` on one axis.

  Args:
    n: points on the axis.
    h: spacing in bohr.
    boundary: ``"dirichlet"`` (zeros beyond the walls) or ``"periodic"``.
  """
  k = (np.eye(n) - 0.5 * np.eye(n, k=1) - 0.5 * np.eye(n, k=-1)) / h**2
  if boundary == "periodic":
    k[0, -1] += -0.5 / h**2
    k[-1, 0] += -0.5 / h**2
  return k


def kinetic_matrix(grid: Grid, sparse: bool = True):
  """The matrix of ``K`` on the whole grid (C order), ``(N, N)``.

  Args:
    grid: the grid.
    sparse: a SciPy CSR matrix (for solvers; cheap at any size) or a dense
      NumPy array (for tiny grids such as PG-MoE's coarse gate).
  """
  if sparse:
    import scipy.sparse  # pylint: disable=g-import-not-at-top
    kron, eye = scipy.sparse.kron, scipy.sparse.identity
    as_matrix = scipy.sparse.csr_matrix
  else:
    kron, eye, as_matrix = np.kron, np.eye, np.asarray
  total = None
  for n, h in zip(grid.shape, grid.spacing):
    k1d = as_matrix(kinetic_matrix_1d(n, h, grid.boundary))
    total = k1d if total is None else (kron(total, eye(n))
                                       + kron(eye(total.shape[0]), k1d))
  return total.tocsr() if sparse else total


def kinetic_eigenbasis(grid: Grid) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
  r"""Per axis, ``(Q, lam)`` with ``K_a = Q diag(lam) Q^T`` (float64).

  Dirichlet axes use the closed-form sine basis
  :math:`Q_{ik} = \sqrt{2/(n+1)} \sin(\pi i k / (n+1))`,
  :math:`\lambda_k = (1 - \cos(\pi k/(n+1))) / h^2`; periodic axes use
  ``eigh`` of the circulant matrix.
  """
  out = []
  for n, h in zip(grid.shape, grid.spacing):
    if grid.boundary == "dirichlet":
      k = np.arange(1, n + 1)
      q = np.sqrt(2.0 / (n + 1)) * np.sin(np.pi * np.outer(k, k) / (n + 1))
      lam = (1.0 - np.cos(np.pi * k / (n + 1))) / h**2
    else:
      lam, q = np.linalg.eigh(kinetic_matrix_1d(n, h, "periodic"))
    out.append((q, lam))
  return tuple(out)


def kinetic_eigenvalues(grid: Grid) -> np.ndarray:
  """The eigenvalues of ``K`` on the grid, ``grid.shape`` (product basis)."""
  total = np.zeros(grid.shape)
  for axis, (_, lam) in enumerate(kinetic_eigenbasis(grid)):
    shape = [1] * grid.ndim
    shape[axis] = -1
    total = total + lam.reshape(shape)
  return total


def kinetic_norm(grid: Grid) -> float:
  """``sum_a 2 / h_a^2``: an upper bound of ``K``'s largest eigenvalue."""
  return float(sum(2.0 / h**2 for h in grid.spacing))


def kinetic_modes(grid: Grid, count: int) -> np.ndarray:
  """The ``count`` lowest eigenvectors of K, ``(count, *grid.shape)``.

  Deterministic (ties in the order of the flattened grid) and the first is
  positive everywhere, so it overlaps any ground state: the default (cold)
  start of LOBPCG, with no random numbers involved.
  """
  basis = kinetic_eigenbasis(grid)
  order = np.argsort(kinetic_eigenvalues(grid), axis=None, kind="stable")
  modes = []
  for flat in order[:count]:
    idx = np.unravel_index(flat, grid.shape)
    mode = np.ones(())
    for (q, _), i in zip(basis, idx):
      mode = np.multiply.outer(mode, q[:, i])
    modes.append(mode)
  return np.stack(modes)


def apply_transform(x: jax.Array, mats, grid: Grid) -> jax.Array:
  """Applies ``mats[a]`` along each trailing grid axis ``a`` (x @ Q_a).

  With ``Q_a`` from :func:`kinetic_eigenbasis` this is the sine (or
  Fourier) transform into K's eigenbasis; at ``Precision.HIGHEST``, so
  accelerators do not round the float32 operands to bfloat16 or TF32.
  """
  for axis, q in zip(grid.axes, mats):
    x = jnp.moveaxis(jnp.tensordot(x, q, axes=([axis], [0]),
                                   precision=jax.lax.Precision.HIGHEST),
                     -1, axis)
  return x


def make_kinetic_inverse(grid: Grid, dtype):
  r"""Returns ``apply(r, c) = (K + c)^{-1} r`` for ``r: (m, *grid.shape)``.

  ``c`` is a scalar or broadcasts against ``(m, 1, ..., 1)``; it must keep
  ``K + c`` positive definite. The per-axis transforms are dense matrices
  (``O(n^(d+1))`` per field).
  """
  basis = kinetic_eigenbasis(grid)
  q = [jnp.asarray(b[0], dtype) for b in basis]
  qt = [jnp.asarray(b[0].T, dtype) for b in basis]
  lam = jnp.asarray(kinetic_eigenvalues(grid), dtype)

  def apply(r, c):
    r_hat = apply_transform(r, q, grid)
    return apply_transform(r_hat / (lam + c), qt, grid)

  return apply
