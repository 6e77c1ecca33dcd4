"""Reference solvers: eigsh and the JAX LOBPCG agree, warm starts pay off."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import apply_hamiltonian
from pgmoe_jax import energy
from pgmoe_jax import fidelity
from pgmoe_jax import ground_state
from pgmoe_jax import kinetic
from pgmoe_jax import potentials
from pgmoe_jax import residual
from pgmoe_jax import solve
from pgmoe_jax import solvers
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed
from pgmoe_jax.solvers.lanczos import lanczos

GRID = Grid((24, 20), (20.0, 16.0))


@pytest.fixture(scope="module")
def wells():
  return np.asarray(potentials.gaussian_wells(jax.random.key(0), GRID, (6,)))


@pytest.fixture(scope="module")
def reference(wells):
  return solve(wells, GRID, method="eigsh", num_states=2)


def test_eigsh_and_lobpcg_agree_on_gaussian_wells(wells, reference):
  e_ref, psi_ref = reference.energies[:, 0], reference.states[:, 0]
  e0, psi0 = ground_state(wells, GRID, method="lobpcg")
  assert e0.shape == (6,) and psi0.shape == (6,) + GRID.shape
  np.testing.assert_array_less(np.abs(np.asarray(e0) - e_ref), 1e-8)
  np.testing.assert_array_less(1 - 1e-8, np.asarray(fidelity(psi0, psi_ref,
                                                             GRID)))
  # Both follow the normalisation convention, so the states themselves agree.
  np.testing.assert_allclose(psi0, psi_ref, atol=1e-5)
  for psi in (psi0, psi_ref):
    np.testing.assert_allclose(
        np.sum(np.asarray(psi)**2, (-1, -2)) * GRID.volume_element, 1.0,
        rtol=1e-12)
    assert (np.asarray(psi).sum((-1, -2)) > 0).all()
    assert (np.asarray(psi) > -1e-6).all()  # nodeless ground state
  assert (reference.residuals < 1e-10).all() and reference.converged.all()
  np.testing.assert_array_less(residual(psi0, wells, GRID), 1e-8)


def test_excited_states_and_gap_agree(wells, reference):
  result = solve(wells, GRID, method="lobpcg", num_states=2)
  assert result.energies.shape == (6, 2)
  assert result.states.shape == (6, 2) + GRID.shape
  np.testing.assert_allclose(result.energies, reference.energies, atol=1e-8)
  gap = np.diff(reference.energies, axis=-1)[:, 0]
  assert (gap > 0).all()
  # Each state is an eigenvector of the same H.
  h_psi = apply_hamiltonian(result.states, wells[:, None], GRID)
  np.testing.assert_allclose(h_psi, result.energies[..., None, None] *
                             result.states, atol=1e-6)
  assert bool(result.converged.all())


def test_batch_axes_and_chunks(wells, reference):
  v = wells.reshape((2, 3) + GRID.shape)
  e0, psi0 = ground_state(v, GRID, method="lobpcg", chunk_size=4)
  assert e0.shape == (2, 3) and psi0.shape == (2, 3) + GRID.shape
  np.testing.assert_allclose(np.ravel(e0), reference.energies[:, 0],
                             atol=1e-8)
  e0, _ = ground_state(v, GRID, method="eigsh")
  assert e0.shape == (2, 3)
  e_single, _ = ground_state(wells[3], GRID, method="lobpcg")
  assert np.shape(e_single) == ()
  assert float(e_single) == pytest.approx(reference.energies[3, 0], abs=1e-8)


def test_warm_start_needs_fewer_iterations(wells, reference):
  psi_ref = reference.states[:, 0]
  rng = np.random.default_rng(0)
  close = psi_ref + 1e-3 * rng.normal(size=psi_ref.shape)
  far = rng.normal(size=psi_ref.shape)
  warm = solve(wells, GRID, method="lobpcg", init=close)
  cold = solve(wells, GRID, method="lobpcg")
  random = solve(wells, GRID, method="lobpcg", init=far)
  for result in (warm, cold, random):
    np.testing.assert_allclose(result.energies[:, 0], reference.energies[:, 0],
                               atol=1e-8)
  assert (warm.iterations < random.iterations).all()
  assert (warm.iterations < cold.iterations).all()
  # Started at the answer, it only has to confirm convergence.
  exact = solve(wells, GRID, method="lobpcg", init=psi_ref)
  assert (exact.iterations <= 1).all()


def test_lobpcg_float32():
  v = jnp.asarray(potentials.gaussian_wells(jax.random.key(1), GRID, (2,)),
                  jnp.float32)
  e_ref, psi_ref = ground_state(np.asarray(v, np.float64), GRID)
  e0, psi0 = ground_state(v, GRID, method="lobpcg")
  assert e0.dtype == jnp.float32 and psi0.dtype == jnp.float32
  np.testing.assert_allclose(e0, e_ref, atol=1e-4)
  assert (1 - np.asarray(fidelity(np.asarray(psi0, np.float64), psi_ref, GRID))
          < 1e-6).all()


def test_periodic_boundary():
  grid = Grid((12, 10), (6.0, 5.0), "periodic")
  e0, psi0 = ground_state(np.full(grid.shape, -2.5), grid, method="lobpcg")
  assert float(e0) == pytest.approx(-2.5, abs=1e-10)
  np.testing.assert_allclose(psi0, 1 / np.sqrt(30.0), atol=1e-7)
  x, y = grid.mesh()
  v = -3 * np.cos(2 * np.pi * x / 6.0) + np.sin(2 * np.pi * y / 5.0)
  results = [solve(v, grid, method=m, num_states=3) for m in solvers.METHODS]
  np.testing.assert_allclose(results[0].energies, results[1].energies,
                             atol=1e-8)


def test_kinetic_inverse_is_exact():
  for grid in (Grid((7, 9), (3.0, 4.0)), Grid((6, 5, 4), 2.0, "periodic")):
    r = np.random.default_rng(1).normal(size=(2,) + grid.shape)
    inverse = kinetic.make_kinetic_inverse(grid, jnp.float64)
    c = 0.3
    x = inverse(jnp.asarray(r), c)
    np.testing.assert_allclose(
        apply_hamiltonian(x, np.full(grid.shape, c), grid), r, atol=1e-11)


def test_lobpcg_does_not_converge_warns():
  v = np.asarray(potentials.gaussian_wells(jax.random.key(2), GRID))
  with pytest.warns(RuntimeWarning, match="did not reach the residual"):
    result = solve(v, GRID, method="lobpcg", max_iters=2)
  assert not bool(result.converged)
  assert int(result.iterations) == 2


def test_bad_inputs():
  v = np.zeros(GRID.shape)
  with pytest.raises(ValueError, match="known methods: eigsh, lobpcg"):
    ground_state(v, GRID, method="arpack")
  with pytest.raises(ValueError, match="num_states must be a positive"):
    ground_state(v, GRID, num_states=0)
  with pytest.raises(ValueError, match="does not match the grid"):
    ground_state(np.zeros((20, 24)), GRID)
  with pytest.raises(ValueError, match="non-finite"):
    ground_state(np.full(GRID.shape, np.inf), GRID, method="lobpcg")
  with pytest.raises(ValueError, match="init is only used by method='lobpcg'"):
    ground_state(v, GRID, init=np.ones(GRID.shape))
  with pytest.raises(ValueError, match="identically zero"):
    ground_state(v, GRID, method="lobpcg", init=np.zeros(GRID.shape))
  with pytest.raises(ValueError, match="init has shape"):
    ground_state(np.zeros((3,) + GRID.shape), GRID, method="lobpcg",
                 init=np.ones((2,) + GRID.shape))
  with pytest.raises(ValueError, match="block_size"):
    ground_state(v, GRID, method="lobpcg", num_states=3, block_size=2)


# --------------------------------------------------------------------------
# Near-degenerate pairs: a tilted quartic double well (the tunnelling
# splitting is far below the tolerance), where a Rayleigh-Ritz step on a
# nearly dependent basis once returned energies below the ground state.


def tilted_double_well(grid, tilt):
  x, y = grid.mesh()
  return np.minimum(10 * ((x / 3.5)**2 - 1)**2 + tilt * x / 3.5
                    + 0.5 * y**2, 50.0)


TILTS = (0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


@pytest.mark.parametrize(
    "n", [32, pytest.param(64, marks=pytest.mark.slow),
          pytest.param(128, marks=pytest.mark.slow)])
def test_lobpcg_near_degenerate_double_wells_float64(n):
  grid = Grid((n, n), 20.0)
  v = np.stack([tilted_double_well(grid, t) for t in TILTS])
  e_ref, _ = ground_state(v, grid)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # valid inputs: no warning, no error
    result = solve(v, grid, method="lobpcg")
  assert bool(np.all(result.converged)), result.residuals
  np.testing.assert_allclose(result.energies[:, 0], e_ref, rtol=0, atol=1e-8)
  # The energy is the state's own Rayleigh quotient, and its residual is
  # what is reported.
  np.testing.assert_allclose(energy(result.states[:, 0], v, grid),
                             result.energies[:, 0], rtol=0, atol=1e-10)
  np.testing.assert_allclose(residual(result.states[:, 0], v, grid),
                             result.residuals[:, 0], rtol=1e-6, atol=1e-12)


def test_lobpcg_near_degenerate_double_wells_float32():
  grid = Grid((64, 64), 20.0)
  v = np.stack([tilted_double_well(grid, t) for t in TILTS])
  e_ref, _ = ground_state(v, grid)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # an unconverged sample warns: fail
    result = solve(jnp.asarray(v, jnp.float32), grid, method="lobpcg")
  e = np.asarray(result.energies[:, 0], np.float64)
  ok = np.abs(e - e_ref) <= 1e-5 * np.abs(e_ref)
  assert np.all(np.asarray(result.converged)), result.residuals
  assert np.all(ok), e - e_ref
  assert np.all(e >= e_ref - 1e-5 * np.abs(e_ref))  # never below E0


def test_energies_are_rayleigh_quotients_even_unconverged():
  grid = Grid((64, 64), 20.0)
  v = tilted_double_well(grid, 1e-8)
  compiled = []
  for max_iters in (3, 100):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      result = solve(v, grid, method="lobpcg", max_iters=max_iters)
    compiled.append(solvers.lobpcg_batch._cache_size())
    assert int(np.max(result.iterations)) <= max_iters
    np.testing.assert_allclose(energy(result.states, v, grid),
                               result.energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(residual(result.states, v, grid),
                               result.residuals, rtol=1e-6, atol=1e-12)
  # The cap is a value: the second cap runs the first's program.
  assert compiled[1] == compiled[0]


def test_ground_state_refuses_an_unconverged_answer():
  v = np.asarray(potentials.gaussian_wells(jax.random.key(2), GRID, (3,)))
  with pytest.raises(solvers.NotConvergedError,
                     match=r"max_iters \(now 2\)") as info:
    ground_state(v, GRID, method="lobpcg", max_iters=2)
  assert "3 of 3 potential(s)" in str(info.value)
  assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("method", solvers.METHODS)
def test_huge_constant_offset_is_exact(method):
  # H - min(V) has the same eigenvectors; a constant V = 1e30 is a box.
  grid = Grid((12, 10), (6.0, 5.0))
  e_box = sum((1 - np.cos(np.pi / (n + 1))) / h**2
              for n, h in zip(grid.shape, grid.spacing))
  psi_box = np.asarray(ground_state(np.zeros(grid.shape), grid)[1])
  for offset in (1e30, -1e30, 1e8):
    e0, psi0 = ground_state(np.full(grid.shape, offset), grid, method=method)
    assert float(e0) == pytest.approx(offset + e_box, rel=1e-15, abs=1e-9)
    np.testing.assert_allclose(psi0, psi_box, atol=1e-10)
  v = np.asarray(potentials.gaussian_wells(jax.random.key(3), grid))
  e_ref, psi_ref = ground_state(v, grid)
  e0, psi0 = ground_state(v + 1e8, grid, method=method)
  assert float(e0) == pytest.approx(float(e_ref) + 1e8, rel=0, abs=1e-6)
  np.testing.assert_allclose(psi0, psi_ref, atol=1e-6)


# --------------------------------------------------------------------------
# A start block can hold an excited eigenvector exactly (a constant V makes
# every kinetic mode one): the solver must still return the ground state,
# which for this H (nonpositive off-diagonals, connected grid) is the only
# nodeless eigenvector, and never flag a state with a node as converged.


def negative_mass(psi, grid):
  """The fraction of each state's squared norm carried by its negative part."""
  psi = np.asarray(psi)
  return (np.minimum(psi, 0)**2).sum(grid.axes) / (psi**2).sum(grid.axes)


