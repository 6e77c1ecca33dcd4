r"""The Hamiltonian as a matrix-free stencil: :math:`H\psi = -\tfrac12
\Delta_h\psi + V\psi`.

:math:`\Delta_h` is the second-order (2d+1)-point central difference, per axis
:math:`(\psi_{i-1} - 2\psi_i + \psi_{i+1}) / h^2`. With Dirichlet boundaries
the neighbours beyond the walls are zero; with periodic ones they wrap around.
No matrix is ever formed: each neighbour is one shifted copy of ``psi``
(pad-and-slice per neighbour), which XLA fuses into a single loop over the
array.

The stencil acts on the trailing ``grid.ndim`` axes only, so any leading batch
axes pass through, and ``V`` broadcasts against ``psi`` over those leading
axes. The result has ``psi``'s floating dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pgmoe_jax import checks
from pgmoe_jax.grid import Grid


def _shift(psi: jax.Array, axis: int, step: int, periodic: bool) -> jax.Array:
  """``out[i] = psi[i + step]`` along ``axis`` (step = +-1), zero or wrapped."""
  if periodic:
    return jnp.roll(psi, -step, axis=axis)
  n = psi.shape[axis]
  pad = [(0, 0)] * psi.ndim
  if step > 0:
    kept = jax.lax.slice_in_dim(psi, 1, n, axis=axis)
    pad[axis] = (0, 1)
  else:
    kept = jax.lax.slice_in_dim(psi, 0, n - 1, axis=axis)
    pad[axis] = (1, 0)
  return jnp.pad(kept, pad)


def kinetic_stencil(psi: jax.Array, grid: Grid) -> jax.Array:
  r"""Returns :math:`-\tfrac12 \Delta_h \psi` on the trailing grid axes."""
  periodic = grid.boundary == "periodic"
  inv_h2 = [1.0 / h**2 for h in grid.spacing]
  diagonal = sum(inv_h2)
  out = diagonal * psi
  for axis, c in zip(grid.axes, inv_h2):
    neighbours = (_shift(psi, axis, +1, periodic)
                  + _shift(psi, axis, -1, periodic))
    out = out - (0.5 * c) * neighbours
  return out


@functools.partial(jax.jit, inline=True)
def apply_unchecked(psi: jax.Array, potential: jax.Array,
                    grid: Grid) -> jax.Array:
  """:func:`apply_hamiltonian` without input checks, for jitted hot paths.

  The caller guarantees matching trailing shapes and floating inputs.
  """
  return kinetic_stencil(psi, grid) + potential.astype(psi.dtype) * psi


def apply_hamiltonian(psi, V, grid: Grid) -> jax.Array:
  r"""Applies :math:`H = -\tfrac12\Delta_h + \mathrm{diag}(V)` to ``psi``.

  Matrix-free, jit/vmap/grad friendly; ``grid`` is static data and needs no
  ``static_argnames``.

  Args:
    psi: states, shape ``(..., *grid.shape)``.
    V: potential in Hartree, shape ``(..., *grid.shape)``; its leading axes
      broadcast against ``psi``'s (one potential for a batch of states, or one
      per state).
    grid: the :class:`~pgmoe_jax.grid.Grid`.

  Returns:
    ``H psi`` with the broadcast shape and ``psi``'s floating dtype.

  Raises:
    ValueError: on a shape that does not match the grid, batch axes that do
      not broadcast or are empty, or NaN/inf in a concrete ``psi`` or ``V``.
  """
  psi, V = checks.check_inputs(psi, V, grid)
  return apply_unchecked(psi, V, grid)
