"""Pieces shared by the models: input checks, normalisation, MLPs."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgmoe_jax.grid import Grid


def check_potential(potential: jax.Array, grid: Grid) -> None:
  """Models take a batch ``(b, *grid.shape)``; raise a clear error if not."""
  if potential.ndim != grid.ndim + 1 or potential.shape[1:] != grid.shape:
    raise ValueError(
        f"The model expects potentials of shape (batch, "
        f"{', '.join(map(str, grid.shape))}) for {grid}, got "
        f"{tuple(potential.shape)}.")


def normalize(psi: jax.Array, grid: Grid) -> jax.Array:
  """``psi / sqrt(sum(psi**2) prod(h))`` over the trailing grid axes."""
  norm2 = jnp.sum(psi * psi, axis=grid.axes, keepdims=True)
  return psi / jnp.sqrt(norm2 * grid.volume_element)


class MLP(nn.Module):
  """GELU MLP; the last layer starts at ``last_init_scale`` x the usual init.

  A small last layer makes a freshly initialised correction network output
  nearly zero, so a model starts from its physics prior.
  """
  hidden: Sequence[int]
  out: int
  last_init_scale: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.hidden:
      x = nn.gelu(nn.Dense(width)(x))
    init = nn.initializers.variance_scaling(
        self.last_init_scale**2, "fan_in", "truncated_normal")
    if self.last_init_scale == 0:
      init = nn.initializers.zeros
    return nn.Dense(self.out, kernel_init=init)(x)
