"""The fixed-cost batched ground-state solver of the physics gate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import kinetic
from pgmoe_jax import potentials
from pgmoe_jax.solvers import lobpcg
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed


def dense_ground_state(v, grid):
  k = kinetic.kinetic_matrix(grid, sparse=False)
  e, vec = np.linalg.eigh(k + np.diag(np.asarray(v).ravel()))
  return e[0], e[1], vec[:, 0].reshape(grid.shape)


@pytest.mark.parametrize("grid, family", [
    (Grid((40,), 20.0), "double_well"),
    # Fast tier: the 1-D, periodic and 3-D cases; the plain 2-D ones slow.
    pytest.param(Grid((12, 12), 20.0), "gaussian_wells",
                 marks=pytest.mark.slow),
    pytest.param(Grid((12, 12), 20.0), "harmonic", marks=pytest.mark.slow),
    (Grid((12, 12), 20.0, "periodic"), "random_smooth"),
    (Grid((6, 6, 6), 20.0), "box_well"),
])
def test_converges_to_the_exact_ground_state(grid, family):
  v = potentials.sample(family, jax.random.key(3), grid, (4,),
                        dtype=jnp.float64)
  e, x = ground_state_fixed(v, grid, 20)
  for i in range(4):
    e0, _, psi0 = dense_ground_state(v[i], grid)
    np.testing.assert_allclose(e[i], e0, rtol=0, atol=1e-9)
    overlap = abs(np.sum(np.asarray(x[i]) * psi0))
    assert overlap > 1 - 1e-8
  # Unit norm and the sign convention (a nodeless state, positive sum).
  np.testing.assert_allclose(jnp.sum(x * x, axis=grid.axes), 1.0, atol=1e-12)
  assert (jnp.sum(x, axis=grid.axes) > 0).all()


def test_energy_is_an_upper_bound_that_falls_with_iterations():
  grid = Grid((16, 16), 20.0)
  v = potentials.sample("gaussian_wells", jax.random.key(0), grid, (8,),
                        dtype=jnp.float64)
  e0 = np.array([dense_ground_state(vi, grid)[0] for vi in v])
  previous = None
  for iters in (0, 1, 2, 4, 8):
    e, _ = ground_state_fixed(v, grid, iters)
    assert (np.asarray(e) >= e0 - 1e-12).all()
    if previous is not None:
      assert (np.asarray(e) <= previous + 1e-12).all()
    previous = np.asarray(e)
  assert np.max(previous - e0) < 1e-4


def test_agrees_with_the_reference_lobpcg_and_honours_a_start():
  grid = Grid((12, 12), 20.0)
  v = potentials.sample("double_well", jax.random.key(1), grid, (4,),
                        dtype=jnp.float64)
  start = jnp.broadcast_to(jnp.asarray(kinetic.kinetic_modes(grid, 2)),
                           (4, 2) + grid.shape)
  e_ref, x_ref, _, _ = lobpcg.lobpcg_batch(v, start, 1e-10, grid,
                                           num_states=1, max_iters=200)
  e, x = ground_state_fixed(v, grid, 20)
  np.testing.assert_allclose(e, e_ref[:, 0], atol=1e-9)
  # Started from the answer, no iteration moves it.
  psi = x_ref[:, 0].reshape(v.shape)
  e_start, x_start = ground_state_fixed(v, grid, 0, start=psi)
  np.testing.assert_allclose(e_start, e_ref[:, 0], atol=1e-9)
  e_one, _ = ground_state_fixed(v, grid, 1, start=psi)
  np.testing.assert_allclose(e_one, e_ref[:, 0], atol=1e-9)


def test_a_zero_direction_is_dropped_not_normalised():
  # A constant potential: the start (K's lowest mode) is already exact, so
  # the residual and the search direction vanish; the result stays exact
  # and finite instead of normalising noise.
  grid = Grid((12, 12), 20.0)
  v = jnp.full((2,) + grid.shape, -3.0, jnp.float64)
  e, x = ground_state_fixed(v, grid, 5)
  k0 = float(kinetic.kinetic_eigenvalues(grid).min())
  np.testing.assert_allclose(e, k0 - 3.0, atol=1e-12)
  assert np.isfinite(np.asarray(x)).all()
