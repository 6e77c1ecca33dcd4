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
* :func:`sine_transform`: the same Dirichlet basis applied by an FFT
  (``O(n log n)`` per line); :func:`make_eigenbasis_transforms` picks the
  FFT or the dense matrix per axis by size (:data:`FFT_MIN_SIZE`).
* :func:`make_kinetic_inverse`: ``(K + c)^{-1}`` applied by two transforms
  and a division (the LOBPCG preconditioner's core).
* :func:`kinetic_norm`: an upper bound of ``K``'s spectrum (rounding floors).

Everything is float64 NumPy built on demand (compile-time constants under
``jit``), except the transforms and :func:`make_kinetic_inverse`, which are
JAX functions.
SciPy is imported only by the sparse :func:`kinetic_matrix`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import sharding
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


# Grid points per axis from which the Dirichlet sine transforms use the FFT
# instead of a dense matrix: below it the dense matmul (O(n^2) per line)
# is faster on CPU, because XLA's CPU FFT is slow for the lengths
# ``2 (n + 1)`` a DST-I needs (``n = 256`` gives 514 = 2 x 257).
# ``python -m experiments.benchmark --what=sine`` measures the crossover
# (RESULTS.md, section 6).
FFT_MIN_SIZE = 1024


def sine_transform(x: jax.Array, axis: int) -> jax.Array:
  r"""The orthonormal DST-I along ``axis``: ``x @ Q`` by one real FFT.

  ``Q_{jk} = sqrt(2/(n+1)) sin(pi j k / (n+1))`` (the Dirichlet eigenbasis
  of :func:`kinetic_eigenbasis`; symmetric and orthogonal, so it is its own
  inverse). The line is extended to its odd periodic continuation
  ``[0, x, 0, -reversed(x)]`` of length ``2 (n + 1)``, whose DFT is
  ``-2i`` times the sine sums: ``O(n log n)`` per line against ``O(n^2)``
  for the matrix, equal to it to rounding. The dtype follows ``x``
  (float32 runs a complex64 FFT; no matmul, so no precision setting).
  """
  x = jnp.moveaxis(x, axis, -1)
  n = x.shape[-1]
  zero = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
  odd = jnp.concatenate([zero, x, zero, -x[..., ::-1]], axis=-1)
  spectrum = jnp.fft.rfft(odd, axis=-1)[..., 1:n + 1]
  y = (-0.5 * np.sqrt(2.0 / (n + 1))) * jnp.imag(spectrum)
  return jnp.moveaxis(y.astype(x.dtype), -1, axis)


def transform_methods(grid: Grid, fft_min_size: int | None = FFT_MIN_SIZE
                      ) -> tuple[str, ...]:
  """Per axis, ``"fft"`` or ``"dense"``: how K's eigenbasis is applied.

  Dirichlet axes of at least ``fft_min_size`` points use
  :func:`sine_transform`; smaller ones, and periodic axes (whose basis is
  ``eigh``'s, with degenerate pairs in its own order), the dense matrix.
  ``fft_min_size=None``: dense everywhere.
  """
  if fft_min_size is not None and int(fft_min_size) < 1:
    raise ValueError(f"fft_min_size={fft_min_size!r} must be a positive "
                     "number of points, or None for dense transforms.")
  return tuple(
      "fft" if (fft_min_size is not None and grid.boundary == "dirichlet"
                and n >= int(fft_min_size)) else "dense"
      for n in grid.shape)


def apply_transform(x: jax.Array, mats, grid: Grid) -> jax.Array:
  """Applies ``mats[a]`` along each trailing grid axis ``a`` (x @ Q_a).

  With ``Q_a`` from :func:`kinetic_eigenbasis` this is the sine (or
  Fourier) transform into K's eigenbasis; at ``Precision.HIGHEST``, so
  accelerators do not round the float32 operands to bfloat16 or TF32.
  A ``None`` entry applies :func:`sine_transform` on that axis instead.
  """
  for axis, q in zip(grid.axes, mats):
    x = _apply_along(x, q, axis)
  return x


def _apply_along(x: jax.Array, q, axis: int) -> jax.Array:
  """``x @ q`` along ``axis`` (:func:`sine_transform` where ``q`` is None)."""
  if q is None:
    return sine_transform(x, axis)
  return jnp.moveaxis(jnp.tensordot(x, q, axes=([axis], [0]),
                                    precision=jax.lax.Precision.HIGHEST),
                      -1, axis)


def make_eigenbasis_transforms(grid: Grid, dtype,
                               fft_min_size: int | None = FFT_MIN_SIZE,
                               spatial: bool = False):
  """``(to_eigenbasis, from_eigenbasis)``: functions of ``(..., *grid.shape)``.

  ``to_eigenbasis(x)`` applies ``Q_a`` along every grid axis (``x`` in
  K's eigenbasis, whose eigenvalues are :func:`kinetic_eigenvalues`),
  ``from_eigenbasis`` applies ``Q_a^T``; each axis by a dense matrix or the
  FFT as :func:`transform_methods` chooses.

  ``spatial=True`` (for ``x (b, *grid.shape)`` whose batch is not
  vmapped): under a mesh whose ``"space"`` axis splits the first grid axis
  (:mod:`pgmoe_jax.sharding`), the transform along that axis runs after
  moving the split to the second axis, so no device ever holds a whole
  field; elsewhere the same as ``spatial=False``.
  """
  methods = transform_methods(grid, fft_min_size)
  basis = kinetic_eigenbasis(grid)
  forward = [None if m == "fft" else jnp.asarray(b[0], dtype)
             for m, b in zip(methods, basis)]
  backward = [None if m == "fft" else jnp.asarray(b[0].T, dtype)
              for m, b in zip(methods, basis)]

  def transform(x, mats):
    if not spatial or grid.ndim < 2 or sharding.space_devices() == 1:
      return apply_transform(x, mats, grid)
    # The first grid axis is split across the space devices: transform the
    # others where they lie, move the split to the second axis (an
    # all-to-all), transform the first, and move the split back.
    axes = grid.axes
    for axis, q in zip(axes[1:], mats[1:]):
      x = _apply_along(x, q, axis)
    x = sharding.move_space_split(x, grid.ndim, 0, 1)
    x = _apply_along(x, mats[0], axes[0])
    return sharding.move_space_split(x, grid.ndim, 1, 0)

  return (lambda x: transform(x, forward), lambda x: transform(x, backward))


def make_kinetic_inverse(grid: Grid, dtype,
                         fft_min_size: int | None = FFT_MIN_SIZE):
  r"""Returns ``apply(r, c) = (K + c)^{-1} r`` for ``r: (m, *grid.shape)``.

  ``c`` is a scalar or broadcasts against ``(m, 1, ..., 1)``; it must keep
  ``K + c`` positive definite. The per-axis transforms are dense matrices
  (``O(n^(d+1))`` per field) below ``fft_min_size`` points per axis and
  FFT-based sine transforms (``O(n^d log n)``) from there
  (:func:`transform_methods`).
  """
  to_basis, from_basis = make_eigenbasis_transforms(grid, dtype, fft_min_size)
  lam = jnp.asarray(kinetic_eigenvalues(grid), dtype)

  def apply(r, c):
    return from_basis(to_basis(r) / (lam + c))

  return apply
