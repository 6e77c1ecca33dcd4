"""Sampling helpers shared by the potential families (jittable, pure)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.grid import Grid

# Dirichlet fields are padded by this many correlation lengths so the circular
# FFT convolution does not correlate opposite walls: the field covariance at a
# wrapped distance of 4 l is exp(-8) ~ 3e-4 of its variance.
PAD_CORRELATION_LENGTHS = 4.0


def axis_coordinates(grid: Grid, dtype: np.dtype) -> list[jax.Array]:
  """Per-axis coordinates, shaped to broadcast against ``grid.shape``.

  Axis ``a`` comes back with shape ``(1, ..., n_a, ..., 1)`` (``d`` axes) so
  that it broadcasts against ``(*batch_shape, *grid.shape)``.
  """
  d = grid.ndim
  out = []
  for a, x in enumerate(grid.coordinates()):
    shape = [1] * d
    shape[a] = x.size
    out.append(jnp.asarray(x.reshape(shape), dtype=dtype))
  return out


def over_grid(p: jax.Array, grid: Grid) -> jax.Array:
  """Appends ``grid.ndim`` unit axes to a per-sample parameter."""
  return p.reshape(p.shape + (1,) * grid.ndim)


def uniform_in(u: jax.Array, bounds: Any) -> jax.Array:
  """Maps uniform [0, 1) draws onto ``[low, high]`` (arrays broadcast).

  ``low + (high - low) * u`` is exactly ``low`` for a degenerate range, so
  such ranges give exact parameters; the clip keeps rounding from stepping
  past ``high``.
  """
  low, high = (np.asarray(b, dtype=u.dtype) for b in bounds)
  return jnp.clip(low + (high - low) * u, low, high)


def centres(u: jax.Array, grid: Grid, centre_fraction: float) -> jax.Array:
  """Centres uniform in ``[-f L_a, f L_a]`` from draws of shape (..., d)."""
  half = np.asarray(grid.length) * centre_fraction
  return uniform_in(u, (-half, half))


def unit_vectors(u: jax.Array, d: int) -> jax.Array:
  """Unit vectors uniform on the sphere S^{d-1} from uniform [0, 1) draws.

  Args:
    u: draws of shape ``(..., max(d - 1, 1))``.
    d: the dimension, 1, 2 or 3.

  Returns:
    Unit vectors of shape ``(..., d)``: in 1-D exactly +-1; in 2-D
    ``(cos phi, sin phi)``; in 3-D Archimedes' construction, ``z`` uniform in
    [-1, 1] and ``phi`` uniform in [0, 2 pi).
  """
  if d == 1:
    return jnp.where(u[..., :1] < 0.5, -1.0, 1.0).astype(u.dtype)
  phi = 2 * np.pi * u[..., 0]
  if d == 2:
    return jnp.stack([jnp.cos(phi), jnp.sin(phi)], axis=-1)
  z = 2 * u[..., 1] - 1
  rho = jnp.sqrt(jnp.maximum(1 - z**2, 0))
  return jnp.stack([rho * jnp.cos(phi), rho * jnp.sin(phi), z], axis=-1)


def fast_len(n: int) -> int:
  """The smallest 5-smooth integer >= n (cheap FFT length)."""
  while True:
    m = n
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    if m == 1:
      return n
    n += 1
