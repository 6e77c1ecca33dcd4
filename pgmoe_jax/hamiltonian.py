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
import numpy as np

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


def as_float(x, name: str) -> jax.Array:
  """Converts to a JAX floating array, keeping float32/float64 as they are."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(f"{name} is complex ({x.dtype}); pgmoe_jax works with real "
                    "states and potentials.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def check_finite(name: str, x: jax.Array) -> None:
  """Raises ValueError if a concrete ``x`` holds NaN or inf.

  Under ``jit`` (a tracer) the check is skipped: values are unknown at trace
  time, and validation belongs at the boundary where arrays are concrete.
  """
  if isinstance(x, jax.core.Tracer):
    return
  finite = np.isfinite(np.asarray(x))
  if not finite.all():
    bad = np.argwhere(~finite)[0]
    raise ValueError(
        f"{name} holds {int((~finite).sum())} non-finite value(s) (NaN or "
        "inf), "
        f"the first at index {tuple(int(i) for i in bad)}; clean the input "
        "before calling.")


def check_inputs(psi, potential, grid: Grid, *, psi_name: str = "psi"):
  """Validates and converts ``(psi, V)`` for ``grid``; returns JAX arrays.

  Raises:
    TypeError: if ``grid`` is not a Grid or an input is complex.
    ValueError: if a trailing shape does not match the grid, the leading batch
      axes do not broadcast, or a concrete input holds NaN or inf.
  """
  if not isinstance(grid, Grid):
    raise TypeError(
        f"grid must be a pgmoe_jax.Grid, got {type(grid).__name__}.")
  psi = as_float(psi, psi_name)
  potential = as_float(potential, "V")
  grid.check_array(psi_name, psi)
  grid.check_array("V", potential)
  try:
    jnp.broadcast_shapes(psi.shape, potential.shape)
  except ValueError:
    raise ValueError(
        f"The batch axes of {psi_name} {psi.shape[:psi.ndim - grid.ndim]} and "
        f"V {potential.shape[:potential.ndim - grid.ndim]} do not broadcast; "
        "give V one potential per state or a single potential.") from None
  check_finite(psi_name, psi)
  check_finite("V", potential)
  return psi, potential


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
      not broadcast, or NaN/inf in a concrete ``psi`` or ``V``.
  """
  psi, V = check_inputs(psi, V, grid)
  return apply_unchecked(psi, V, grid)
