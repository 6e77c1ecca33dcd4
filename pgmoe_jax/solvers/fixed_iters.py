r"""A batched ground-state solver of fixed cost, for throughput (the gate).

:func:`ground_state_fixed` runs exactly ``iters`` iterations of
single-vector LOBPCG (locally optimal preconditioned CG on the Rayleigh
quotient) on a whole batch of potentials at once. It computes the same
thing as :func:`pgmoe_jax.solvers.lobpcg.lobpcg_batch` with one state, but
is built for a model's forward pass rather than for a reference solve:

* no ``vmap`` and no ``while_loop``: every operation acts on the batch
  ``(b, *grid.shape)`` directly, so the inner products are fused
  elementwise products and reductions instead of many tiny batched
  matrix-vector products, and the only matrix products are the per-axis
  sine transforms of the preconditioner (batched matmuls, what matrix units
  run best);
* the Rayleigh-Ritz step on ``span{x, w, p}`` is a batch of 3x3 symmetric
  eigenproblems on an explicitly orthonormal basis (Gram-Schmidt twice);
* a fixed number of iterations, no tolerance: the cost does not depend on
  the data, and it runs the same on CPU, GPU and TPU.

Against the vmapped LOBPCG with a 2-vector block it trades a slightly
slower convergence per iteration for much cheaper iterations (no vmapped
while loop, one state per potential); ``python -m experiments.benchmark
--what=gate`` measures both (RESULTS.md, "The physics gate").

Precision: the sine transforms run at ``Precision.HIGHEST`` (float32 on
TPU and on GPUs with TF32, not bfloat16 passes), and so does everything
else here (elementwise and reductions are exact float32 anyway).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from pgmoe_jax import hamiltonian
from pgmoe_jax import kinetic
from pgmoe_jax.grid import Grid
from pgmoe_jax.solvers import lobpcg


@functools.partial(jax.jit, static_argnames=("grid", "iters", "fft_min_size"))
def ground_state_fixed(potentials: jax.Array, grid: Grid, iters: int,
                       start: jax.Array | None = None,
                       fft_min_size: int | None = kinetic.FFT_MIN_SIZE):
  """The lowest eigenpair of each potential's H after ``iters`` iterations.

  No input checks (a hot path inside models): the caller passes a floating
  ``potentials (b, *grid.shape)``. Jitted
  :func:`ground_state_fixed_unchecked` without extra directions (see
  there for the arguments and what is returned).
  """
  return ground_state_fixed_unchecked(potentials, grid, iters, start,
                                      fft_min_size)


def ground_state_fixed_unchecked(
    potentials: jax.Array, grid: Grid, iters: int,
    start: jax.Array | None = None,
    fft_min_size: int | None = kinetic.FFT_MIN_SIZE,
    direction_fn: Callable[[jax.Array], jax.Array] | None = None):
  """:func:`ground_state_fixed`, not jitted, with an optional extra direction.

  ``direction_fn`` (a network, say) adds a fourth vector to every
  iteration's Rayleigh-Ritz basis: ``span{x, w, p, d}`` with ``d =
  direction_fn(x)``. The Ritz vector minimises the Rayleigh quotient over
  a space that holds the classical step's, so each iteration ends at an
  energy no higher than the classical iteration's from the same point,
  whatever ``d`` is (a direction inside the span of the others is
  dropped); with arbitrary directions, 30 float64 iterations still reach
  the ground state on every family in the tests.

  Args:
    potentials: ``(b, *grid.shape)`` in Hartree.
    grid: the grid (static).
    iters: the number of iterations (static, >= 0).
    start: ``(b, *grid.shape)`` starting vectors, or ``None`` for K's
      lowest mode (nodeless, so never orthogonal to the ground state).
      Give nonnegative starts (``|psi|`` of a coarser solve, say): the
      ground state of this H is positive, so a nonnegative start always
      overlaps it, while a start that is an excited eigenvector has a
      zero residual and stays one for any number of iterations.
    fft_min_size: axes of at least this many points apply the
      preconditioner's sine transforms by FFT, smaller ones by dense
      matrices (``kinetic.transform_methods``; ``None``: dense).
    direction_fn: ``None``, or ``f(x) -> d``, both ``(b, *grid.shape)``:
      the extra Ritz direction from the current state ``x`` (unit norm).

  Returns:
    ``(energies (b,), states (b, *grid.shape))``: each energy is its state's
    Rayleigh quotient (an upper bound on E0); states have unit Euclidean
    norm, with their sign fixed so that their sum is positive.
  """
  dtype = potentials.dtype
  b = potentials.shape[0]
  col = (b,) + (1,) * grid.ndim
  # spatial: under a mesh with a "space" axis the preconditioner's
  # transforms keep every field split across the space devices.
  to_basis, from_basis = kinetic.make_eigenbasis_transforms(
      grid, dtype, fft_min_size, spatial=True)
  lam = jnp.asarray(kinetic.kinetic_eigenvalues(grid), dtype)
  floor = lobpcg.kinetic_floor(grid)
  threshold = 1e3 * float(jnp.finfo(dtype).eps)

  def dot(u, v):
    return jnp.sum(u * v, axis=grid.axes)

  def h(u):
    return hamiltonian.apply_unchecked(u, potentials, grid)

  def orthonormal(w, others):
    """``w`` made unit and orthogonal to ``others`` (zero if inside them)."""
    norm = jnp.sqrt(dot(w, w))
    w = w / jnp.where(norm > 0, norm, 1.0).reshape(col)
    for _ in range(2):
      for o in others:
        w = w - dot(o, w).reshape(col) * o
    left = jnp.sqrt(dot(w, w))
    keep = left > threshold
    w = jnp.where(keep.reshape(col), w / jnp.where(keep, left, 1.0).reshape(
        col), 0.0)
    return w, keep

  if start is None:
    start = jnp.broadcast_to(
        jnp.asarray(kinetic.kinetic_modes(grid, 1)[0], dtype),
        potentials.shape)
  x = start / jnp.sqrt(dot(start, start)).reshape(col)
  hx = h(x)
  theta = dot(x, hx)
  p = jnp.zeros_like(x)
  for it in range(iters):
    # Preconditioned residual (the preconditioner of the reference LOBPCG).
    r = hx - theta.reshape(col) * x
    c, scale = lobpcg.shift_and_damping(
        theta - dot(x * x, potentials), theta.reshape(col), potentials,
        floor, col)
    w = scale * from_basis(to_basis(scale * r) / (lam + c))
    w, keep_w = orthonormal(w, [x])
    vectors, keeps = [x, w], [keep_w]
    if it > 0:
      p, keep_p = orthonormal(p, [x, w])
      vectors.append(p)
      keeps.append(keep_p)
    if direction_fn is not None:
      d, keep_d = orthonormal(direction_fn(x), vectors)
      vectors.append(d)
      keeps.append(keep_d)
    hv = [hx] + [h(v) for v in vectors[1:]]
    m = len(vectors)
    a = jnp.stack([jnp.stack([dot(vectors[i], hv[j]) for j in range(m)], -1)
                   for i in range(m)], -2)
    a = 0.5 * (a + jnp.swapaxes(a, -1, -2))
    # A dropped direction (zero) gets a diagonal entry above the spectrum.
    lift = 2.0 * jnp.sum(jnp.abs(a), axis=(-2, -1)) + 1.0
    dropped = jnp.stack([jnp.zeros((b,), bool)] + [~k for k in keeps], -1)
    a = a + jnp.where(dropped, lift[:, None], 0.0)[..., None] * jnp.eye(
        m, dtype=dtype)
    _, coef = jnp.linalg.eigh(a)
    coef = coef[..., 0]
    coef = coef * jnp.where(coef[:, :1] < 0, -1.0, 1.0)
    # The basis is orthonormal, so the Ritz vector has unit norm and
    # H x follows from H of the basis by the same (orthogonal)
    # coefficients, without drift over a handful of iterations.
    p = sum(coef[:, i].reshape(col) * vectors[i] for i in range(1, m))
    hp = sum(coef[:, i].reshape(col) * hv[i] for i in range(1, m))
    x = coef[:, 0].reshape(col) * x + p
    hx = coef[:, 0].reshape(col) * hx + hp
    theta = dot(x, hx)
  if iters:  # what is returned is exact for the returned state
    x = x / jnp.sqrt(dot(x, x)).reshape(col)
    theta = dot(x, h(x))
  sign = jnp.where(jnp.sum(x, axis=grid.axes) < 0, -1.0, 1.0)
  return theta, x * sign.reshape(col)
