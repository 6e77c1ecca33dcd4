r"""The variational energy functional and its companions.

* :func:`energy`: the Rayleigh quotient
  :math:`E[\psi] = \langle\psi|H|\psi\rangle / \langle\psi|\psi\rangle`,
  which by the variational principle is :math:`\ge E_0` and equals it only
  for the ground state. It is invariant to the scale of ``psi`` (the volume
  element cancels), differentiable in ``psi`` and ``V``, and the loss users
  train on.
* :func:`residual`: :math:`\|H\psi - E[\psi]\psi\| / \|\psi\|` in Hartree, zero
  exactly for eigenstates.
* :func:`normalize`: the convention for states, ``sum(psi**2) * prod(h) = 1``
  and ``sum(psi) > 0``.

Each has an unchecked twin for jitted hot paths (:func:`rayleigh_quotient`,
:func:`residual_norm`, :func:`normalize_unchecked`): the models, losses,
solvers, data validation and evaluation all compute these quantities through
this module. All reduce over the trailing ``grid.ndim`` axes and keep leading
batch axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgmoe_jax import checks
from pgmoe_jax import hamiltonian
from pgmoe_jax.grid import Grid


def _inner(a: jax.Array, b: jax.Array, grid: Grid) -> jax.Array:
  return jnp.sum(a * b, axis=grid.axes)


@jax.jit
def rayleigh_quotient(psi, potential, grid: Grid) -> jax.Array:
  """:func:`energy` without input checks, for jitted hot paths (losses)."""
  h_psi = hamiltonian.apply_unchecked(psi, potential, grid)
  return _inner(psi, h_psi, grid) / _inner(psi, psi, grid)


@jax.jit
def residual_norm(psi, potential, grid: Grid, energy=None) -> jax.Array:
  r""":func:`residual` without input checks, for jitted hot paths.

  Args:
    psi: ``(..., *grid.shape)``.
    potential: broadcastable against ``psi``.
    grid: the grid.
    energy: ``None`` for the state's own Rayleigh quotient, or given
      energies (batch shape) to measure :math:`\|H\psi - E\psi\|/\|\psi\|`
      for a claimed eigenpair (data validation checks stored pairs so).
  """
  h_psi = hamiltonian.apply_unchecked(psi, potential, grid)
  norm2 = _inner(psi, psi, grid)
  e = _inner(psi, h_psi, grid) / norm2 if energy is None else energy
  r = h_psi - jnp.expand_dims(jnp.asarray(e, psi.dtype), grid.axes) * psi
  return jnp.sqrt(_inner(r, r, grid) / norm2)


def normalize_unchecked(psi, grid: Grid) -> jax.Array:
  """:func:`normalize` without input checks (jittable, for models)."""
  norm2 = jnp.sum(psi * psi, axis=grid.axes, keepdims=True) * (
      grid.volume_element)
  sign = jnp.where(jnp.sum(psi, axis=grid.axes, keepdims=True) < 0, -1.0,
                   1.0).astype(psi.dtype)
  # (sign * psi) / sqrt(.): a positive state comes out bitwise as
  # psi / sqrt(norm2), the models' output since the first release.
  return (sign * psi) / jnp.sqrt(jnp.where(norm2 > 0, norm2, 1.0))


def energy(psi, V, grid: Grid) -> jax.Array:
  r"""Rayleigh quotient :math:`\langle\psi|H|\psi\rangle /
  \langle\psi|\psi\rangle`.

  Args:
    psi: states, shape ``(..., *grid.shape)``; any nonzero scale.
    V: potentials in Hartree, broadcastable against ``psi`` (see
      :func:`~pgmoe_jax.hamiltonian.apply_hamiltonian`).
    grid: the grid.

  Returns:
    Energies in Hartree with the broadcast batch shape, ``psi``'s dtype.

  Raises:
    ValueError: on mismatched shapes, an empty batch, NaN/inf, or a concrete
      ``psi`` that is identically zero (under ``jit`` a zero state gives NaN
      instead).
  """
  psi, V = checks.check_inputs(psi, V, grid)
  checks.check_nonzero("psi", psi, grid)
  return rayleigh_quotient(psi, V, grid)


def residual(psi, V, grid: Grid) -> jax.Array:
  r"""Relative eigen-residual :math:`\|H\psi - E[\psi]\psi\|/\|\psi\|` (Ha).

  Args and Raises are as for :func:`energy`.

  Returns:
    Residual norms in Hartree with the broadcast batch shape.
  """
  psi, V = checks.check_inputs(psi, V, grid)
  checks.check_nonzero("psi", psi, grid)
  return residual_norm(psi, V, grid)


def normalize(psi, grid: Grid) -> jax.Array:
  """Scales states to ``sum(psi**2) * prod(h) = 1`` with ``sum(psi) >= 0``.

  Args:
    psi: states, shape ``(..., *grid.shape)``.
    grid: the grid.

  Returns:
    The normalised states, same shape and dtype. A zero state stays zero.

  Raises:
    ValueError: a shape that does not match the grid.
  """
  checks.check_grid(grid)
  psi = checks.as_float(psi, "psi")
  grid.check_array("psi", psi)
  return normalize_unchecked(psi, grid)