@pytest.mark.parametrize("boundary", ["dirichlet", "periodic"])
@pytest.mark.parametrize("offset", [0.0, -1e6, 3.5])
def test_an_init_never_leads_to_an_excited_state(boundary, offset):
  grid = Grid((32, 32), 20.0, boundary)
  v = np.full(grid.shape, offset)
  e_exact = offset + (0.0 if boundary == "periodic" else sum(
      (1 - np.cos(np.pi / (n + 1))) / h**2
      for n, h in zip(grid.shape, grid.spacing)))
  excited = kinetic.kinetic_modes(grid, 2)[1]  # an exact eigenvector of H
  for init in (np.ones(grid.shape), excited, np.abs(excited)):
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      e0, psi0 = ground_state(v, grid, method="lobpcg", init=init)
    assert float(e0) == pytest.approx(e_exact, rel=0, abs=1e-8), init
    assert negative_mass(psi0, grid) <= 1e-12


def test_an_excited_eigenvector_as_init_on_wells():
  # The first excited state of real wells, exactly: zero residual, a node.
  wells = np.asarray(potentials.gaussian_wells(jax.random.key(4), GRID, (3,)))
  ref = solve(wells, GRID, method="eigsh", num_states=2)
  init = ref.states[:, 1]
  result = solve(wells, GRID, method="lobpcg", init=init)
  assert bool(np.all(result.converged))
  np.testing.assert_allclose(result.energies[:, 0], ref.energies[:, 0],
                             rtol=0, atol=1e-8)
  assert (negative_mass(result.states[:, 0], GRID) <= 1e-6).all()
  # Given no iterations to recover, the nodal state is not converged.
  with pytest.warns(RuntimeWarning, match="ended on a state with a node"):
    stuck = solve(wells, GRID, method="lobpcg", init=init, max_iters=0,
                  block_size=1)
  assert not np.asarray(stuck.converged).any()
  with pytest.raises(solvers.NotConvergedError, match="node"):
    ground_state(wells, GRID, method="lobpcg", init=init, max_iters=0,
                 block_size=1)


