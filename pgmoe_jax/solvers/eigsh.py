"""The SciPy reference solver: ARPACK in shift-invert mode.

The CPU reference every label and benchmark is checked against. It is
NumPy- and SciPy-only on purpose: data generation runs it in spawned worker
processes that never start JAX, and it answers in float64 whether or not
JAX's x64 mode is on. :func:`pgmoe_jax.solvers.solve` validates inputs and
calls :func:`eigsh_batch`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from pgmoe_jax import kinetic
from pgmoe_jax.grid import Grid


def eigsh_batch(potentials: np.ndarray, grid: Grid, num_states: int,
                tol: float):
  """Shift-invert ARPACK per potential of ``(b, *grid.shape)``, no checks.

  Returns:
    ``(energies (b, k), states (b, k, N) of unit norm, residuals (b, k),
    operator applications (b,), converged (b,))``, all float64 NumPy.
  """
  k_matrix = kinetic.kinetic_matrix(grid)
  lam_min = float(kinetic.kinetic_eigenvalues(grid).min())
  n = grid.size
  b = potentials.shape[0]
  energies = np.empty((b, num_states))
  states = np.empty((b, num_states, n))
  iterations = np.empty((b,), np.int64)
  for i, v in enumerate(potentials.reshape(b, n)):
    h = (k_matrix + scipy.sparse.diags(v)).tocsc()
    # Any sigma below min(V) makes H - sigma positive definite, and then the
    # eigenvalues nearest sigma are the lowest. E0 >= min(V) + lam_min, so
    # this shift sits a fixed fraction below E0 at any grid spacing.
    sigma = float(v.min()) - max(lam_min, 1e-3)
    operator = scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=scipy.sparse.linalg.splu(
            h - sigma * scipy.sparse.identity(n, format="csc")).solve,
        dtype=np.float64)
    counter = [0]

    def op_inv(x, solve=operator.matvec):
      counter[0] += 1
      return solve(x)

    w, u = scipy.sparse.linalg.eigsh(
        h, k=num_states, sigma=sigma, which="LM", v0=np.ones(n), tol=0,
        OPinv=scipy.sparse.linalg.LinearOperator((n, n), matvec=op_inv,
                                                 dtype=np.float64))
    order = np.argsort(w)
    energies[i] = w[order]
    states[i] = u[:, order].T
    iterations[i] = counter[0]
  h_states = np.stack([
      (k_matrix @ s.T).T + potentials.reshape(b, 1, n)[j] * s
      for j, s in enumerate(states)])
  # ARPACK's eigenvalues equal these to rounding; returning the states' own
  # Rayleigh quotients makes every pair self-consistent by construction.
  energies = np.sum(states * h_states, axis=-1)
  residuals = np.linalg.norm(h_states - energies[..., None] * states, axis=-1)
  return energies, states, residuals, iterations, (residuals <= tol).all(-1)
