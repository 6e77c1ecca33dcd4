"""Transfers between a grid and its coarser versions of the same box.

Block means carry a potential down (restriction), linear interpolation
carries a state up (prolongation): the coarse-to-fine solver
(:mod:`pgmoe_jax.solvers.cascade`) and PG-MoE's gate and envelope use these
two. Matrices are NumPy (compile-time constants under ``jit``); the maps are
JAX and act on a leading batch axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.grid import Grid


def interpolation_matrix(n_fine: int, n_coarse: int, length: float,
                         boundary: str) -> np.ndarray:
  """Linear interpolation (with linear extrapolation at the ends)."""
  fine = Grid((n_fine,), length, boundary).coordinates()[0]
  coarse = Grid((n_coarse,), length, boundary).coordinates()[0]
  j = np.clip(np.searchsorted(coarse, fine) - 1, 0, n_coarse - 2)
  w = (fine - coarse[j]) / (coarse[j + 1] - coarse[j])
  out = np.zeros((n_fine, n_coarse))
  out[np.arange(n_fine), j] = 1 - w
  out[np.arange(n_fine), j + 1] = w
  return out


def _blocks(x: jax.Array, grid: Grid, coarse) -> tuple[jax.Array, tuple]:
  """``x (b, *grid.shape)`` as ``(b, c1, n1/c1, ..)`` and the in-block
  axes."""
  shape = [x.shape[0]]
  for n, c in zip(grid.shape, coarse):
    shape += [c, n // c]
  return x.reshape(shape), tuple(range(2, 2 + 2 * grid.ndim, 2))


def block_mean(x: jax.Array, grid: Grid, coarse) -> jax.Array:
  """Averages ``(b, *grid.shape)`` over blocks down to ``(b, *coarse)``."""
  blocks, axes = _blocks(x, grid, coarse)
  return blocks.mean(axis=axes)


def block_min(x: jax.Array, grid: Grid, coarse) -> jax.Array:
  """Minima of ``(b, *grid.shape)`` over blocks, ``(b, *coarse)``."""
  blocks, axes = _blocks(x, grid, coarse)
  return blocks.min(axis=axes)


def interpolate(x: jax.Array, grid: Grid) -> jax.Array:
  """``x (b, *coarse)`` linearly interpolated onto ``grid`` (the same box).

  Per axis by :func:`interpolation_matrix` at ``Precision.HIGHEST``.
  """
  return apply_per_axis(x, [
      jnp.asarray(interpolation_matrix(n, c, a, grid.boundary), x.dtype)
      for n, c, a in zip(grid.shape, x.shape[1:], grid.length)])


def apply_per_axis(x: jax.Array, matrices) -> jax.Array:
  """``x (b, c1, .., cd) -> (b, n1, .., nd)`` applying ``M_a (n_a, c_a)``."""
  for axis, m in enumerate(matrices, start=1):
    x = jnp.moveaxis(jnp.tensordot(x, m, axes=([axis], [1]),
                                   precision=jax.lax.Precision.HIGHEST),
                     -1, axis)
  return x
