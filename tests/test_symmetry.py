"""The grid's exact symmetries: states follow their potentials; inverses."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import labelled
from pgmoe_jax import Grid
from pgmoe_jax import energy
from pgmoe_jax import residual
from pgmoe_jax import symmetry


@pytest.mark.parametrize("grid, count", [
    (Grid((10, 10), 8.0), 8), (Grid((10, 12), (8.0, 9.0)), 4),
    (Grid((6, 6, 6), 6.0), 48), (Grid((9,), 5.0), 2)])
def test_symmetries_are_exact(grid, count):
  transforms = symmetry.symmetry_transforms(grid)
  assert len(transforms) == count
  batch = labelled(grid, 1, seed=3)
  v, psi0, e0 = batch["potential"], batch["psi0"], batch["E0"]
  images = set()
  for transform in transforms:
    tv, tpsi = transform(v), transform(psi0)
    # The transformed state is the ground state of the transformed potential.
    assert float(residual(tpsi, tv, grid)[0]) < 1e-8
    np.testing.assert_allclose(energy(tpsi, tv, grid), e0, atol=1e-10)
    images.add(np.asarray(tv).tobytes())
  assert len(images) == count  # all distinct for a generic potential


@pytest.mark.parametrize("grid", [
    Grid((10, 10), 8.0), Grid((10, 12), (8.0, 9.0)), Grid((6, 6, 6), 6.0)])
def test_symmetry_pairs_invert(grid):
  pairs = symmetry.symmetry_pairs(grid)
  assert len(pairs) == len(symmetry.symmetry_transforms(grid))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2,) + grid.shape))
  for transform, inverse in pairs:
    np.testing.assert_array_equal(inverse(transform(x)), x)
    np.testing.assert_array_equal(transform(inverse(x)), x)
