r"""The potential families: pure, jittable samplers of random potentials V(r).

Each follows the contract of :mod:`pgmoe_jax.potentials`
(``family(key, grid, batch_shape=(), *, <ranges>, dtype=None)``).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
import numpy as np

from pgmoe_jax.grid import Grid
from pgmoe_jax.potentials._args import as_batch_shape
from pgmoe_jax.potentials._args import as_dtype
from pgmoe_jax.potentials._args import check_grid
from pgmoe_jax.potentials._args import check_range
from pgmoe_jax.potentials._args import check_scalar
from pgmoe_jax.potentials._args import check_size
from pgmoe_jax.potentials._sampling import PAD_CORRELATION_LENGTHS
from pgmoe_jax.potentials._sampling import axis_coordinates
from pgmoe_jax.potentials._sampling import centres
from pgmoe_jax.potentials._sampling import fast_len
from pgmoe_jax.potentials._sampling import over_grid
from pgmoe_jax.potentials._sampling import uniform_in
from pgmoe_jax.potentials._sampling import unit_vectors


def gaussian_wells(key: jax.Array, grid: Grid,
                   batch_shape: int | Sequence[int] = (), *,
                   num_wells: tuple[int, int] = (1, 4),
                   depth: tuple[float, float] = (1.0, 10.0),
                   width: tuple[float, float] = (0.7, 2.0),
                   centre_fraction: float = 0.25,
                   dtype: DTypeLike | None = None) -> jax.Array:
  r"""Sums of attractive Gaussian wells (the default data family).

  .. math:: V(r) = -\sum_{m<M} A_m \exp(-|r - c_m|^2 / (2 s_m^2)),

  with the well count ``M`` uniform in ``{num_wells[0], ..., num_wells[1]}``,
  depths ``A_m`` (Hartree) uniform in ``depth``, widths ``s_m`` (bohr)
  uniform in ``width`` and centre coordinates ``c_{m,a}`` uniform in
  ``[-f L_a, f L_a]`` with ``f = centre_fraction``. ``num_wells[1]`` wells are
  always drawn and those with index ``>= M`` get zero depth, which keeps the
  shapes static. ``V <= 0`` everywhere.

  Args:
    key: a JAX PRNG key.
    grid: the grid, d = 1, 2 or 3.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    num_wells: inclusive integer range of the number of wells, low >= 1.
    depth: range of each well's depth A_m in Hartree, low > 0.
    width: range of each well's standard deviation s_m in bohr, low > 0.
    centre_fraction: half-extent of the centre box as a fraction of the box
      length per axis, >= 0 (0.25 gives ``[-L/4, L/4]^d``).
    dtype: floating dtype of the result; ``None`` for JAX's default float.

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree.

  Raises:
    TypeError: if ``grid`` is not a :class:`Grid` or ``batch_shape`` is not an
      int or a tuple of ints.
    ValueError: for a malformed or out-of-bounds range, or a non-float dtype.
  """
  where = "gaussian_wells"
  check_grid(where, grid)
  batch = as_batch_shape(where, batch_shape)
  dtype = as_dtype(where, dtype)
  check_size(where, batch, grid, dtype)
  m_low, m_high = check_range(where, "num_wells", num_wells, minimum=1,
                              integer=True)
  depth = check_range(where, "depth", depth, minimum=0, strict=True)
  width = check_range(where, "width", width, minimum=0, strict=True)
  centre_fraction = check_scalar(where, "centre_fraction", centre_fraction,
                                 minimum=0, strict=False)
  max_wells = int(m_high)

  # One block of uniform draws per sample, sliced into the parameters: each
  # separate jax.random call adds a threefry kernel to compile.
  d = grid.ndim
  u = jax.random.uniform(key, batch + (1 + max_wells * (2 + d),), dtype)
  wells = u[..., 1:].reshape(batch + (max_wells, 2 + d))
  # floor(u * k) is uniform on {0..k-1}; the clip guards u * k rounding to k.
  choices = m_high - m_low + 1
  count = m_low + jnp.minimum(jnp.floor(u[..., 0] * choices), choices - 1)
  active = jnp.arange(max_wells) < count[..., None]
  amplitude = jnp.where(active, uniform_in(wells[..., 0], depth), 0)
  sigma = uniform_in(wells[..., 1], width)
  centre = centres(wells[..., 2:], grid, centre_fraction)

  # A Gaussian factorises over axes, so V is a contraction over wells of
  # per-axis factors of shape (*batch, M, n_a): this never materialises the
  # (*batch, M, *grid.shape) array that a direct sum would.
  factors = []
  for a, x in enumerate(grid.coordinates()):
    x = jnp.asarray(x, dtype)
    diff = x - centre[..., a, None]
    factors.append(jnp.exp(-diff**2 / (2 * sigma[..., None]**2)))
  letters = "ijk"[:grid.ndim]
  subscripts = ",".join(["...m"] + [f"...m{c}" for c in letters])
  # HIGHEST: accelerators otherwise run float32 contractions in reduced
  # (TF32/bf16) precision, a ~1e-3 relative error in V.
  potential = jnp.einsum(f"{subscripts}->...{letters}", amplitude, *factors,
                         precision=jax.lax.Precision.HIGHEST)
  return -potential


def harmonic(key: jax.Array, grid: Grid,
             batch_shape: int | Sequence[int] = (), *,
             omega: tuple[float, float] = (0.5, 2.0),
             centre_fraction: float = 0.1,
             dtype: DTypeLike | None = None) -> jax.Array:
  r"""Anisotropic harmonic oscillators.

  .. math:: V(r) = \tfrac12 \sum_a \omega_a^2 (x_a - c_a)^2,

  with an independent angular frequency ``omega_a`` (Hartree, i.e. atomic
  units of inverse time) per axis, uniform in ``omega``, and centre
  coordinates ``c_a`` uniform in ``[-f L_a, f L_a]``, ``f = centre_fraction``.
  ``V >= 0``. An ``omega_a`` of 0 leaves axis ``a`` confined by the box only.

  Args:
    key: a JAX PRNG key.
    grid: the grid, d = 1, 2 or 3.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    omega: range of the per-axis angular frequency in Hartree, low >= 0.
    centre_fraction: half-extent of the centre box as a fraction of the box
      length per axis, >= 0.
    dtype: floating dtype of the result; ``None`` for JAX's default float.

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree.

  Raises:
    TypeError: if ``grid`` is not a :class:`Grid` or ``batch_shape`` is not an
      int or a tuple of ints.
    ValueError: for a malformed or out-of-bounds range, or a non-float dtype.
  """
  where = "harmonic"
  check_grid(where, grid)
  batch = as_batch_shape(where, batch_shape)
  dtype = as_dtype(where, dtype)
  check_size(where, batch, grid, dtype)
  omega = check_range(where, "omega", omega, minimum=0)
  centre_fraction = check_scalar(where, "centre_fraction", centre_fraction,
                                 minimum=0, strict=False)

  d = grid.ndim
  u = jax.random.uniform(key, batch + (2 * d,), dtype)
  w = uniform_in(u[..., :d], omega)
  centre = centres(u[..., d:], grid, centre_fraction)
  potential = jnp.zeros(batch + grid.shape, dtype)
  for a, x in enumerate(axis_coordinates(grid, dtype)):
    wa = over_grid(w[..., a], grid)
    ca = over_grid(centre[..., a], grid)
    potential = potential + 0.5 * wa**2 * (x - ca)**2
  return potential


def double_well(key: jax.Array, grid: Grid,
                batch_shape: int | Sequence[int] = (), *,
                depth: tuple[float, float] = (1.0, 5.0),
                separation: tuple[float, float] = (1.5, 3.5),
                asymmetry: tuple[float, float] = (-0.3, 0.3),
                omega: tuple[float, float] = (0.5, 1.5),
                cap: float = 50.0,
                dtype: DTypeLike | None = None) -> jax.Array:
  r"""Quartic double wells along a random direction, capped.

  With a unit direction ``u`` uniform on the sphere (in 1-D, ``u = +-1`` with
  equal probability) and ``s = u . r``,

  .. math::

     V(r) = \min\bigl(D ((s/b)^2 - 1)^2 + \epsilon D s/b
                      + \tfrac12 \omega^2 |r - s u|^2,\ \mathrm{cap}\bigr),

  where ``D`` (Hartree) is the barrier height, uniform in ``depth``;
  ``2 b`` (bohr) is the distance between the two minima at ``s = +-b``,
  uniform in ``separation``; ``epsilon`` tilts one well below the other,
  uniform in ``asymmetry``; and ``omega`` (Hartree) confines the directions
  transverse to ``u`` (it has no effect in 1-D). The wells are centred on the
  origin.

  The quartic reaches ~1e4 Ha at the box walls. That only widens the spectrum
  of H (stiffening iterative solvers and the energy loss) without any physical
  effect, since the low-lying states are negligible there, so V is clipped at
  ``cap``.

  Args:
    key: a JAX PRNG key.
    grid: the grid, d = 1, 2 or 3.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    depth: range of the barrier height D in Hartree, low > 0.
    separation: range of the distance 2b between the minima in bohr, low > 0.
    asymmetry: range of the dimensionless tilt epsilon (any sign).
    omega: range of the transverse angular frequency in Hartree, low >= 0.
    cap: the ceiling on V in Hartree, > 0; ``math.inf`` disables it.
    dtype: floating dtype of the result; ``None`` for JAX's default float.

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree, ``V <= cap``.

  Raises:
    TypeError: if ``grid`` is not a :class:`Grid` or ``batch_shape`` is not an
      int or a tuple of ints.
    ValueError: for a malformed or out-of-bounds range or cap, or a non-float
      dtype.
  """
  where = "double_well"
  check_grid(where, grid)
  batch = as_batch_shape(where, batch_shape)
  dtype = as_dtype(where, dtype)
  check_size(where, batch, grid, dtype)
  depth = check_range(where, "depth", depth, minimum=0, strict=True)
  separation = check_range(where, "separation", separation, minimum=0,
                           strict=True)
  asymmetry = check_range(where, "asymmetry", asymmetry)
  omega = check_range(where, "omega", omega, minimum=0)
  cap = check_scalar(where, "cap", cap, minimum=0, strict=True, allow_inf=True)

  d = grid.ndim
  # One uniform block (see gaussian_wells): four scalars, then d - 1 draws
  # for the direction (one in 1-D, for the sign).
  u = jax.random.uniform(key, batch + (4 + max(d - 1, 1),), dtype)
  barrier = over_grid(uniform_in(u[..., 0], depth), grid)
  half_sep = over_grid(uniform_in(u[..., 1], separation) / 2, grid)
  tilt = over_grid(uniform_in(u[..., 2], asymmetry), grid)
  w = over_grid(uniform_in(u[..., 3], omega), grid)
  direction = unit_vectors(u[..., 4:], d)
  coords = axis_coordinates(grid, dtype)

  if d == 1:
    # u = +-1 exactly, so r - s u == 0: the transverse term is skipped.
    along = over_grid(direction[..., 0], grid) * coords[0]
    transverse = 0.0
  else:
    ua = [over_grid(direction[..., a], grid) for a in range(d)]
    along = sum(ui * x for ui, x in zip(ua, coords))
    # Summed componentwise rather than as |r|^2 - s^2, which cancels badly.
    transverse = sum((x - along * ui)**2 for ui, x in zip(ua, coords))

  t = along / half_sep
  potential = (barrier * (t**2 - 1)**2 + tilt * barrier * t
               + 0.5 * w**2 * transverse)
  return jnp.minimum(potential, jnp.asarray(cap, dtype))


def box_well(key: jax.Array, grid: Grid,
             batch_shape: int | Sequence[int] = (), *,
             depth: tuple[float, float] = (1.0, 10.0),
             half_width: tuple[float, float] = (1.0, 4.0),
             centre_fraction: float = 0.125,
             dtype: DTypeLike | None = None) -> jax.Array:
  r"""Finite square (rectangular in 2-D/3-D) wells.

  ``V = -A`` where ``|x_a - c_a| <= w_a`` on every axis ``a`` and 0 elsewhere,
  with ``A`` (Hartree) uniform in ``depth``, an independent half-width
  ``w_a`` (bohr) per axis uniform in ``half_width`` and centre coordinates
  ``c_a`` uniform in ``[-f L_a, f L_a]``, ``f = centre_fraction``. A
  half-width below half the grid spacing may catch no grid point, giving
  ``V = 0``.

  Args:
    key: a JAX PRNG key.
    grid: the grid, d = 1, 2 or 3.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    depth: range of the well depth A in Hartree, low > 0.
    half_width: range of each axis' half-width w_a in bohr, low > 0.
    centre_fraction: half-extent of the centre box as a fraction of the box
      length per axis, >= 0.
    dtype: floating dtype of the result; ``None`` for JAX's default float.

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree; every value is
    exactly ``-A`` or 0.

  Raises:
    TypeError: if ``grid`` is not a :class:`Grid` or ``batch_shape`` is not an
      int or a tuple of ints.
    ValueError: for a malformed or out-of-bounds range, or a non-float dtype.
  """
  where = "box_well"
  check_grid(where, grid)
  batch = as_batch_shape(where, batch_shape)
  dtype = as_dtype(where, dtype)
  check_size(where, batch, grid, dtype)
  depth = check_range(where, "depth", depth, minimum=0, strict=True)
  half_width = check_range(where, "half_width", half_width, minimum=0,
                           strict=True)
  centre_fraction = check_scalar(where, "centre_fraction", centre_fraction,
                                 minimum=0, strict=False)

  d = grid.ndim
  u = jax.random.uniform(key, batch + (1 + 2 * d,), dtype)
  amplitude = over_grid(uniform_in(u[..., 0], depth), grid)
  w = uniform_in(u[..., 1:1 + d], half_width)
  centre = centres(u[..., 1 + d:], grid, centre_fraction)
  inside = jnp.ones(batch + grid.shape, bool)
  for a, x in enumerate(axis_coordinates(grid, dtype)):
    dist = jnp.abs(x - over_grid(centre[..., a], grid))
    inside = inside & (dist <= over_grid(w[..., a], grid))
  return jnp.where(inside, -amplitude, jnp.zeros((), dtype))


def random_smooth(key: jax.Array, grid: Grid,
                  batch_shape: int | Sequence[int] = (), *,
                  depth: tuple[float, float] = (1.0, 10.0),
                  correlation_length: tuple[float, float] = (1.0, 3.0),
                  window: float = math.inf,
                  dtype: DTypeLike | None = None) -> jax.Array:
  r"""Smoothed Gaussian random fields, rescaled to span ``[-A, 0]``.

  Grid white noise is filtered in Fourier space by
  ``exp(-l^2 |k|^2 / 4)``, i.e. convolved with ``exp(-|r|^2 / l^2)``, which
  gives a stationary field ``f`` with covariance proportional to
  ``exp(-|r - r'|^2 / (2 l^2))``: ``l`` (bohr, uniform per sample in
  ``correlation_length``) is the length of the field's Gaussian covariance.
  Each sample is then mapped affinely onto ``[-A, 0]``,

  .. math:: V = A (f - \max f) / (\max f - \min f),

  with ``A`` (Hartree) uniform in ``depth``, so ``min V = -A`` and
  ``max V = 0`` exactly.

  A finite ``window`` ``W`` (bohr) confines the landscape to the middle of
  the box: the rescaled field is multiplied by ``exp(-|r|^2 / (2 W^2))``
  (``r`` from the box centre) and rescaled again so that ``min V = -A``,

  .. math:: g = \frac{f - \max f}{\max f - \min f} e^{-|r|^2 / (2 W^2)},
     \qquad V = A g / |\min g|,

  so valleys fade towards the walls (``V -> 0`` there) and the ground state
  keeps away from them, as for an isolated system; ``max V = 0`` still.
  The default, ``inf``, is the plain field above (the same draws, bitwise).

  Boundaries: on a periodic grid the field is periodic, as the box is. On a
  Dirichlet grid the noise is drawn on a larger box, each axis extended by at
  least ``4 * correlation_length[1]`` (rounded up to an FFT-friendly size),
  filtered there and cropped to the grid, so the circular convolution does
  not correlate opposite walls (residual covariance <= exp(-8) ~ 3e-4 of the
  variance).

  Args:
    key: a JAX PRNG key.
    grid: the grid, d = 1, 2 or 3, Dirichlet or periodic.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    depth: range of the depth A in Hartree, low > 0.
    correlation_length: range of the covariance length l in bohr, low > 0.
    window: the width W of the Gaussian window in bohr, > 0; ``math.inf``
      (the default) for none.
    dtype: floating dtype of the result; ``None`` for JAX's default float. The
      FFT runs in at least float32.

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree, with per-sample
    minimum ``-A`` and maximum 0.

  Raises:
    TypeError: if ``grid`` is not a :class:`Grid` or ``batch_shape`` is not an
      int or a tuple of ints.
    ValueError: for a malformed or out-of-bounds range, or a non-float dtype.
  """
  where = "random_smooth"
  check_grid(where, grid)
  batch = as_batch_shape(where, batch_shape)
  dtype = as_dtype(where, dtype)
  check_size(where, batch, grid, dtype)
  depth = check_range(where, "depth", depth, minimum=0, strict=True)
  correlation_length = check_range(where, "correlation_length",
                                   correlation_length, minimum=0, strict=True)
  window = check_scalar(where, "window", window, minimum=0, strict=True,
                        allow_inf=True)
  # jnp.fft has no half-precision kernels.
  work = jnp.promote_types(dtype, jnp.float32)

  if grid.boundary == "periodic":
    padded = grid.shape
  else:
    padded = tuple(
        fast_len(n + math.ceil(PAD_CORRELATION_LENGTHS
                               * correlation_length[1] / h))
        for n, h in zip(grid.shape, grid.spacing))
  d = grid.ndim
  axes = tuple(range(-d, 0))

  # Squared wavenumbers of the (padded) rfft layout: full frequencies on the
  # leading spatial axes, the non-negative half on the last.
  k_sq = np.zeros(padded[:-1] + (padded[-1] // 2 + 1,))
  for a, (n, h) in enumerate(zip(padded, grid.spacing)):
    if a == d - 1:
      k = 2 * np.pi * np.fft.rfftfreq(n, h)
    else:
      k = 2 * np.pi * np.fft.fftfreq(n, h)
    shape = [1] * d
    shape[a] = k.size
    k_sq = k_sq + (k**2).reshape(shape)
  k_sq = jnp.asarray(k_sq, work)

  k_noise, k_params = jax.random.split(key)
  noise = jax.random.normal(k_noise, batch + padded, work)
  u = jax.random.uniform(k_params, batch + (2,), work)
  length = over_grid(uniform_in(u[..., 0], correlation_length), grid)
  spectrum = jnp.fft.rfftn(noise, axes=axes) * jnp.exp(-length**2 * k_sq / 4)
  field = jnp.fft.irfftn(spectrum, s=padded, axes=axes)
  field = field[(...,) + tuple(slice(0, n) for n in grid.shape)]

  f_max = jnp.max(field, axis=axes, keepdims=True)
  f_min = jnp.min(field, axis=axes, keepdims=True)
  # A constant field (measure zero) would divide 0 by 0; it maps to V = 0.
  span = jnp.where(f_max > f_min, f_max - f_min, 1)
  amplitude = over_grid(uniform_in(u[..., 1], depth), grid)
  # Dividing before scaling makes the extremes exact: (min - max) / (max -
  # min) rounds to exactly -1 and (max - max) to 0.
  if math.isinf(window):
    return (amplitude * ((field - f_max) / span)).astype(dtype)
  r_sq = sum(x**2 for x in axis_coordinates(grid, work))
  shape = (field - f_max) / span * jnp.exp(-r_sq / (2 * window**2))
  # As above: g / |min g| is -1 at the minimum. A constant field (g = 0
  # everywhere) stays 0.
  low = jnp.min(shape, axis=axes, keepdims=True)
  scale = jnp.where(low < 0, -low, 1)
  return (amplitude * (shape / scale)).astype(dtype)


def woods_saxon(key: jax.Array, grid: Grid,
                batch_shape: int | Sequence[int] = (), *,
                depth: tuple[float, float] = (1.0, 10.0),
                radius: tuple[float, float] = (1.0, 4.0),
                diffuseness: tuple[float, float] = (0.3, 1.0),
                centre_fraction: float = 0.125,
                dtype: DTypeLike | None = None) -> jax.Array:
  r"""Flat-bottomed wells with smooth (Fermi-function) edges: Woods-Saxon.

  .. math::

     V(r) = -\frac{A}{1 + \exp\bigl((\rho - 1) R / a\bigr)}, \qquad
     \rho = \Bigl(\sum_a \bigl((x_a - c_a) / R_a\bigr)^2\Bigr)^{1/2},

  an ellipse (ellipsoid in 3-D) with an independent semi-axis ``R_a`` (bohr)
  per axis, uniform in ``radius``, and ``R = (\prod_a R_a)^{1/d}``; the
  depth ``A`` (Hartree) is uniform in ``depth``, the surface diffuseness
  ``a`` (bohr) uniform in ``diffuseness`` and the centre coordinates ``c_a``
  uniform in ``[-f L_a, f L_a]``, ``f = centre_fraction``. For a round well
  (equal ``R_a``) the exponent is ``(|r - c| - R) / a``: V falls from 88% to
  12% of the depth over ``4 a`` across the edge at ``|r - c| = R``, so the
  bottom is flat where ``R >> a`` and the well tends to a sharp
  (``box_well``-like) one as ``a -> 0``. ``-A < V < 0``.

  Args:
    key: a JAX PRNG key.
    grid: the grid, d = 1, 2 or 3.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    depth: range of the well depth A in Hartree, low > 0.
    radius: range of each semi-axis R_a in bohr, low > 0.
    diffuseness: range of the edge width a in bohr, low > 0.
    centre_fraction: half-extent of the centre box as a fraction of the box
      length per axis, >= 0.
    dtype: floating dtype of the result; ``None`` for JAX's default float.

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree.

  Raises:
    TypeError: if ``grid`` is not a :class:`Grid` or ``batch_shape`` is not an
      int or a tuple of ints.
    ValueError: for a malformed or out-of-bounds range, or a non-float dtype.
  """
  where = "woods_saxon"
  check_grid(where, grid)
  batch = as_batch_shape(where, batch_shape)
  dtype = as_dtype(where, dtype)
  check_size(where, batch, grid, dtype)
  depth = check_range(where, "depth", depth, minimum=0, strict=True)
  radius = check_range(where, "radius", radius, minimum=0, strict=True)
  diffuseness = check_range(where, "diffuseness", diffuseness, minimum=0,
                            strict=True)
  centre_fraction = check_scalar(where, "centre_fraction", centre_fraction,
                                 minimum=0, strict=False)

  d = grid.ndim
  u = jax.random.uniform(key, batch + (2 + 2 * d,), dtype)
  amplitude = over_grid(uniform_in(u[..., 0], depth), grid)
  a = over_grid(uniform_in(u[..., 1], diffuseness), grid)
  semi = uniform_in(u[..., 2:2 + d], radius)
  centre = centres(u[..., 2 + d:], grid, centre_fraction)
  rho_sq = jnp.zeros((), dtype)
  for ax, x in enumerate(axis_coordinates(grid, dtype)):
    diff = (x - over_grid(centre[..., ax], grid)) / over_grid(semi[..., ax],
                                                              grid)
    rho_sq = rho_sq + diff**2
  mean_radius = over_grid(jnp.exp(jnp.mean(jnp.log(semi), axis=-1)), grid)
  exponent = (jnp.sqrt(rho_sq) - 1) * mean_radius / a
  # The logistic sigmoid saturates cleanly: no overflow far outside.
  return -amplitude * jax.nn.sigmoid(-exponent)
