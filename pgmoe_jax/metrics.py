r"""Metrics with the names and definitions of DESIGN.md.

* fidelity :math:`F = (a\cdot b)^2 / ((a\cdot a)(b\cdot b))`, reported as the
  infidelity :math:`1 - F` (insensitive to scale and sign);
* energy error :math:`dE = E[\psi_{pred}] - E_0` in milli-Hartree;
* residual: :func:`pgmoe_jax.energy.residual`.

Reductions run over the trailing ``grid.ndim`` axes, batch axes are kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgmoe_jax import hamiltonian
from pgmoe_jax.grid import Grid

MHA_PER_HA = 1000.0
CHEMICAL_ACCURACY_MHA = 1.6


def fidelity(a, b, grid: Grid) -> jax.Array:
  """Squared overlap of two states, in [0, 1]; shape: the batch axes."""
  a = hamiltonian.as_float(a, "a")
  b = hamiltonian.as_float(b, "b")
  grid.check_array("a", a)
  grid.check_array("b", b)
  ab = jnp.sum(a * b, axis=grid.axes)
  aa = jnp.sum(a * a, axis=grid.axes)
  bb = jnp.sum(b * b, axis=grid.axes)
  return ab**2 / (aa * bb)


def infidelity(a, b, grid: Grid) -> jax.Array:
  """``1 - fidelity(a, b)``; zero for equal states up to scale and sign."""
  return 1.0 - fidelity(a, b, grid)
