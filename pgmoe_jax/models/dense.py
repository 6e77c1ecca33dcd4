"""The monolithic baseline: flattened V -> MLP -> all n^d values of psi.

Its output layer alone has ``hidden * n^d`` weights, which is what PG-MoE
avoids. Positivity by softplus; normalised so that
``sum(psi**2) * prod(h) = 1``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from pgmoe_jax.grid import Grid
from pgmoe_jax.models import common
from pgmoe_jax.variational import normalize_unchecked


class Dense(nn.Module):
  """MLP from the whole potential to the whole state.

  Attributes:
    grid: the grid.
    hidden: hidden layer widths.
    potential_scale: V is divided by this (Hartree) before the first layer.
  """
  grid: Grid
  hidden: Sequence[int] = (512, 512)
  potential_scale: float = 10.0

  def activations_per_sample(self) -> int:
    """The hidden layers (the input and output are grid-sized arrays,
    counted apart)."""
    return sum(int(h) for h in self.hidden)

  @nn.compact
  def __call__(self, potential: jax.Array) -> jax.Array:
    common.check_potential(potential, self.grid)
    x = potential.reshape(potential.shape[0], -1) / self.potential_scale
    for width in self.hidden:
      x = nn.gelu(nn.Dense(width)(x))
    x = nn.Dense(self.grid.size)(x)
    psi = jax.nn.softplus(x).reshape(potential.shape)
    return normalize_unchecked(psi, self.grid)
