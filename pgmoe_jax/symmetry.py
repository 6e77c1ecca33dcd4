"""The grid's exact symmetries: reflections and permutations of equal axes.

The stencil Hamiltonian commutes with every map here (the coordinates are
symmetric about 0 on Dirichlet and periodic grids), so a symmetry applied to
``V`` maps its ground state the same way. Training augments with them
(:mod:`pgmoe_jax.training.losses`) and inference can average over them
(``load_model(symmetrize=True)``). For a square 2-D grid they are the
8-element dihedral group of rotations by 90 degrees and reflections.
"""

from __future__ import annotations

import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.grid import Grid
from pgmoe_jax.variational import normalize_unchecked

Transform = Callable[[jax.Array], jax.Array]


def symmetry_transforms(grid: Grid) -> list[Transform]:
  """The symmetries as functions on arrays ``(..., *grid.shape)``.

  Axis reflections always hold; permutations of axes hold between axes with
  equal points and lengths. The identity comes first.
  """
  d = grid.ndim
  axes = grid.axes
  perms = [p for p in itertools.permutations(range(d))
           if all(grid.shape[i] == grid.shape[p[i]] and
                  grid.length[i] == grid.length[p[i]] for i in range(d))]
  transforms = []
  for perm in perms:
    for flips in itertools.product((False, True), repeat=d):
      def transform(x, perm=perm, flips=flips):
        lead = x.ndim - d
        x = jnp.transpose(x, tuple(range(lead)) + tuple(lead + p
                                                        for p in perm))
        flip_axes = tuple(a for a, f in zip(axes, flips) if f)
        return jnp.flip(x, flip_axes) if flip_axes else x
      transforms.append(transform)
  return transforms


def symmetry_pairs(grid: Grid) -> list[tuple[Transform, Transform]]:
  """:func:`symmetry_transforms`, each paired with its inverse.

  The symmetries form a group, so every inverse is one of them; it is found
  by probing with the grid's flat indices.
  """
  transforms = symmetry_transforms(grid)
  probe = jnp.arange(grid.size).reshape(grid.shape)
  pairs = []
  for transform in transforms:
    image = transform(probe)
    inverse = next(u for u in transforms
                   if np.array_equal(u(image), probe))
    pairs.append((transform, inverse))
  return pairs


def symmetrized(apply: Callable, grid: Grid) -> Callable:
  """``apply(params, V (b, *grid.shape))`` averaged over the symmetries.

  ``V`` is transformed by every symmetry, predicted in one call on a batch
  that many times larger, each prediction is mapped back, and the mean is
  normalised: exactly equivariant by construction.
  """
  pairs = symmetry_pairs(grid)

  def averaged(params, v):
    b = v.shape[0]
    psi = apply(params, jnp.concatenate([t(v) for t, _ in pairs]))
    psi = sum(inverse(psi[i * b:(i + 1) * b])
              for i, (_, inverse) in enumerate(pairs))
    return normalize_unchecked(psi, grid)

  return averaged
