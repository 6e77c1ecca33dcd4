"""bounds: upper and lower bounds on E0 against the dense H's exact spectrum."""

import jax
import numpy as np
import pytest

from pgmoe_jax import bounds
from pgmoe_jax import kinetic
from pgmoe_jax import potentials
from pgmoe_jax.grid import Grid

DIRICHLET = Grid((12, 12), 10.0)
PERIODIC = Grid((12, 12), 10.0, "periodic")
NOISE = (1e-7, 1e-5, 1e-3, 1e-2, 1e-1, 0.5)


def dense_spectrum(v, grid):
  """Every eigenpair of the dense H for each potential: (E (b, N), U)."""
  k = kinetic.kinetic_matrix(grid, sparse=False)
  flat = v.reshape(len(v), -1)
  e, u = np.linalg.eigh(k[None] + flat[:, :, None] * np.eye(grid.size))
  return e, u


def potentials_for(grid, seed=0):
  """Weak random fields (a rigorous bound exists) and gaussian wells (none)."""
  rng = np.random.default_rng(seed)
  weak = rng.uniform(0.0, 0.05, size=(4,) + grid.shape)
  wells = np.asarray(potentials.gaussian_wells(jax.random.key(seed), grid,
                                               (4,)))
  rough = rng.uniform(-3.0, 3.0, size=(4,) + grid.shape)
  return np.concatenate([weak, wells, rough])


@pytest.fixture(scope="module", params=[DIRICHLET, PERIODIC],
                ids=["dirichlet", "periodic"])
def case(request):
  grid = request.param
  v = potentials_for(grid)
  e, u = dense_spectrum(v, grid)
  psi0 = u[:, :, 0].reshape(v.shape)
  return grid, v, e, psi0


def test_kinetic_lambda1_is_ks_second_eigenvalue():
  for grid in (DIRICHLET, PERIODIC, Grid((10, 14), (8.0, 12.0))):
    k = kinetic.kinetic_matrix(grid, sparse=False)
    assert bounds.kinetic_lambda1(grid) == pytest.approx(
        np.linalg.eigvalsh(k)[1], abs=1e-12)


def test_beta_rigorous_is_exact_for_a_constant_potential():
  # H = K + c: E1 = lambda_1(K) + c exactly, so the bound is tight there.
  for grid in (DIRICHLET, PERIODIC, Grid((10, 14), (8.0, 12.0))):
    v = np.full((2,) + grid.shape, 0.0) + np.array([0.0, -3.5])[:, None, None]
    e, _ = dense_spectrum(v, grid)
    np.testing.assert_allclose(bounds.beta_rigorous(v, grid), e[:, 1],
                               atol=1e-12)


def test_beta_rigorous_is_below_e1(case):
  grid, v, e, _ = case
  beta = bounds.beta_rigorous(v, grid)
  assert beta.shape == (len(v),)
  assert (beta <= e[:, 1] + 1e-12).all()
  # ... and above E0 only where the potential is weak (not vacuous).
  assert (beta[:4] > e[:4, 0]).all() and (beta[4:8] < e[4:8, 0]).all()


def test_exact_ground_state_gives_tight_bounds(case):
  grid, v, e, psi0 = case
  exact = bounds.ground_state_bounds(3.7 * psi0, v, grid, beta=e[:, 1])
  np.testing.assert_allclose(exact.energy, e[:, 0], atol=1e-9)
  assert (exact.residual < 1e-9).all()
  np.testing.assert_allclose(exact.weinstein, e[:, 0], atol=1e-9)
  np.testing.assert_allclose(exact.temple, e[:, 0], atol=1e-9)
  np.testing.assert_allclose(exact.lower, e[:, 0], atol=1e-9)
  rigorous = bounds.ground_state_bounds(psi0, v, grid)
  # The weak fields have a rigorous lower bound, equal to E0 here.
  np.testing.assert_allclose(rigorous.lower[:4], e[:4, 0], atol=1e-9)


