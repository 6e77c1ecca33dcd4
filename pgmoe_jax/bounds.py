r"""Two-sided error bounds on the ground-state energy from any trial state.

For a state :math:`\psi` (a network's prediction, say) of the discrete
Hamiltonian :math:`H = -\tfrac12\Delta_h + \mathrm{diag}(V)` (a real
symmetric matrix), let

* :math:`E = \langle\psi|H|\psi\rangle / \langle\psi|\psi\rangle`, the
  Rayleigh quotient, and
* :math:`r = \|H\psi - E\psi\| / \|\psi\|`, the residual (plain Euclidean
  norms; the grid's volume element cancels in both).

Then, with :math:`E_0 \le E_1 \le \dots` the eigenvalues of ``H``:

* **Upper bound** (variational principle, no assumption): :math:`E_0 \le E`.
* **Weinstein**: :math:`[E - r, E + r]` holds an eigenvalue of ``H``. If
  moreover :math:`E + r < \beta \le E_1`, the only eigenvalue that can lie in
  the interval is :math:`E_0`, so :math:`E_0 \ge E - r`.
* **Temple**: for :math:`E < \beta \le E_1`,
  :math:`E_0 \ge E - r^2 / (\beta - E)` (from
  :math:`\langle\psi|(H - E_0)(H - \beta)|\psi\rangle \ge 0`). Where
  Weinstein applies, Temple is tighter (:math:`r^2/(\beta - E) < r`), and it
  applies more often; it tends to ``E`` quadratically in ``r``.

Both lower bounds need a lower bound :math:`\beta` on the *second*
eigenvalue :math:`E_1`, and they are exactly as rigorous as :math:`\beta`:

* :func:`beta_rigorous`: :math:`\beta = \lambda_1(K) + \min V`, the
  second-lowest eigenvalue of the discrete kinetic matrix ``K`` (counted with
  multiplicity, :mod:`pgmoe_jax.kinetic`) plus the potential's minimum. Since
  :math:`H \ge K + \min V` as quadratic forms, Weyl's monotonicity gives
  :math:`E_1 \ge \lambda_1(K) + \min V` on Dirichlet and periodic grids alike.
  Bounds with it are rigorous (up to float64 rounding, about
  :math:`10^{-14}` Ha here), but this :math:`\beta` is far below
  :math:`E_1` whenever the particle's zero-point energy above
  :math:`\min V` exceeds :math:`\lambda_1(K)` (a deep or narrow well), and
  then no lower bound follows (NaN).
* An estimated :math:`\beta`, for instance from a few LOBPCG iterations
  (:mod:`pgmoe_jax.workflows.predict`): a Ritz value is an *upper* bound on
  :math:`E_1`, so bounds with such a :math:`\beta` are estimates that hold
  only when the estimate is at or below the true :math:`E_1`.

Everything here bounds the eigenvalues of the grid's matrix ``H``, the
operator the solvers and the models work with, not the continuum
Schrödinger operator: the discretisation error (second order in ``h``) is
not included.

The arithmetic is float64: states and potentials are cast to float64 (a
float32 prediction is represented exactly), which needs JAX's
``jax_enable_x64``; without it the functions raise instead of silently
computing in float32. :func:`lower_bounds` is plain NumPy on given
``E, r, beta`` and needs no JAX at all.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import kinetic
from pgmoe_jax.grid import Grid
from pgmoe_jax.variational import rayleigh_quotient
from pgmoe_jax.variational import residual_norm

__all__ = ["Bounds", "beta_rigorous", "energy_and_residual",
           "ground_state_bounds", "kinetic_lambda1", "lower_bounds",
           "temple_lower", "weinstein_lower"]


class Bounds(NamedTuple):
  """Bounds on the lowest eigenvalue ``E0`` of ``H``, per sample (Hartree).

  Attributes:
    energy: the Rayleigh quotient ``E``, an upper bound on ``E0``.
    residual: ``||H psi - E psi|| / ||psi||``.
    beta: the lower bound on ``E1`` the lower bounds assume.
    weinstein: ``E - r`` where ``E + r < beta``, NaN elsewhere.
    temple: ``E - r**2 / (beta - E)`` where ``E < beta``, NaN elsewhere.
    lower: the larger of the two (NaN where both are NaN).
  """
  energy: np.ndarray
  residual: np.ndarray
  beta: np.ndarray
  weinstein: np.ndarray
  temple: np.ndarray
  lower: np.ndarray


def _require_x64(what: str) -> None:
  checks.require_x64(f"{what} computes bounds in float64",
                     " (or pass --jax_enable_x64); float32 rounding would "
                     "blur the bounds")


def _as_float64(name: str, x) -> np.ndarray:
  x = np.asarray(x)
  if np.iscomplexobj(x):
    raise TypeError(f"{name} is complex ({x.dtype}); the bounds are for "
                    "real numbers.")
  return x.astype(np.float64)


def weinstein_lower(energy, residual, beta) -> np.ndarray:
  """``E - r`` where ``E + r < beta`` (then ``E0 >= E - r``), else NaN.

  Args:
    energy: Rayleigh quotients ``E``.
    residual: residuals ``r >= 0``.
    beta: a lower bound on ``E1`` (broadcasts).
  """
  e, r, b = np.broadcast_arrays(_as_float64("energy", energy),
                                _as_float64("residual", residual),
                                _as_float64("beta", beta))
  return np.where(e + r < b, e - r, np.nan)


def temple_lower(energy, residual, beta) -> np.ndarray:
  """``E - r**2 / (beta - E)`` where ``E < beta``, else NaN (Temple).

  Args are as for :func:`weinstein_lower`.
  """
  e, r, b = np.broadcast_arrays(_as_float64("energy", energy),
                                _as_float64("residual", residual),
                                _as_float64("beta", beta))
  valid = e < b
  gap = np.where(valid, b - e, 1.0)
  return np.where(valid, e - r * r / gap, np.nan)


def lower_bounds(energy, residual, beta) -> Bounds:
  """The Weinstein and Temple lower bounds for given ``E``, ``r``, ``beta``.

  Args:
    energy: Rayleigh quotients, ``(...)``.
    residual: residuals, same shape, ``>= 0``.
    beta: a lower bound on ``E1``, broadcastable; the bounds are as
      rigorous as it is (see the module docstring).

  Returns:
    A :class:`Bounds` of float64 NumPy arrays with the broadcast shape.

  Raises:
    ValueError: shapes that do not broadcast, NaN/inf, a negative residual.
  """
  e = _as_float64("energy", energy)
  r = _as_float64("residual", residual)
  b = _as_float64("beta", beta)
  try:
    e, r, b = np.broadcast_arrays(e, r, b)
  except ValueError:
    raise ValueError(
        f"energy {e.shape}, residual {r.shape} and beta {b.shape} do not "
        "broadcast; give one value per sample (or one beta for all)."
    ) from None
  for name, x in (("energy", e), ("residual", r), ("beta", b)):
    checks.check_finite(name, x)
  if (r < 0).any():
    raise ValueError(f"residual holds {int((r < 0).sum())} negative "
                     "value(s); a residual is a norm, >= 0.")
  weinstein = weinstein_lower(e, r, b)
  temple = temple_lower(e, r, b)
  # fmax ignores a NaN operand: NaN only where neither bound applies.
  return Bounds(e, r, b, weinstein, temple, np.fmax(weinstein, temple))


def kinetic_lambda1(grid: Grid) -> float:
  """The second-lowest eigenvalue of ``K`` (with multiplicity), Hartree.

  On a square Dirichlet grid it is the degenerate pair of one node line;
  on a periodic grid (whose lowest is 0) the lowest nonzero plane wave.
  """
  checks.check_grid(grid)
  return float(np.partition(kinetic.kinetic_eigenvalues(grid).ravel(), 1)[1])


def beta_rigorous(V, grid: Grid) -> np.ndarray:
  r""":math:`\lambda_1(K) + \min V` per potential: a rigorous bound
  :math:`\le E_1` (Weyl: :math:`H \ge K + \min V`).

  Args:
    V: potentials in Hartree, ``(..., *grid.shape)``.
    grid: the grid.

  Returns:
    float64 NumPy array of the batch shape of ``V``.

  Raises:
    ValueError: a shape that does not match the grid, an empty batch,
      NaN/inf.
  """
  checks.check_grid(grid)
  v = _as_float64("V", V)
  grid.check_array("V", v)
  checks.check_nonempty("V", v, grid)
  checks.check_finite("V", v)
  return kinetic_lambda1(grid) + v.min(axis=grid.axes)


def energy_and_residual(psi, V, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
  """``(E, r)`` of trial states in float64: Rayleigh quotient and residual.

  Args:
    psi: states ``(..., *grid.shape)``, any nonzero scale, any float dtype
      (cast to float64).
    V: potentials in Hartree, broadcastable against ``psi``.
    grid: the grid.

  Returns:
    float64 NumPy arrays with the broadcast batch shape.

  Raises:
    ValueError: float64 not enabled, mismatched shapes, an empty batch,
      NaN/inf, an identically zero state.
  """
  _require_x64("energy_and_residual")
  psi, V = checks.check_inputs(psi, V, grid)
  psi = psi.astype(jnp.float64)
  V = V.astype(jnp.float64)
  checks.check_nonzero("psi", psi, grid)
  e = rayleigh_quotient(psi, V, grid)
  r = residual_norm(psi, V, grid, e)
  return np.asarray(e, np.float64), np.asarray(r, np.float64)


def ground_state_bounds(psi, V, grid: Grid, beta=None) -> Bounds:
  """Upper and lower bounds on ``E0`` from trial states ``psi``.

  Args:
    psi: trial ground states ``(..., *grid.shape)``, any normalisation.
    V: potentials in Hartree, broadcastable against ``psi``.
    grid: the grid.
    beta: a lower bound on ``E1`` per sample (broadcastable to the batch
      shape); ``None`` uses :func:`beta_rigorous`, so the lower bounds are
      rigorous. An estimate gives estimated bounds.

  Returns:
    A :class:`Bounds`.

  Raises:
    ValueError: as :func:`energy_and_residual`, or a bad ``beta``.
  """
  e, r = energy_and_residual(psi, V, grid)
  if beta is None:
    beta = beta_rigorous(V, grid)
  return lower_bounds(e, r, beta)
