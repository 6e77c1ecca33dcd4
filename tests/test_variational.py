"""The energy functional against exact discrete answers and SciPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from pgmoe_jax import Grid
from pgmoe_jax import energy
from pgmoe_jax import ground_state
from pgmoe_jax import normalize
from pgmoe_jax import residual


def box_energy(grid):
  """The contract: for V = 0, E0 = sum_a (1 - cos(pi/(n+1))) / h^2."""
  return sum((1 - np.cos(np.pi / (n + 1))) / h**2
             for n, h in zip(grid.shape, grid.spacing))


def box_ground_state(grid):
  state = np.ones(())
  for n in grid.shape:
    state = np.multiply.outer(state, np.sin(np.pi * np.arange(1, n + 1) /
                                            (n + 1)))
  return state


def tridiagonal_ground_state(v, h):
  """Lowest eigenpair of -1/2 Lap_h + diag(v) in 1-D (Dirichlet)."""
  n = v.size
  w, u = scipy.linalg.eigh_tridiagonal(1.0 / h**2 + v,
                                       np.full(n - 1, -0.5 / h**2),
                                       select="i", select_range=(0, 0))
  return w[0], u[:, 0] * np.sign(u[:, 0].sum())


BOX_GRIDS = [Grid((11,), 3.0), Grid((9, 14), (2.0, 5.0)),
             Grid((6, 7, 8), (3.0, 2.0, 4.0))]


@pytest.mark.parametrize("grid", BOX_GRIDS, ids=str)
def test_exact_box_energies(grid):
  v = np.zeros(grid.shape)
  exact = box_energy(grid)
  assert float(energy(box_ground_state(grid), v, grid)) == pytest.approx(
      exact, rel=1e-12)
  assert float(residual(box_ground_state(grid), v, grid)) < 1e-10 * exact
  for method in ("eigsh", "lobpcg"):
    e0, psi0 = ground_state(v, grid, method=method)
    assert float(e0) == pytest.approx(exact, rel=1e-10)
    np.testing.assert_allclose(psi0, normalize(box_ground_state(grid), grid),
                               atol=1e-7)


def test_separable_potential_sums_one_dimensional_energies():
  grid = Grid((24, 30), (8.0, 10.0))
  x, y = grid.coordinates()
  vx = -4.0 * np.exp(-(x - 0.7)**2) + 0.3 * x
  vy = 0.5 * y**2 / 4 - 2.0 * np.exp(-(y + 1.0)**2 / 3)
  ex, px = tridiagonal_ground_state(vx, grid.spacing[0])
  ey, py = tridiagonal_ground_state(vy, grid.spacing[1])
  v = vx[:, None] + vy[None, :]
  product = normalize(np.outer(px, py), grid)
  assert float(energy(product, v, grid)) == pytest.approx(ex + ey, abs=1e-10)
  for method in ("eigsh", "lobpcg"):
    e0, psi0 = ground_state(v, grid, method=method)
    assert float(e0) == pytest.approx(ex + ey, abs=1e-10)
    np.testing.assert_allclose(psi0, product, atol=1e-7)


def test_harmonic_oscillator_converges_like_h_squared():
  omega = (1.0, 1.5)
  exact = sum(omega) / 2
  errors = []
  for n in (31, 63, 127):  # h = L/32, L/64, L/128
    grid = Grid((n, n), 12.0)
    x, y = grid.mesh()
    v = 0.5 * (omega[0]**2 * x**2 + omega[1]**2 * y**2)
    e0, psi0 = ground_state(v, grid)
    errors.append(abs(float(e0) - exact))
    assert float(energy(psi0, v, grid)) == pytest.approx(float(e0), abs=1e-10)
  ratios = np.array(errors[:-1]) / np.array(errors[1:])
  np.testing.assert_allclose(ratios, 4.0, rtol=0.05)
  assert errors[-1] < 2e-3


def test_gradients_match_central_differences():
  grid = Grid((7, 6), (3.0, 2.5))
  rng = np.random.default_rng(3)
  psi = rng.normal(size=grid.shape) + 2.0
  v = rng.normal(size=grid.shape) * 3
  g_psi, g_v = jax.grad(energy, argnums=(0, 1))(psi, v, grid)
  eps = 1e-5
  for _ in range(3):
    d = rng.normal(size=grid.shape)
    fd = (float(energy(psi + eps * d, v, grid))
          - float(energy(psi - eps * d, v, grid))) / (2 * eps)
    assert float(jnp.sum(g_psi * d)) == pytest.approx(fd, rel=1e-7, abs=1e-9)
    fd = (float(energy(psi, v + eps * d, grid))
          - float(energy(psi, v - eps * d, grid))) / (2 * eps)
    assert float(jnp.sum(g_v * d)) == pytest.approx(fd, rel=1e-7, abs=1e-9)
  # The gradient of the Rayleigh quotient vanishes at an eigenstate.
  e0, psi0 = ground_state(v, grid)
  assert float(jnp.abs(jax.grad(energy)(psi0, v, grid)).max()) < 1e-8


def test_variational_bound_scale_invariance_and_batching():
  grid = Grid((10, 12), 6.0)
  rng = np.random.default_rng(4)
  x, y = grid.mesh()
  v = -5 * np.exp(-(x**2 + y**2) / 2)
  e0, _ = ground_state(v, grid)
  states = rng.normal(size=(50,) + grid.shape)
  states[:25] = np.abs(states[:25])  # nodeless ones come closer to E0
  energies = np.asarray(energy(states, v, grid))
  assert energies.shape == (50,)
  assert (energies > float(e0)).all()
  np.testing.assert_allclose(energy(7.5 * states, v, grid), energies,
                             rtol=1e-13)
  np.testing.assert_allclose(energy(-states, v, grid), energies, rtol=1e-13)
  loop = [float(energy(s, v, grid)) for s in states[:5]]
  np.testing.assert_allclose(energies[:5], loop, rtol=1e-13)
  np.testing.assert_allclose(jax.jit(energy)(states, v, grid), energies,
                             rtol=1e-13)
  np.testing.assert_allclose(
      jax.vmap(energy, (0, None, None))(states, v, grid), energies, rtol=1e-13)
  res = np.asarray(residual(states, v, grid))
  assert res.shape == (50,) and (res > 0.1).all()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_energy_dtype_follows_input(dtype):
  grid = Grid((9, 9), 4.0)
  psi = jnp.asarray(box_ground_state(grid), dtype)
  e = energy(psi, jnp.zeros(grid.shape, dtype), grid)
  assert e.dtype == dtype
  assert float(e) == pytest.approx(box_energy(grid),
                                   rel=1e-6 if dtype == jnp.float32 else 1e-12)


def test_normalize_convention():
  grid = Grid((5, 6), (2.0, 3.0))
  psi = -np.abs(np.random.default_rng(5).normal(size=(2,) + grid.shape))
  out = np.asarray(normalize(psi, grid))
  np.testing.assert_allclose((out**2).sum((-1, -2)) * grid.volume_element, 1.0,
                             rtol=1e-14)
  assert (out.sum((-1, -2)) > 0).all()
  np.testing.assert_allclose(out, -psi / np.sqrt(
      (psi**2).sum((-1, -2), keepdims=True) * grid.volume_element))


def test_energy_bad_inputs():
  grid = Grid((5, 5), 2.0)
  zero = np.zeros((2,) + grid.shape)
  zero[0] = 1.0
  with pytest.raises(ValueError, match=r"identically zero \(batch index "
                     r"\(1,\)\)"):
    energy(zero, np.zeros(grid.shape), grid)
  with pytest.raises(ValueError, match="identically zero"):
    residual(np.zeros(grid.shape), np.zeros(grid.shape), grid)
  with pytest.raises(ValueError, match="does not match the grid"):
    energy(np.ones((5, 4)), np.zeros(grid.shape), grid)
  with pytest.raises(ValueError, match="non-finite"):
    energy(np.ones(grid.shape), np.full(grid.shape, np.nan), grid)
