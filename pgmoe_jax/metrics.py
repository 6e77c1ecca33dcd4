r"""The metrics every table and log reports, with one definition each.

* fidelity :math:`F = (a\cdot b)^2 / ((a\cdot a)(b\cdot b))`, reported as the
  infidelity :math:`1 - F` (insensitive to scale and sign);
* energy error :math:`dE = E[\psi_{pred}] - E_0` in milli-Hartree under the
  exact discrete H (:math:`\ge 0` by the variational principle; 1.6 mHa is
  "chemical accuracy");
* residual :math:`\|H\psi - E[\psi]\psi\| / \|\psi\|` in Hartree
  (:func:`pgmoe_jax.variational.residual`).

:func:`score` computes all of them per sample. Reductions run over the
trailing ``grid.ndim`` axes, batch axes are kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgmoe_jax import checks
from pgmoe_jax.grid import Grid
from pgmoe_jax.variational import rayleigh_quotient
from pgmoe_jax.variational import residual_norm

MHA_PER_HA = 1000.0
CHEMICAL_ACCURACY_MHA = 1.6


def fidelity(a, b, grid: Grid) -> jax.Array:
  """Squared overlap of two states, in [0, 1]; shape: the batch axes."""
  a = checks.as_float(a, "a")
  b = checks.as_float(b, "b")
  grid.check_array("a", a)
  grid.check_array("b", b)
  ab = jnp.sum(a * b, axis=grid.axes)
  aa = jnp.sum(a * a, axis=grid.axes)
  bb = jnp.sum(b * b, axis=grid.axes)
  return ab**2 / (aa * bb)


def infidelity(a, b, grid: Grid) -> jax.Array:
  """``1 - fidelity(a, b)``; zero for equal states up to scale and sign."""
  return 1.0 - fidelity(a, b, grid)


# What :func:`score` returns per sample, in this order.
SCORE_KEYS = ("infidelity", "energy", "energy_error_mha", "residual")


def score(psi, potential, psi0, e0, grid: Grid) -> dict[str, jax.Array]:
  """Per-sample metrics of predicted states against labelled ground states.

  The one scorer: training's validation and the evaluation tables both
  reduce these. Unchecked and jittable; computed in ``psi``'s dtype.

  Args:
    psi: predictions ``(b, *grid.shape)``, any scale.
    potential: ``(b, *grid.shape)`` in Hartree.
    psi0: the reference ground states, same shape.
    e0: ``(b,)`` reference energies in Hartree.
    grid: the grid.

  Returns:
    ``infidelity`` (1 - F against ``psi0``), ``energy`` (``E[psi]`` under the
    exact H, Ha), ``energy_error_mha`` (``E[psi] - E0`` in mHa) and
    ``residual`` (``||H psi - E psi|| / ||psi||``, Ha), each ``(b,)``.
  """
  potential = potential.astype(psi.dtype)
  e = rayleigh_quotient(psi, potential, grid)
  return {
      "infidelity": infidelity(psi, psi0.astype(psi.dtype), grid),
      "energy": e,
      "energy_error_mha": (e - e0.astype(psi.dtype)) * MHA_PER_HA,
      "residual": residual_norm(psi, potential, grid),
  }
