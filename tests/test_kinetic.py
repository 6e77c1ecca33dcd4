"""The kinetic eigenbasis transforms: the FFT-based sine transform (DST-I)
equals the dense sine matrix, and the solvers built on it are unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import apply_hamiltonian
from pgmoe_jax import kinetic
from pgmoe_jax import potentials
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed


def dense_sine(x, axis):
  n = x.shape[axis]
  q = kinetic.kinetic_eigenbasis(Grid((n,), 1.0))[0][0]
  return np.moveaxis(np.tensordot(x, q, axes=([axis], [0])), -1, axis)


@pytest.mark.parametrize("n", [16, 31, 32, 64, 100, 128, 256, 512])
def test_fft_sine_transform_equals_the_dense_matrix(n):
  x = np.random.default_rng(n).normal(size=(3, n))
  fast = np.asarray(kinetic.sine_transform(jnp.asarray(x), axis=1))
  assert fast.dtype == np.float64
  np.testing.assert_array_less(np.abs(fast - dense_sine(x, 1)), 1e-12)
  # Its own inverse (Q is symmetric and orthogonal).
  back = kinetic.sine_transform(jnp.asarray(fast), axis=1)
  np.testing.assert_array_less(np.abs(np.asarray(back) - x), 1e-12)


def test_fft_sine_transform_on_every_axis_and_in_float32():
  x = np.random.default_rng(0).normal(size=(2, 8, 5, 12))
  for axis in (1, 2, 3):
    np.testing.assert_allclose(
        kinetic.sine_transform(jnp.asarray(x), axis=axis),
        dense_sine(x, axis), atol=1e-13)
  y = kinetic.sine_transform(jnp.asarray(x, jnp.float32), axis=3)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, dense_sine(x, 3), atol=2e-6)


def test_transform_methods_are_chosen_by_size():
  grid = Grid((600, 1100), 20.0)
  assert kinetic.transform_methods(grid) == ("dense", "fft")
  assert kinetic.transform_methods(grid, fft_min_size=16) == ("fft", "fft")
  assert kinetic.transform_methods(grid, fft_min_size=None) == ("dense",) * 2
  # The periodic eigenbasis is eigh's (degenerate pairs in its own order):
  # always dense.
  periodic = Grid((600, 8), 20.0, "periodic")
  assert kinetic.transform_methods(periodic, fft_min_size=1) == ("dense",) * 2
  with pytest.raises(ValueError, match="fft_min_size"):
    kinetic.transform_methods(grid, fft_min_size=0)


@pytest.mark.parametrize("grid", [Grid((7, 9), (3.0, 4.0)),
                                  Grid((6, 5, 8), (2.0, 3.0, 4.0))])
def test_kinetic_inverse_with_fft_is_exact(grid):
  r = np.random.default_rng(1).normal(size=(2,) + grid.shape)
  c = 0.3
  fast = kinetic.make_kinetic_inverse(grid, jnp.float64, fft_min_size=1)
  dense = kinetic.make_kinetic_inverse(grid, jnp.float64, fft_min_size=None)
  x = fast(jnp.asarray(r), c)
  np.testing.assert_allclose(
      apply_hamiltonian(x, np.full(grid.shape, c), grid), r, atol=1e-11)
  np.testing.assert_allclose(x, dense(jnp.asarray(r), c), atol=1e-13)


def test_fixed_iterations_are_the_same_with_the_fft():
  grid = Grid((24, 20), 20.0)
  v = potentials.sample("gaussian_wells", jax.random.key(3), grid, (3,),
                        dtype=jnp.float64)
  e_dense, psi_dense = ground_state_fixed(v, grid, 5, fft_min_size=None)
  e_fast, psi_fast = ground_state_fixed(v, grid, 5, fft_min_size=1)
  np.testing.assert_allclose(e_fast, e_dense, rtol=1e-12)
  np.testing.assert_allclose(psi_fast, psi_dense, atol=1e-10)