@pytest.mark.parametrize("noise", NOISE)
def test_perturbed_states_are_bounded_on_both_sides(case, noise):
  grid, v, e, psi0 = case
  rng = np.random.default_rng(int(-np.log10(noise) * 10))
  psi = psi0 + noise * rng.normal(size=psi0.shape) * np.abs(psi0).max()
  e0, e1 = e[:, 0], e[:, 1]
  got = bounds.ground_state_bounds(psi, v, grid)
  assert (got.energy >= e0 - 1e-12).all()
  # Weinstein: an eigenvalue within r of E, always.
  nearest = np.abs(e - got.energy[:, None]).min(axis=1)
  assert (nearest <= got.residual + 1e-12).all()
  # The rigorous bounds hold wherever they are given ...
  for lower in (got.weinstein, got.temple, got.lower):
    given = ~np.isnan(lower)
    assert (lower[given] <= e0[given] + 1e-12).all()
  # ... and are NaN exactly where their conditions fail.
  beta = bounds.beta_rigorous(v, grid)
  np.testing.assert_array_equal(np.isnan(got.weinstein),
                                ~(got.energy + got.residual < beta))
  np.testing.assert_array_equal(np.isnan(got.temple), ~(got.energy < beta))
  np.testing.assert_array_equal(got.beta, beta)
  np.testing.assert_array_equal(
      got.lower, np.fmax(got.weinstein, got.temple))
  # Temple with the exact E1 holds and beats Weinstein for small residuals.
  sharp = bounds.ground_state_bounds(psi, v, grid, beta=e1)
  given = ~np.isnan(sharp.temple)
  assert (sharp.temple[given] <= e0[given] + 1e-12).all()
  np.testing.assert_array_equal(given, sharp.energy < e1)
  if noise <= 1e-3:
    assert given.all()
  both = given & ~np.isnan(sharp.weinstein)
  assert (sharp.temple[both] >= sharp.weinstein[both]).all()
  gap_t = sharp.energy - sharp.temple
  gap_w = sharp.energy - sharp.weinstein
  # E - temple = r * (r / (E1 - E)): smaller than E - weinstein = r by the
  # ratio of the residual to the gap.
  np.testing.assert_allclose(
      gap_t[both], gap_w[both] * sharp.residual[both] / (e1 - sharp.energy)[
          both], rtol=1e-9, atol=1e-15)
  if noise <= 1e-5:
    assert both.all() and (gap_t <= 1e-2 * gap_w).all()


def test_rigorous_bounds_exist_for_weak_fields_only(case):
  grid, v, e, psi0 = case
  rng = np.random.default_rng(1)
  psi = psi0 + 1e-3 * rng.normal(size=psi0.shape) * np.abs(psi0).max()
  got = bounds.ground_state_bounds(psi, v, grid)
  assert not np.isnan(got.lower[:4]).any()
  assert np.isnan(got.lower[4:8]).all()


def test_lower_bounds_formulas():
  got = bounds.lower_bounds([1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.5, 0.0],
                            [2.0, 1.05, 1.2, 1.0])
  np.testing.assert_allclose(got.weinstein, [0.9, np.nan, np.nan, np.nan])
  np.testing.assert_allclose(got.temple,
                             [1.0 - 0.01, 1.0 - 0.2, 1.0 - 0.25 / 0.2,
                              np.nan])
  np.testing.assert_allclose(got.lower, [0.99, 0.8, -0.25, np.nan])


def test_bad_input_is_named():
  grid = DIRICHLET
  v = np.zeros((2,) + grid.shape)
  psi = np.ones((2,) + grid.shape)
  with pytest.raises(ValueError, match="does not match the grid"):
    bounds.ground_state_bounds(np.ones((2, 12, 11)), v, grid)
  with pytest.raises(ValueError, match="do not broadcast"):
    bounds.ground_state_bounds(np.ones((3,) + grid.shape), v, grid)
  bad = psi.copy()
  bad[1, 2, 3] = np.nan
  with pytest.raises(ValueError, match=r"psi holds 1 non-finite.*\(1, 2, 3\)"):
    bounds.ground_state_bounds(bad, v, grid)
  with pytest.raises(ValueError, match="V holds 1 non-finite"):
    bounds.beta_rigorous(np.where(bad == 1, 0.0, np.inf), grid)
  with pytest.raises(ValueError, match="identically zero"):
    bounds.ground_state_bounds(0 * psi, v, grid)
  with pytest.raises(ValueError, match="beta holds 1 non-finite"):
    bounds.ground_state_bounds(psi, v, grid, beta=[1.0, np.nan])
  with pytest.raises(ValueError, match="negative"):
    bounds.lower_bounds([1.0], [-0.1], [2.0])
  with pytest.raises(ValueError, match="empty batch"):
    bounds.beta_rigorous(np.zeros((0,) + grid.shape), grid)
  with pytest.raises(TypeError, match="pgmoe_jax.Grid"):
    bounds.beta_rigorous(v, (12, 12))
  with jax.enable_x64(False):
    with pytest.raises(ValueError, match="jax_enable_x64"):
      bounds.ground_state_bounds(psi, v, grid)
