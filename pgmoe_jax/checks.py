"""Validation at the public boundary: clear errors before anything is traced.

Library functions check their inputs here, on concrete arrays, and then
call unchecked kernels; inside ``jit`` (tracers) the value checks are
skipped, because values are unknown at trace time. Every error names the
argument, what was wrong and what to do instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.grid import Grid


def check_grid(grid, where: str = "grid") -> None:
  """Raises TypeError unless ``grid`` is a :class:`~pgmoe_jax.grid.Grid`."""
  if not isinstance(grid, Grid):
    raise TypeError(
        f"{where} must be a pgmoe_jax.Grid, got {type(grid).__name__}.")


def as_float(x, name: str) -> jax.Array:
  """Converts to a JAX floating array, keeping float32/float64 as they are.

  Raises:
    TypeError: ``x`` is complex.
  """
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(f"{name} is complex ({x.dtype}); pgmoe_jax works with real "
                    "states and potentials.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def check_finite(name: str, x) -> None:
  """Raises ValueError if a concrete ``x`` holds NaN or inf."""
  if isinstance(x, jax.core.Tracer):
    return
  finite = np.isfinite(np.asarray(x))
  if not finite.all():
    bad = np.argwhere(~finite)[0]
    raise ValueError(
        f"{name} holds {int((~finite).sum())} non-finite value(s) (NaN or "
        f"inf), the first at index {tuple(int(i) for i in bad)}; clean the "
        "input before calling.")


def check_nonempty(name: str, x, grid: Grid) -> None:
  """Raises ValueError if the batch axes of ``x`` hold no element."""
  shape = tuple(np.shape(x))
  batch = shape[:len(shape) - grid.ndim]
  if 0 in batch:
    raise ValueError(
        f"{name} holds an empty batch (shape {shape}): there is nothing to "
        "compute; pass at least one.")


def check_nonzero(name: str, psi, grid: Grid) -> None:
  """Raises ValueError if a concrete state is identically zero."""
  if isinstance(psi, jax.core.Tracer):
    return
  norms = np.asarray(jnp.sum(psi * psi, axis=grid.axes))
  if (norms == 0).any():
    index = tuple(int(i) for i in np.argwhere(norms == 0)[0])
    raise ValueError(
        f"{name} is identically zero (batch index {index}); the energy of "
        "the zero state is undefined. Pass a nonzero state.")


def check_inputs(psi, potential, grid: Grid, *, psi_name: str = "psi"):
  """Validates and converts ``(psi, V)`` for ``grid``; returns JAX arrays.

  Raises:
    TypeError: if ``grid`` is not a Grid or an input is complex.
    ValueError: if a trailing shape does not match the grid, the leading batch
      axes do not broadcast or are empty, or a concrete input holds NaN or
      inf.
  """
  check_grid(grid)
  psi = as_float(psi, psi_name)
  potential = as_float(potential, "V")
  grid.check_array(psi_name, psi)
  grid.check_array("V", potential)
  try:
    shape = jnp.broadcast_shapes(psi.shape, potential.shape)
  except ValueError:
    raise ValueError(
        f"The batch axes of {psi_name} {psi.shape[:psi.ndim - grid.ndim]} and "
        f"V {potential.shape[:potential.ndim - grid.ndim]} do not broadcast; "
        "give V one potential per state or a single potential.") from None
  check_nonempty(psi_name if 0 in psi.shape else "V", shape, grid)
  check_finite(psi_name, psi)
  check_finite("V", potential)
  return psi, potential
