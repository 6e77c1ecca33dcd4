r"""Chebyshev-Jacobi smoothing of an approximate ground state (the cascade's).

A state interpolated from a coarser level is right at long wavelengths and
wrong at the grid scale: linear interpolation leaves kinks, and the coarse
level saw only block means of the potential. Those short-wavelength errors
are what a local relaxation removes best, at the cost of one stencil
application per sweep (multigrid's post-smoothing), far less than a
fixed-cost LOBPCG iteration, whose preconditioner transforms the whole grid.

:func:`jacobi_sweeps` applies to ``x`` the polynomial filter

.. math::

   x \leftarrow p_n\big(D^{-1}(H - \theta)\big)\, x, \qquad
   \theta = \frac{\langle x|H|x\rangle}{\langle x|x\rangle}, \qquad
   D = \sum_a h_a^{-2} + \max(V - \theta, 0),

with ``n`` the number of sweeps and ``p_n`` the scaled Chebyshev polynomial
that is 1 at 0 and smallest in magnitude on ``[LOW, HIGH]``:
``p_n(mu) = T_n((HIGH + LOW - 2 mu) / (HIGH - LOW)) / T_n((HIGH + LOW) /
(HIGH - LOW))``, applied as the product of its ``n`` root factors ``(1 -
mu / mu_k)``, one Jacobi sweep with step ``1 / mu_k`` each (one
application of ``H`` per sweep). The roots run in Leja order
(:func:`chebyshev_steps`): taken largest first, as cosines come, the
intermediate products amplify some modes by orders of magnitude before the
later factors damp them, and 16 sweeps in float32 left a 10x larger energy
error than in float64; in Leja order float32 matches the three-term
Chebyshev recurrence, which carries two more fields per sweep and runs
about 20% slower. ``D`` is the diagonal of
``H - theta`` (the kinetic stencil's is ``1/h^2`` per axis) where
``V >= theta``, and the kinetic diagonal alone where the state is
classically allowed, so by Gershgorin every eigenvalue ``mu`` of
``D^{-1}(H - theta)`` is at most ``HIGH = 2``: no component is amplified
beyond the start's. Components with ``mu`` in ``[LOW, 2]`` (short
wavelengths) shrink by ``1 / T_n((2 + LOW) / (2 - LOW))`` at least; those
near 0 (the long-wavelength error) barely move and are left to the
fixed-cost LOBPCG iterations that follow (:mod:`fixed_iters`); those with
``mu < 0`` (below ``theta``, toward the ground state) grow. An exact
eigenvector has ``(H - theta) x = 0`` and is a fixed point.

:func:`stepped_sweeps` applies a polynomial given by its roots instead:
``x <- x - s_k D^-1 (H - theta) x`` for each step size ``s_k`` (``theta``
and ``D`` as above), the product ``prod_k (1 - s_k mu)``. With the
reciprocal Chebyshev roots (:func:`chebyshev_steps`) it is
:func:`jacobi_sweeps`; with step sizes trained on the energy (PG-MoE's
``"sweeps"`` gate, :mod:`pgmoe_jax.models.gates`) it is a learned smoother
of the same cost.

The filter is not a Rayleigh-Ritz step: it does not guarantee a lower
Rayleigh quotient, and the cascade reports the Rayleigh quotient of the
state it returns (an upper bound on E0 whatever the sweeps did).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import hamiltonian
from pgmoe_jax.grid import Grid

# The interval [LOW, HIGH] the filter damps. HIGH = 2 bounds the spectrum
# of D^-1 (H - theta) (Gershgorin); LOW sets where "short wavelength"
# starts: a lower LOW damps more modes, each less. 0.1 serves 4 to 16
# sweeps (WORKSPACE.md, "The solvers, in short").
LOW = 0.1
HIGH = 2.0


def _shift_and_diagonal(x, potentials, grid: Grid):
  """``H x``, ``theta`` (x's Rayleigh quotient, as a column) and ``D^-1``."""
  col = (x.shape[0],) + (1,) * grid.ndim
  hx = hamiltonian.apply_unchecked(x, potentials, grid)
  theta = (jnp.sum(x * hx, axis=grid.axes)
           / jnp.sum(x * x, axis=grid.axes)).reshape(col)
  inv_diagonal = 1.0 / (sum(1.0 / h**2 for h in grid.spacing)
                        + jnp.maximum(potentials - theta, 0.0))
  return hx, theta, inv_diagonal


def jacobi_sweeps(x: jax.Array, potentials: jax.Array, grid: Grid,
                  sweeps: int, low: float = LOW,
                  high: float = HIGH) -> jax.Array:
  """``sweeps`` Chebyshev-accelerated Jacobi sweeps on ``(H - theta) x = 0``.

  No input checks (a kernel inside the jitted cascade).

  Args:
    x: ``(b, *grid.shape)`` approximate ground states (any norm).
    potentials: ``(b, *grid.shape)`` in Hartree.
    grid: the grid (static).
    sweeps: the number of sweeps, the filter's degree (static, >= 0; 0
      returns ``x``).
    low, high: the interval ``0 < low < high <= 2`` the filter damps.

  Returns:
    ``p(D^-1 (H - theta)) x`` (see the module docstring) times a power of
    two per sample (as in :func:`stepped_sweeps`), ``(b, *grid.shape)``,
    not normalised.
  """
  if not sweeps:
    return x
  return stepped_sweeps(x, potentials, grid,
                        jnp.asarray(chebyshev_steps(sweeps, low, high),
                                    x.dtype))


def chebyshev_steps(sweeps: int, low: float = LOW,
                    high: float = HIGH) -> np.ndarray:
  """The step sizes of :func:`jacobi_sweeps`' filter in product form.

  ``1 / mu_k`` for the ``sweeps`` roots ``mu_k`` of the scaled Chebyshev
  polynomial on ``[low, high]``, in Leja order: the largest root first,
  then each next the one farthest (in product of distances) from those
  before it, which keeps the partial products small in float32.
  """
  k = np.arange(sweeps)
  roots = list(0.5 * (high + low) + 0.5 * (high - low)
               * np.cos(np.pi * (2 * k + 1) / (2 * sweeps)))
  ordered = []
  while roots:
    pick = max(roots, key=lambda r: (np.prod([abs(r - o) for o in ordered])
                                     if ordered else abs(r)))
    ordered.append(pick)
    roots.remove(pick)
  return 1.0 / np.asarray(ordered, dtype=np.float64)


def stepped_sweeps(x: jax.Array, potentials: jax.Array, grid: Grid,
                   steps: jax.Array) -> jax.Array:
  """Jacobi sweeps on ``(H - theta) x = 0`` with the given step sizes.

  No input checks (a kernel inside the jitted cascade); differentiable in
  ``steps`` (and ``x``).

  Args:
    x: ``(b, *grid.shape)`` approximate ground states (any norm).
    potentials: ``(b, *grid.shape)`` in Hartree.
    grid: the grid (static).
    steps: ``(n,)`` step sizes, one per sweep (``n`` static, may be 0).

  Returns:
    ``prod_k (1 - steps[k] D^-1 (H - theta)) x``, ``theta`` and ``D`` as
    in :func:`jacobi_sweeps` (fixed from ``x``), ``(b, *grid.shape)``, not
    normalised: each sample is rescaled by a power of two after every
    sweep (exact, so only its scale changes), its largest entry in
    ``[0.5, 1)``, so that float32 does not overflow.
  """
  if not steps.shape[0]:
    return x
  potentials = potentials.astype(x.dtype)
  hx, theta, inv_diagonal = _shift_and_diagonal(x, potentials, grid)

  def body(x, step):
    hx = hamiltonian.apply_unchecked(x, potentials, grid)
    return _in_range(x - step * inv_diagonal * (hx - theta * x), grid), None

  steps = steps.astype(x.dtype)
  # The first sweep reuses H x of theta; the rest run as a scan (unrolled,
  # XLA fused the sweeps into a program whose run time grew exponentially
  # with their number).
  x = _in_range(x - steps[0] * inv_diagonal * (hx - theta * x), grid)
  x, _ = jax.lax.scan(body, x, steps[1:])
  return x


def _in_range(x, grid: Grid):
  """``x`` times the power of two that puts each sample's largest entry in
  ``[0.5, 1)``.

  A power of two scales exactly (no rounding), so the sweeps' arithmetic
  is unchanged wherever it stays in range; but the components below
  ``theta`` grow by ``1 + s |mu|`` per sweep, and on a coarse grid with a
  deep well (small ``D``, ``V - theta`` far below 0) float32 overflows
  within 16 sweeps without it. The factor is constant in ``x`` (no
  gradient flows through it).
  """
  largest = jnp.max(jnp.abs(x), axis=grid.axes, keepdims=True)
  _, exponent = jnp.frexp(jax.lax.stop_gradient(largest))
  return x * jnp.ldexp(jnp.ones_like(largest), -exponent)
