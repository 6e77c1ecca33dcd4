r"""The variational energy functional and its companions.

* :func:`energy`: the Rayleigh quotient
  :math:`E[\psi] = \langle\psi|H|\psi\rangle / \langle\psi|\psi\rangle`,
  which by the variational principle is :math:`\ge E_0` and equals it only
  for the ground state. It is invariant to the scale of ``psi`` (the volume
  element cancels), differentiable in ``psi`` and ``V``, and the loss users
  train on.
* :func:`residual`: :math:`\|H\psi - E[\psi]\psi\| / \|\psi\|` in Hartree, zero
  exactly for eigenstates.
* :func:`normalize`: the DESIGN.md convention, ``sum(psi**2) * prod(h) = 1``
  and ``sum(psi) > 0``.

All reduce over the trailing ``grid.ndim`` axes and keep leading batch axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import hamiltonian
from pgmoe_jax.grid import Grid


def _inner(a: jax.Array, b: jax.Array, grid: Grid) -> jax.Array:
  return jnp.sum(a * b, axis=grid.axes)


def _check_nonzero(psi: jax.Array, grid: Grid) -> None:
  if isinstance(psi, jax.core.Tracer):
    return
  norms = np.asarray(_inner(psi, psi, grid))
  if (norms == 0).any():
    index = tuple(int(i) for i in np.argwhere(norms == 0)[0])
    raise ValueError(
        f"psi is identically zero (batch index {index}); the energy of the "
        "zero state is undefined. Pass a nonzero state.")


@jax.jit
def rayleigh_quotient(psi, potential, grid: Grid) -> jax.Array:
  """:func:`energy` without input checks, for jitted hot paths (losses)."""
  h_psi = hamiltonian.apply_unchecked(psi, potential, grid)
  return _inner(psi, h_psi, grid) / _inner(psi, psi, grid)


@jax.jit
def residual_norm(psi, potential, grid: Grid) -> jax.Array:
  """:func:`residual` without input checks, for jitted hot paths."""
  h_psi = hamiltonian.apply_unchecked(psi, potential, grid)
  norm2 = _inner(psi, psi, grid)
  e = _inner(psi, h_psi, grid) / norm2
  r = h_psi - jnp.expand_dims(e, grid.axes) * psi
  return jnp.sqrt(_inner(r, r, grid) / norm2)


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
    ValueError: on mismatched shapes, NaN/inf, or a concrete ``psi`` that is
      identically zero (under ``jit`` a zero state gives NaN instead).
  """
  psi, V = hamiltonian.check_inputs(psi, V, grid)
  _check_nonzero(psi, grid)
  return rayleigh_quotient(psi, V, grid)


def residual(psi, V, grid: Grid) -> jax.Array:
  r"""Relative eigen-residual :math:`\|H\psi - E[\psi]\psi\|/\|\psi\|` (Ha).

  Args and Raises are as for :func:`energy`.

  Returns:
    Residual norms in Hartree with the broadcast batch shape.
  """
  psi, V = hamiltonian.check_inputs(psi, V, grid)
  _check_nonzero(psi, grid)
  return residual_norm(psi, V, grid)


def normalize(psi, grid: Grid) -> jax.Array:
  """Scales states to ``sum(psi**2) * prod(h) = 1`` with ``sum(psi) >= 0``.

  Args:
    psi: states, shape ``(..., *grid.shape)``.
    grid: the grid.

  Returns:
    The normalised states, same shape and dtype. A zero state stays zero.
  """
  psi = hamiltonian.as_float(psi, "psi")
  grid.check_array("psi", psi)
  norm2 = _inner(psi, psi, grid) * grid.volume_element
  sign = jnp.where(jnp.sum(psi, axis=grid.axes) < 0, -1.0, 1.0)
  scale = sign / jnp.sqrt(jnp.where(norm2 > 0, norm2, 1.0))
  return psi * jnp.expand_dims(scale, grid.axes).astype(psi.dtype)
