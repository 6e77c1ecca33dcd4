"""Pieces shared by the models: input checks, MLPs, smooth bounds."""

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


def squash(x: jax.Array, bound: float) -> jax.Array:
  """``bound * tanh(x / bound)``: identity near 0, smooth limit at +-bound.

  ``bound = 0`` disables it.
  """
  if not bound:
    return x
  return bound * jnp.tanh(x / bound)


def damping(excess: jax.Array) -> jax.Array:
  """1 where ``excess <= 1``, falling like ``excess^-2`` beyond."""
  return 1.0 / (1.0 + jax.nn.relu(excess - 1.0)**2)


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
