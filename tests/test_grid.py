"""Grid: the grid conventions, validation, and use under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import Grid


def test_dirichlet_coordinates_and_spacing():
  grid = Grid((4, 9), (10.0, 5.0))
  assert grid.ndim == 2 and grid.size == 36
  assert grid.spacing == pytest.approx((2.0, 0.5))
  x, y = grid.coordinates()
  np.testing.assert_allclose(x, [-3.0, -1.0, 1.0, 3.0], atol=1e-15)
  np.testing.assert_allclose(y, -2.5 + 0.5 * np.arange(1, 10), atol=1e-15)
  assert grid.volume_element == pytest.approx(1.0)
  mx, my = grid.mesh()
  assert mx.shape == my.shape == (4, 9)
  assert mx[2, 7] == x[2] and my[2, 7] == y[7]


def test_periodic_coordinates_and_spacing():
  grid = Grid(8, 4.0, "periodic")
  assert grid.shape == (8,) and grid.length == (4.0,)
  assert grid.spacing == pytest.approx((0.5,))
  np.testing.assert_allclose(grid.coordinates()[0],
                             -2.0 + 0.5 * np.arange(8), atol=1e-15)


def test_scalar_length_broadcasts_and_grids_hash_equal():
  a = Grid((8, 8, 8), 20)
  b = Grid([8, 8, 8], (20.0, 20.0, 20.0))
  assert a == b and hash(a) == hash(b)
  assert a.length == (20.0, 20.0, 20.0)
  assert Grid((8, 8), 20) != Grid((8, 8), 20, "periodic")
  with pytest.raises(dataclasses_frozen_error()):
    a.shape = (4, 4, 4)


def dataclasses_frozen_error():
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.FrozenInstanceError


def test_grid_passes_through_jit_without_static_argnames():
  traces = []

  @jax.jit
  def spacing_sum(x, grid):
    traces.append(grid)
    return x * sum(grid.spacing)

  out = spacing_sum(jnp.ones(()), Grid((3, 3), 8.0))
  np.testing.assert_allclose(out, 4.0)
  spacing_sum(jnp.ones(()), Grid((3, 3), 8.0))
  assert len(traces) == 1  # an equal grid hits the cache
  spacing_sum(jnp.ones(()), Grid((3, 3), 4.0))
  assert len(traces) == 2  # a different grid retraces


@pytest.mark.parametrize("kwargs, message", [
    (dict(shape=(), length=1.0), "1, 2 or 3 spatial dimensions"),
    (dict(shape=(4, 4, 4, 4), length=1.0), "1, 2 or 3 spatial dimensions"),
    (dict(shape=(2, 8), length=1.0), "at least 3 points"),
    (dict(shape=(8, 4.5), length=1.0), "must hold integers"),
    (dict(shape=(8, 8), length=0.0), "positive and finite"),
    (dict(shape=(8, 8), length=-3.0), "positive and finite"),
    (dict(shape=(8, 8), length=float("nan")), "positive and finite"),
    (dict(shape=(8, 8), length=(1.0, 2.0, 3.0)), "one length or one per axis"),
    (dict(shape=(8, 8), length=1.0, boundary="neumann"),
     "known boundaries: dirichlet, periodic"),
])
def test_bad_grids_raise_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    Grid(**kwargs)


def test_string_shape_is_a_type_error():
  with pytest.raises(TypeError, match="string"):
    Grid("32", 20.0)


def test_check_array_names_the_array_and_expected_shape():
  grid = Grid((4, 5), 1.0)
  grid.check_array("psi", np.zeros((3, 4, 5)))
  with pytest.raises(ValueError, match=r"psi has shape \(5, 4\).*"
                     r"\(\[batch\.\.\.,\] 4, 5\)"):
    grid.check_array("psi", np.zeros((5, 4)))
