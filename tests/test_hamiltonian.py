"""apply_hamiltonian against an explicit SciPy Kronecker-sum matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from pgmoe_jax import Grid
from pgmoe_jax import apply_hamiltonian
from pgmoe_jax import kinetic


def reference_hamiltonian(grid, v):
  """H = -1/2 Lap + diag(V) as a sparse matrix, written from the definition."""
  kinetic = None
  for n, h in zip(grid.shape, grid.spacing):
    lap = sp.lil_matrix((n, n))
    for i in range(n):
      lap[i, i] = -2.0
      for j in (i - 1, i + 1):
        if 0 <= j < n:
          lap[i, j] = 1.0
        elif grid.boundary == "periodic":
          lap[i, j % n] += 1.0
    k1d = -0.5 * lap.tocsr() / h**2
    if kinetic is None:
      kinetic = k1d
    else:
      kinetic = (sp.kron(kinetic, sp.identity(n))
                 + sp.kron(sp.identity(kinetic.shape[0]), k1d))
  return kinetic + sp.diags(np.ravel(v))


GRIDS = [
    Grid((9,), 7.0),
    Grid((5, 8), (3.0, 5.5)),  # non-square, different lengths
    Grid((4, 5, 6), (2.0, 3.0, 4.0)),
    Grid((6, 7), (4.0, 6.0), "periodic"),
    Grid((3, 4, 5), 2.0, "periodic"),
]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_matches_sparse_kronecker_sum_batched(grid):
  rng = np.random.default_rng(0)
  psi = rng.normal(size=(3,) + grid.shape)
  v = rng.normal(size=(3,) + grid.shape) * 5
  out = np.asarray(apply_hamiltonian(psi, v, grid))
  for b in range(3):
    expected = (reference_hamiltonian(grid, v[b]) @ psi[b].ravel()).reshape(
        grid.shape)
    np.testing.assert_allclose(out[b], expected, rtol=1e-12,
                               atol=1e-12 * np.abs(expected).max())
  # One potential broadcast against a batch of states.
  out = np.asarray(apply_hamiltonian(psi, v[0], grid))
  h = reference_hamiltonian(grid, v[0])
  for b in range(3):
    np.testing.assert_allclose(out[b].ravel(), h @ psi[b].ravel(), rtol=1e-12,
                               atol=1e-12 * np.abs(out).max())


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_hamiltonian_is_symmetric(grid):
  rng = np.random.default_rng(1)
  a, b, v = rng.normal(size=(3,) + grid.shape)
  ha = apply_hamiltonian(a, v, grid)
  hb = apply_hamiltonian(b, v, grid)
  lhs, rhs = float(jnp.sum(a * hb)), float(jnp.sum(ha * b))
  assert lhs == pytest.approx(rhs, rel=1e-12)


def test_solver_kinetic_matrix_matches_reference():
  for grid in GRIDS:
    diff = kinetic.kinetic_matrix(grid) - reference_hamiltonian(
        grid, np.zeros(grid.shape))
    assert abs(diff).max() < 1e-12


def test_leading_axes_jit_vmap_and_grad():
  grid = Grid((6, 5), 4.0)
  rng = np.random.default_rng(2)
  psi = rng.normal(size=(2, 3) + grid.shape)
  v = rng.normal(size=(2, 3) + grid.shape)
  eager = apply_hamiltonian(psi, v, grid)
  assert eager.shape == (2, 3, 6, 5)
  np.testing.assert_allclose(jax.jit(apply_hamiltonian)(psi, v, grid), eager,
                             rtol=1e-14, atol=1e-14)
  vmapped = jax.vmap(jax.vmap(apply_hamiltonian, (0, 0, None)),
                     (0, 0, None))(psi, v, grid)
  np.testing.assert_allclose(vmapped, eager, rtol=1e-14, atol=1e-14)
  # d/dpsi <psi|H|psi> = 2 H psi (H symmetric); d/dV = psi^2.
  quad = lambda p, u: jnp.sum(p * apply_hamiltonian(p, u, grid))
  g_psi, g_v = jax.grad(quad, argnums=(0, 1))(psi[0, 0], v[0, 0])
  np.testing.assert_allclose(g_psi, 2 * eager[0, 0], rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(g_v, psi[0, 0]**2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_follows_psi(dtype):
  grid = Grid((8, 8), 5.0)
  psi = jnp.ones(grid.shape, dtype)
  out = apply_hamiltonian(psi, np.zeros(grid.shape), grid)
  assert out.dtype == dtype
  # An integer state is promoted to the default float dtype.
  assert apply_hamiltonian(np.ones(grid.shape, int), np.zeros(grid.shape),
                           grid).dtype == jnp.float64


def test_bad_inputs_raise_clear_errors():
  grid = Grid((6, 5), 4.0)
  good = np.ones(grid.shape)
  with pytest.raises(ValueError, match=r"psi has shape \(5, 6\).*does not "
                     r"match the grid"):
    apply_hamiltonian(np.ones((5, 6)), good, grid)
  with pytest.raises(ValueError, match=r"V has shape \(30,\).*does not match"):
    apply_hamiltonian(good, np.ones(30), grid)
  bad = good.copy()
  bad[2, 3] = np.nan
  with pytest.raises(ValueError, match=r"V holds 1 non-finite.*\(2, 3\)"):
    apply_hamiltonian(good, bad, grid)
  bad[2, 3] = np.inf
  with pytest.raises(ValueError, match=r"psi holds 1 non-finite"):
    apply_hamiltonian(bad, good, grid)
  with pytest.raises(ValueError, match="do not broadcast"):
    apply_hamiltonian(np.ones((3,) + grid.shape), np.ones((2,) + grid.shape),
                      grid)
  with pytest.raises(TypeError, match="must be a pgmoe_jax.Grid"):
    apply_hamiltonian(good, good, (6, 5))
  with pytest.raises(TypeError, match="complex"):
    apply_hamiltonian(good + 1j, good, grid)
