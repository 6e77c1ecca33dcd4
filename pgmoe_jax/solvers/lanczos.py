"""An independent check at any size: ARPACK's Lanczos in its regular mode.

:func:`lanczos` finds the lowest states of ``H = K + diag(V)`` with
``scipy.sparse.linalg.eigsh(which="SA")``: Lanczos on ``H`` itself, with no
factorisation, so its memory is a few dozen vectors where the shift-invert
reference (:mod:`pgmoe_jax.solvers.eigsh`) needs a sparse LU (minutes and
gigabytes at 64^3). It converges slowly only where the gap ``E1 - E0`` is
tiny against the spectrum's width (near-degenerate double wells), and says
so by its residual. ``experiments.check_labels --method=lanczos`` checks
stored labels with it.

NumPy and SciPy only, float64 throughout, like the reference solver.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from pgmoe_jax import kinetic
from pgmoe_jax.grid import Grid


def lanczos(potentials: np.ndarray, grid: Grid, num_states: int,
            tol: float = 1e-8, max_iters: int = 2000):
  """ARPACK's Lanczos on each ``H = K + diag(V)`` (regular mode, float64).

  Args:
    potentials: ``(b, *grid.shape)`` in Hartree, float64.
    grid: the grid.
    num_states: how many of the lowest states to return.
    tol: the largest residual ``||H psi - E psi||`` accepted, in Ha.
    max_iters: ARPACK's restarts per potential.

  Returns:
    ``(energies (b, k), states (b, k, *grid.shape))``: states of unit
    (vector) norm, energies their Rayleigh quotients, ascending.

  Raises:
    RuntimeError: naming the potential (its position in ``potentials``) if
      ARPACK does not converge in ``max_iters`` restarts or a state's
      residual exceeds ``tol``.
  """
  k_matrix = kinetic.kinetic_matrix(grid).tocsr()
  n = grid.size
  b = potentials.shape[0]
  energies = np.empty((b, num_states))
  states = np.empty((b, num_states, n))
  for i, v in enumerate(potentials.reshape(b, n)):
    h = k_matrix + scipy.sparse.diags(v)
    # One state more than wanted: a degenerate pair right above the last
    # wanted state (p-like states of a symmetric well) stalls ARPACK when
    # only one of the pair is asked for. ARPACK's tol bounds each Ritz
    # value's relative error; the residual check below is what decides.
    try:
      _, u = scipy.sparse.linalg.eigsh(h, k=num_states + 1, which="SA",
                                       v0=np.ones(n), ncv=min(40, n - 1),
                                       tol=1e-12,
                                       maxiter=max_iters)
    except scipy.sparse.linalg.ArpackNoConvergence as e:
      raise RuntimeError(f"lanczos: potential {i} did not converge in "
                         f"{max_iters} restarts") from e
    u = u.T
    hu = (h @ u.T).T
    e = np.sum(u * hu, axis=-1)
    order = np.argsort(e)[:num_states]
    e, u, hu = e[order], u[order], hu[order]
    residual = np.linalg.norm(hu - e[:, None] * u, axis=-1)
    if (residual > tol).any():
      raise RuntimeError(f"lanczos: potential {i} has residual "
                         f"{residual.max():.2e} Ha > {tol:g}")
    energies[i], states[i] = e, u
  return energies, states.reshape((b, num_states) + grid.shape)