def test_fixed_cost_solver_from_a_nodeless_start_finds_the_ground_state():
  # |mode 1| is nodeless but no eigenvector: the iterations leave it for
  # the ground state (mode 1 itself would stay: it is an eigenvector).
  grid = Grid((32, 32), 20.0)
  v = jnp.zeros((2,) + grid.shape)
  modes = kinetic.kinetic_modes(grid, 2)
  start = jnp.asarray(np.stack([np.abs(modes[1]), np.ones(grid.shape)]))
  e, x = ground_state_fixed(v, grid, 12, start=start)
  e_box = sum((1 - np.cos(np.pi / (n + 1))) / h**2
              for n, h in zip(grid.shape, grid.spacing))
  np.testing.assert_allclose(e, e_box, rtol=0, atol=1e-8)
  assert (negative_mass(x, grid) == 0).all()


# --------------------------------------------------------------------------
# ARPACK's Lanczos (regular mode): the independent check of labels.


def test_lanczos_finds_the_discrete_box_exactly():
  # V = 0 with Dirichlet walls: E = sum over axes of (1 - cos(pi k / (n +
  # 1))) / h^2, k = 1..n per axis; the three lowest are non-degenerate.
  grid = Grid((12, 10), (6.0, 5.0))
  exact = sorted(
      sum((1 - np.cos(np.pi * k / (n + 1))) / h**2
          for k, n, h in zip(ks, grid.shape, grid.spacing))
      for ks in np.ndindex(*(n + 1 for n in grid.shape)) if min(ks) >= 1)
  energies, states = lanczos(np.zeros((1,) + grid.shape), grid, 3)
  np.testing.assert_allclose(energies[0], exact[:3], rtol=0, atol=1e-10)
  assert states.shape == (1, 3) + grid.shape
  mode = np.asarray(kinetic.kinetic_modes(grid, 1)[0])
  overlap = abs(np.sum(states[0, 0] * mode)) / np.linalg.norm(mode)
  assert overlap == pytest.approx(1.0, abs=1e-10)


def test_lanczos_agrees_with_eigsh(wells, reference):
  energies, states = lanczos(np.asarray(wells, np.float64), GRID, 2)
  np.testing.assert_allclose(energies, reference.energies, rtol=0,
                             atol=1e-9)
  ref = np.asarray(reference.states)
  for s, r in zip(states, ref):
    for a, b in zip(s, r):
      cos = abs(np.sum(a * b)) / np.linalg.norm(a) / np.linalg.norm(b)
      assert cos == pytest.approx(1.0, abs=1e-8)


def test_lanczos_names_a_residual_above_tol(wells):
  with pytest.raises(RuntimeError, match="lanczos: potential 0 has residual"):
    lanczos(np.asarray(wells[:1], np.float64), GRID, 1, tol=1e-30)
