"""The coarse-to-fine cascade: levels, exactness, solve(method="cascade")."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import energy
from pgmoe_jax import hamiltonian
from pgmoe_jax import kinetic
from pgmoe_jax import multigrid
from pgmoe_jax import potentials
from pgmoe_jax import solvers
from pgmoe_jax.memory import InsufficientMemoryError
from pgmoe_jax.solvers import cascade
from pgmoe_jax.solvers import solve
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed
from pgmoe_jax.solvers.coarse_to_fine import cascade_unchecked
from pgmoe_jax.solvers.smoothing import chebyshev_steps
from pgmoe_jax.solvers.smoothing import jacobi_sweeps
from pgmoe_jax.solvers.smoothing import stepped_sweeps
from pgmoe_jax.variational import normalize_unchecked

GRID = Grid((32, 32), 20.0)


def box_energy(grid):
  return sum((1 - np.cos(np.pi / (n + 1))) / h**2
             for n, h in zip(grid.shape, grid.spacing))


@pytest.fixture(scope="module")
def wells():
  return np.asarray(potentials.gaussian_wells(jax.random.key(0), GRID, (4,)))


@pytest.fixture(scope="module")
def exact(wells):
  return solve(wells, GRID, method="eigsh", num_states=2)


def test_levels_halve_up_to_the_grid():
  grids = solvers.coarse_to_fine.level_grids(Grid((64, 32), (20.0, 10.0)), 3)
  assert [g.shape for g in grids] == [(16, 8), (32, 16), (64, 32)]
  assert all(g.length == (20.0, 10.0) for g in grids)


def test_one_level_is_the_fixed_cost_solver(wells):
  e, psi = cascade(wells, GRID, (5,))
  e_ref, x_ref = ground_state_fixed(jnp.asarray(wells), GRID, 5)
  np.testing.assert_allclose(e, e_ref, rtol=0, atol=1e-12)
  np.testing.assert_allclose(psi, normalize_unchecked(x_ref, GRID),
                             rtol=0, atol=1e-12)


def test_each_level_starts_from_the_interpolated_level_below(wells):
  # (4, 0): 4 iterations at 16x16 on the block means, then interpolation
  # only; (4, 3): then 3 fine iterations from that start.
  coarse = Grid((16, 16), 20.0)
  v16 = multigrid.block_mean(jnp.asarray(wells), GRID, (16, 16))
  _, x16 = ground_state_fixed(v16, coarse, 4)
  start = multigrid.interpolate(jnp.abs(x16), GRID)
  e, psi = cascade(wells, GRID, (4, 0))
  np.testing.assert_allclose(psi, normalize_unchecked(start, GRID),
                             rtol=0, atol=1e-12)
  np.testing.assert_allclose(e, energy(start, wells, GRID), rtol=0,
                             atol=1e-12)
  e3, _ = cascade(wells, GRID, (4, 3))
  e_ref, _ = ground_state_fixed(jnp.asarray(wells), GRID, 3, start=start)
  np.testing.assert_allclose(e3, e_ref, rtol=0, atol=1e-12)


def test_energies_are_rayleigh_quotients_and_states_follow_the_convention(
    wells, exact):
  for iters in [(4,), (6, 2), (4, 2, 1), (3, 0, 1)]:
    e, psi = cascade(wells, GRID, iters)
    assert e.shape == (4,) and psi.shape == (4,) + GRID.shape
    np.testing.assert_allclose(energy(psi, wells, GRID), e, rtol=0,
                               atol=1e-10)
    np.testing.assert_allclose(
        np.sum(np.asarray(psi)**2, (-1, -2)) * GRID.volume_element, 1.0,
        rtol=1e-12)
    assert (np.asarray(psi).sum((-1, -2)) > 0).all()
    # Upper bounds (variational), to rounding.
    assert (np.asarray(e) >= exact.energies[:, 0] - 1e-10).all()


def test_more_fine_iterations_reach_the_exact_state(wells, exact):
  errors = [np.max(np.asarray(cascade(wells, GRID, (6, k))[0])
                   - exact.energies[:, 0]) for k in (0, 2, 16)]
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] < 1e-9


def test_exact_coarsest_level(wells, exact):
  # One exact level is the exact ground state.
  small = Grid((12, 12), 20.0)
  v = np.asarray(potentials.gaussian_wells(jax.random.key(3), small, (3,)))
  e, psi = cascade(v, small, (0,), exact_coarsest=True)
  e_ref, psi_ref = solvers.ground_state(v, small)
  np.testing.assert_allclose(e, e_ref, rtol=0, atol=1e-10)
  np.testing.assert_allclose(psi, psi_ref, rtol=0, atol=1e-8)
  # An exact 8x8 level then 2 fine iterations; the count at the exact
  # level is not used.
  e1, _ = cascade(wells, GRID, (0, 0, 2), exact_coarsest=True)
  e2, _ = cascade(wells, GRID, (5, 0, 2), exact_coarsest=True)
  np.testing.assert_array_equal(e1, e2)
  e0, _ = cascade(wells, GRID, (0, 0, 0), exact_coarsest=True)
  assert (exact.energies[:, 0] - 1e-10 <= np.asarray(e1)).all()
  assert (np.asarray(e1) < np.asarray(e0)).all()


def test_batch_axes_float32_and_jit(wells):
  v = jnp.asarray(wells, jnp.float32).reshape((2, 2) + GRID.shape)
  e, psi = cascade(v, GRID, (4, 2))
  assert e.shape == (2, 2) and psi.shape == (2, 2) + GRID.shape
  assert e.dtype == jnp.float32 and psi.dtype == jnp.float32
  jitted = jax.jit(lambda v: cascade(v, GRID, (4, 2)))
  e_jit, psi_jit = jitted(v)
  np.testing.assert_allclose(e_jit, e, rtol=1e-6)
  np.testing.assert_allclose(psi_jit, psi, atol=1e-6)
  e64, _ = cascade(wells, GRID, (4, 2))
  np.testing.assert_allclose(e.reshape(-1), e64, rtol=1e-4)


def test_bad_input_is_named(wells):
  with pytest.raises(ValueError, match="nonnegative integers"):
    cascade(wells, GRID, (4, -1))
  with pytest.raises(ValueError, match="nonnegative integers"):
    cascade(wells, GRID, ())
  with pytest.raises(ValueError, match="nonnegative integers"):
    cascade(wells, GRID, (2.5,))
  with pytest.raises(ValueError, match="must divide by 4"):
    cascade(np.zeros((30, 30)), Grid((30, 30), 20.0), (1, 1, 1))
  with pytest.raises(ValueError, match="below 3 per axis"):
    cascade(wells, GRID, (1,) * 5)
  with pytest.raises(ValueError, match="float32 or float64"):
    cascade(jnp.asarray(wells, jnp.float16), GRID, (4,))
  with pytest.raises(ValueError, match="does not match the grid"):
    cascade(np.zeros((16, 16)), GRID, (4,))
  with pytest.raises(ValueError, match="non-finite"):
    cascade(np.full(GRID.shape, np.nan), GRID, (4,))
  big = Grid((128, 128), 20.0)
  with pytest.raises(InsufficientMemoryError, match="exact coarsest"):
    cascade(jnp.zeros((64,) + big.shape, jnp.float32), big, (0,),
            exact_coarsest=True)
  with pytest.raises(ValueError, match="only used by method='cascade'"):
    solve(wells, GRID, method="lobpcg", cascade_iters=(4,))
  with pytest.raises(ValueError, match="the cascade makes its own start"):
    solve(wells, GRID, method="cascade", init=wells)


# --------------------------------------------------------------------------
# Chebyshev-Jacobi sweeps on the interpolated starts.


def assert_equal_up_to_powers_of_two(out, expected, atol):
  """``out`` is ``expected`` times a power of two per sample, to ``atol``
  (the sweeps rescale each sample exactly to keep float32 in range)."""
  out, expected = np.asarray(out), np.asarray(expected)
  axes = tuple(range(1, out.ndim))
  k = np.round(np.log2(np.max(np.abs(out), axes)
                       / np.max(np.abs(expected), axes)))
  np.testing.assert_allclose(
      out, expected * (2.0**k).reshape((-1,) + (1,) * len(axes)), rtol=0,
      atol=atol)


@pytest.mark.parametrize("sweeps", [1, 2, 7])
def test_sweeps_filter_each_kinetic_mode_by_the_chebyshev_polynomial(sweeps):
  # On a constant potential the modes of K are eigenvectors of
  # D^-1 (H - theta) with mu_k = (lam_k + V - theta) / D,
  # D = diag(K) + max(V - theta, 0): n sweeps multiply mode k's coefficient
  # by p_n(mu_k) = T_n((hi + lo - 2 mu) / (hi - lo))
  #                / T_n((hi + lo) / (hi - lo)).
  grid = Grid((12, 10), (20.0, 15.0))
  (q0, l0), (q1, l1) = kinetic.kinetic_eigenbasis(grid)
  picks = [(0, 0), (2, 3), (6, 4), (11, 9)]  # lowest ... highest
  modes = [np.outer(q0[:, i], q1[:, j]) for i, j in picks]
  lams = np.array([l0[i] + l1[j] for i, j in picks])
  coef = np.array([1.0, 0.3, 0.2, 0.1])
  x = sum(c * m for c, m in zip(coef, modes))
  lo, hi = 0.1, 2.0
  for v0 in (1.7, -30.0):  # V above theta, and far below (deep well)
    theta = np.sum(coef**2 * (lams + v0)) / np.sum(coef**2)
    d = sum(1.0 / h**2 for h in grid.spacing) + max(v0 - theta, 0.0)
    mu = (lams + v0 - theta) / d
    t_n = np.polynomial.chebyshev.Chebyshev.basis(sweeps)
    factors = t_n((hi + lo - 2 * mu) / (hi - lo)) / t_n((hi + lo) / (hi - lo))
    expected = sum(c * f * m for c, f, m in zip(coef, factors, modes))
    out = jacobi_sweeps(jnp.asarray(x)[None],
                        jnp.full((1,) + grid.shape, v0), grid, sweeps,
                        low=lo, high=hi)
    assert_equal_up_to_powers_of_two(out, expected[None], atol=1e-12)
    # Nothing is amplified: the spectrum ends at 2 (Gershgorin).
    assert mu.max() <= 2.0 and np.all(np.abs(factors[1:]) <= 1.0)


def test_an_eigenvector_is_a_fixed_point_of_the_sweeps(wells, exact):
  psi = jnp.asarray(exact.states[:, 0])
  out = jacobi_sweeps(psi, jnp.asarray(wells), GRID, 5)
  assert_equal_up_to_powers_of_two(out, psi,
                                   atol=1e-8 * float(jnp.max(jnp.abs(out))))


def test_sweeps_smooth_each_interpolated_start(wells):
  coarse = Grid((16, 16), 20.0)
  v16 = multigrid.block_mean(jnp.asarray(wells), GRID, (16, 16))
  _, x16 = ground_state_fixed(v16, coarse, 4)
  start = jacobi_sweeps(multigrid.interpolate(jnp.abs(x16), GRID),
                        jnp.asarray(wells), GRID, 3)
  e, psi = cascade(wells, GRID, (4, 0), sweeps=(0, 3))
  np.testing.assert_allclose(psi, normalize_unchecked(start, GRID),
                             rtol=0, atol=1e-12)
  np.testing.assert_allclose(e, energy(start, wells, GRID), rtol=0,
                             atol=1e-12)
  e2, _ = cascade(wells, GRID, (4, 2), sweeps=(0, 3))
  e_ref, _ = ground_state_fixed(jnp.asarray(wells), GRID, 2, start=start)
  np.testing.assert_allclose(e2, e_ref, rtol=0, atol=1e-12)
  # No sweeps (None or zeros) is the cascade without them, bitwise.
  for sweeps in (None, (0, 0)):
    np.testing.assert_array_equal(
        cascade(wells, GRID, (4, 2), sweeps=sweeps)[1],
        cascade(wells, GRID, (4, 2))[1])


# Fast tier: test_sweeps_smooth_each_interpolated_start and
# test_sweeps_filter_each_kinetic_mode_by_the_chebyshev_polynomial.
@pytest.mark.slow
def test_sweeps_cut_the_error_and_keep_convergence(wells, exact):
  e0 = exact.energies[:, 0]
  for iters in [(4, 1), (4, 2, 1)]:
    plain = np.asarray(cascade(wells, GRID, iters)[0]) - e0
    swept = np.asarray(cascade(wells, GRID, iters,
                               sweeps=(0,) * (len(iters) - 1) + (8,))[0]) - e0
    assert (swept >= -1e-10).all()  # still upper bounds
    assert np.median(swept) < 0.3 * np.median(plain), (iters, swept, plain)
  # More fine iterations after the sweeps still reach the exact state.
  e, _ = cascade(wells, GRID, (4, 2, 16), sweeps=(0, 4, 8))
  assert np.max(np.abs(np.asarray(e) - e0)) < 1e-9


def _interpolated_start(wells):
  v16 = multigrid.block_mean(jnp.asarray(wells), GRID, (16, 16))
  return multigrid.interpolate(
      jnp.abs(cascade(v16, Grid((16, 16), 20.0), 3)[1]), GRID)


# Fast tier: test_float32_sweeps_keep_deep_wells_on_a_coarse_grid.
@pytest.mark.slow
@pytest.mark.parametrize("sweeps", [8, 16])
def test_the_sweeps_are_as_accurate_in_float32_as_in_float64(sweeps):
  # The filter is a product of root factors; in the wrong order (largest
  # root first) the partial products amplify some modes 1e3-fold and
  # float32 loses the state's fine structure. In Leja order float32 stays
  # at float32's rounding: the energies of the swept states agree.
  grid = Grid((64, 64), 20.0)
  v = potentials.sample("mixture", jax.random.key(3), grid, 8)
  v16 = multigrid.block_mean(v, grid, (16, 16))
  x16 = cascade(v16, Grid((16, 16), 20.0), 4)[1]
  x = multigrid.interpolate(jnp.abs(x16), grid)
  e64 = energy(jacobi_sweeps(x, v, grid, sweeps), v, grid)
  x32 = jacobi_sweeps(x.astype(jnp.float32), v.astype(jnp.float32), grid,
                      sweeps)
  e32 = energy(x32.astype(jnp.float64), v, grid)
  np.testing.assert_allclose(e32, e64, rtol=0, atol=2e-6)
  steps = chebyshev_steps(sweeps)
  np.testing.assert_allclose(sorted(steps), sorted(1 / np.asarray(
      [0.1 + 0.95 * (1 + np.cos(np.pi * (2 * k + 1) / (2 * sweeps)))
       for k in range(sweeps)])), rtol=1e-14)


def test_float32_sweeps_keep_deep_wells_on_a_coarse_grid():
  # On a coarse grid the modes below theta of a deep well have mu far
  # below 0 (D is small, V - theta large and negative) and grow by
  # 1 + s |mu| per sweep: without rescaling, 16 sweeps in float32 overflow
  # and the cascade returns the zero state with energy 0. The sweeps keep
  # the state in range, so float32 gives float64's states.
  grid = Grid((8, 8), 20.0)
  v = potentials.gaussian_wells(jax.random.key(0), grid, (12,))
  e64, psi64 = cascade(v, grid, (6, 0), sweeps=(0, 16))
  e32, psi32 = cascade(v.astype(jnp.float32), grid, (6, 0), sweeps=(0, 16))
  assert np.sum(np.asarray(e64) < -5.0) >= 6  # deep wells
  np.testing.assert_allclose(e32, e64, rtol=1e-5)
  np.testing.assert_allclose(psi32, psi64, rtol=0, atol=1e-4)
  # The sweeps' output is the filtered state times a power of two per
  # sample, the one that puts its largest entry in [0.5, 1).
  x = jnp.abs(psi64)
  out = stepped_sweeps(x, v, grid, jnp.asarray(chebyshev_steps(4)))
  largest = np.max(np.abs(np.asarray(out)), axis=(1, 2))
  assert np.all((0.5 <= largest) & (largest < 1.0)), largest


def test_stepped_sweeps_apply_their_steps(wells):
  # One step s: x - s D^-1 (H - theta) x, by hand; no steps: x itself.
  v = jnp.asarray(wells)
  x = _interpolated_start(wells)
  hx = hamiltonian.apply_unchecked(x, v, GRID)
  theta = (jnp.sum(x * hx, axis=(1, 2)) / jnp.sum(x * x, axis=(1, 2)))
  theta = theta[:, None, None]
  d = sum(1.0 / h**2 for h in GRID.spacing) + jnp.maximum(v - theta, 0.0)
  assert_equal_up_to_powers_of_two(
      stepped_sweeps(x, v, GRID, jnp.asarray([0.7])),
      x - 0.7 * (hx - theta * x) / d, atol=1e-12)
  assert stepped_sweeps(x, v, GRID, jnp.zeros((0,))) is x
  # Through the cascade: per level, in place of the Chebyshev filter, and
  # differentiable in the steps.
  steps = [None, jnp.asarray(chebyshev_steps(6))]
  _, by_steps = cascade_unchecked(v, (Grid((16, 16), 20.0), GRID), (3, 1),
                                  sweeps=(0, 6), steps=steps)
  _, by_filter = cascade_unchecked(v, (Grid((16, 16), 20.0), GRID), (3, 1),
                                   sweeps=(0, 6))
  np.testing.assert_allclose(by_steps, by_filter, rtol=0, atol=1e-9)

  def mean_energy(s):
    _, x = cascade_unchecked(v, (Grid((16, 16), 20.0), GRID), (3, 0),
                             sweeps=(0, 6), steps=[None, s])
    return jnp.mean(energy(x, v, GRID))
  grad = jax.grad(mean_energy)(steps[1])
  assert grad.shape == (6,) and np.all(np.isfinite(grad))
  assert np.any(np.abs(grad) > 0)


def test_bad_sweeps_are_named(wells):
  with pytest.raises(ValueError, match=r"must be 2 nonnegative integer"):
    cascade(wells, GRID, (4, 2), sweeps=(0, 1, 2))
  with pytest.raises(ValueError, match=r"must be 2 nonnegative integer"):
    cascade(wells, GRID, (4, 2), sweeps=(0, -1))
  with pytest.raises(ValueError, match=r"must be 2 nonnegative integer"):
    cascade(wells, GRID, (4, 2), sweeps=(0, 1.5))
  with pytest.raises(ValueError, match="coarsest level .* must be 0"):
    cascade(wells, GRID, (4, 2), sweeps=(2, 2))


# --------------------------------------------------------------------------
# solve(method="cascade"): to a tolerance, like the other methods.


def bound(result, e1):
  """max(1e-9 Ha, r^2 / (E1 - E)): what a residual r guarantees."""
  e = np.asarray(result.energies[:, 0])
  r = np.asarray(result.residuals[:, 0])
  return np.maximum(1e-9, r**2 / (e1 - e))


def tilted_double_wells(grid):
  x, y = grid.mesh()
  return np.stack([np.minimum(10 * ((x / 3.5)**2 - 1)**2 + t * x / 3.5
                              + 0.5 * y**2, 50.0)
                   for t in (0.0, 1e-8, 1e-5, 1e-2)])


# Fast tier: one plain family and 3-D; the other families, near-degenerate
# wells and the periodic grid take the same path, in the slow tier
# (tests/test_solvers.py solves tilted double wells and the periodic grid).
FAST_CASCADE_CASES = ("gaussian_wells", "3d")


@pytest.mark.parametrize("family", [
    f if f in FAST_CASCADE_CASES else pytest.param(f, marks=pytest.mark.slow)
    for f in sorted(potentials.FAMILIES) + ["tilted_double_well", "periodic",
                                            "3d"]])
def test_solve_cascade_agrees_with_eigsh(family):
  grid = GRID
  if family == "tilted_double_well":
    v = tilted_double_wells(grid)
  elif family == "periodic":
    grid = Grid((32, 24), (12.0, 9.0), "periodic")
    x, y = grid.mesh()
    v = np.stack([-3 * np.cos(2 * np.pi * x / 12.0) + s * np.sin(
        2 * np.pi * y / 9.0) for s in (0.5, 1.0)])
  elif family == "3d":
    grid = Grid((16, 16, 16), 12.0)
    v = np.asarray(potentials.gaussian_wells(jax.random.key(2), grid, (2,)))
  else:
    v = np.asarray(potentials.sample(family, jax.random.key(1), grid, (3,)))
  ref = solve(v, grid, method="eigsh", num_states=2)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # valid inputs: no warning
    result = solve(v, grid, method="cascade")
  assert np.asarray(result.converged).all()
  assert (np.asarray(result.residuals) <= 1e-8).all()
  err = np.abs(np.asarray(result.energies[:, 0]) - ref.energies[:, 0])
  assert (err <= bound(result, ref.energies[:, 1])).all(), err
  assert (solvers.node_fraction(result.states[:, 0], grid) <= 1e-6).all()
  np.testing.assert_allclose(energy(result.states[:, 0], v, grid),
                             result.energies[:, 0], rtol=0, atol=1e-10)


# Fast tier: test_solve_cascade_agrees_with_eigsh[gaussian_wells] and
# test_batch_axes_float32_and_jit.
@pytest.mark.slow
def test_solve_cascade_float32_excited_states_and_ground_state():
  v = np.asarray(potentials.gaussian_wells(jax.random.key(4), GRID, (3,)))
  ref = solve(v, GRID, method="eigsh", num_states=2)
  result = solve(v, GRID, method="cascade", num_states=2)
  np.testing.assert_allclose(result.energies, ref.energies, rtol=0,
                             atol=1e-8)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    r32 = solve(jnp.asarray(v, jnp.float32), GRID, method="cascade")
  ok = np.asarray(r32.converged)
  assert ok.any()
  np.testing.assert_allclose(np.asarray(r32.energies[ok, 0], np.float64),
                             ref.energies[ok, 0], atol=1e-4)
  e0, psi0 = solvers.ground_state(v, GRID, method="cascade",
                                  cascade_iters=(4, 2, 0))
  np.testing.assert_allclose(e0, ref.energies[:, 0], rtol=0, atol=1e-9)
  # A huge constant is exact, as for the other methods.
  e_box, _ = solvers.ground_state(np.full(GRID.shape, 1e8), GRID,
                                  method="cascade")
  assert float(e_box) == pytest.approx(1e8 + box_energy(GRID), abs=1e-6)


def test_default_cascade_before_lobpcg():
  assert solvers.default_cascade_iters(Grid((64, 64), 20.0)) == (6, 2, 2)
  assert solvers.default_cascade_iters(Grid((32, 32, 32), 20.0)) == (6, 2, 2)
  assert solvers.default_cascade_iters(Grid((16, 16), 20.0)) == (6, 2)
  assert solvers.default_cascade_iters(Grid((15, 16), 20.0)) == (0,)
  assert solvers.default_cascade_iters(Grid((8, 8), 20.0)) == (0,)


# Fast tier: test_solve_cascade_agrees_with_eigsh[gaussian_wells].
@pytest.mark.slow
def test_potentials_the_cascade_solves_skip_lobpcg(wells, exact):
  # A loose tolerance: (6, 4) meets it for every well, so no LOBPCG
  # iteration runs; a tight one needs LOBPCG for all.
  loose = solve(wells, GRID, method="cascade", tol=1e-2,
                cascade_iters=(6, 4))
  assert np.asarray(loose.converged).all()
  assert (np.asarray(loose.iterations) == 0).all()
  assert (np.asarray(loose.residuals) <= 1e-2).all()
  e, _ = cascade(wells, GRID, (6, 4))
  np.testing.assert_allclose(loose.energies[:, 0], e, rtol=0, atol=1e-12)
  tight = solve(wells, GRID, method="cascade", tol=1e-8,
                cascade_iters=(6, 4))
  assert (np.asarray(tight.iterations) > 0).all()
  np.testing.assert_allclose(tight.energies[:, 0], exact.energies[:, 0],
                             rtol=0, atol=1e-9)
  # Mixed: the rows LOBPCG finishes and the rows the cascade finished
  # sit in their own places.
  mixed_v = np.concatenate([wells, tilted_double_wells(GRID)[:2]])
  mixed = solve(mixed_v, GRID, method="cascade", tol=3e-2)
  its = np.asarray(mixed.iterations)
  assert (its == 0).any() and (its > 0).any(), its
  ref = solve(mixed_v, GRID, method="eigsh", num_states=2)
  assert np.asarray(mixed.converged).all()
  assert (np.asarray(mixed.residuals) <= 3e-2).all()
  err = np.asarray(mixed.energies[:, 0]) - ref.energies[:, 0]
  assert (err >= -1e-12).all()  # upper bounds, and within r^2 / gap
  assert (err <= np.asarray(mixed.residuals[:, 0])**2 / (
      ref.energies[:, 1] - ref.energies[:, 0]) + 1e-12).all()
  np.testing.assert_allclose(energy(mixed.states[:, 0], mixed_v, GRID),
                             mixed.energies[:, 0], rtol=0, atol=1e-10)
