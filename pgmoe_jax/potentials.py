r"""Potential families: pure, jittable samplers of random potentials V(r).

Contract (every family in :data:`FAMILIES` follows it)::

    V = family(key, grid, batch_shape=(), *, <ranges...>, dtype=None)

* ``key`` is a JAX PRNG key (raw ``uint32[2]`` or a typed key); the result is a
  deterministic function of ``key``, ``grid``, ``batch_shape``, the ranges and
  ``dtype``: the same inputs give bitwise the same array.
* ``V`` has shape ``(*batch_shape, *grid.shape)``, values in Hartree, sampled
  on the grid points ``grid.coordinates()`` (bohr). ``batch_shape`` is a tuple
  of non-negative integers; an integer ``k`` means ``(k,)``, as in
  :mod:`jax.random`.
* ``dtype`` is a floating dtype; ``None`` means JAX's default float (float64
  under ``jax_enable_x64``, else float32). All arithmetic is done in ``dtype``
  (``random_smooth`` does its FFT in at least float32). The draws depend on
  ``dtype`` too: the same key gives different samples in float32 and float64.
* Ranges are ``(low, high)`` pairs of Python numbers, sampled uniformly per
  batch member unless a family says otherwise; they are validated eagerly and
  raise ``ValueError`` naming the argument and the bad value. Ranges fix array
  shapes (e.g. the largest number of wells), so they are static: under
  :func:`jax.jit` close over them or list them in ``static_argnames`` together
  with ``batch_shape``; ``grid`` is a static pytree and needs no marking::

      jax.jit(gaussian_wells, static_argnames="batch_shape")(
          key, grid, batch_shape=(8,))

* The functions are pure: no global state, no I/O, and no Python control flow
  that depends on sampled values, so they trace once per static signature.

:func:`get_family` looks a family up by name and :func:`sample` does the
look-up and the call in one step, rejecting keywords the family does not take.
"""

from __future__ import annotations

import inspect
import math
import operator
import types
from typing import Any, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
import numpy as np

from pgmoe_jax.grid import Grid

__all__ = [
    "FAMILIES",
    "PotentialFamily",
    "box_well",
    "double_well",
    "gaussian_wells",
    "get_family",
    "harmonic",
    "random_smooth",
    "sample",
]

# Dirichlet fields are padded by this many correlation lengths so the circular
# FFT convolution does not correlate opposite walls: the field covariance at a
# wrapped distance of 4 l is exp(-8) ~ 3e-4 of its variance.
_PAD_CORRELATION_LENGTHS = 4.0


class PotentialFamily(Protocol):
  """The call contract shared by every potential family.

  Families also take their own keyword-only ``(low, high)`` ranges (see each
  function); those all have defaults, so any family can be called as below.
  """

  def __call__(self, key: jax.Array, grid: Grid,
               batch_shape: int | Sequence[int] = (), *,
               dtype: DTypeLike | None = None) -> jax.Array:
    """Samples potentials.

    Args:
      key: a JAX PRNG key.
      grid: the grid the potentials are sampled on.
      batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
      dtype: floating dtype of the result; ``None`` for JAX's default float.

    Returns:
      V of shape ``(*batch_shape, *grid.shape)`` in Hartree.
    """
    ...


# --------------------------------------------------------------------------
# Argument checking (eager, in Python, before anything is traced).


def _check_grid(where: str, grid: Any) -> None:
  if not isinstance(grid, Grid):
    raise TypeError(f"{where}: grid must be a pgmoe_jax.grid.Grid, got "
                    f"{type(grid).__name__} {grid!r}.")


def _batch_shape(where: str, batch_shape: Any) -> tuple[int, ...]:
  try:
    if isinstance(batch_shape, Sequence) and not isinstance(batch_shape, str):
      shape = tuple(operator.index(k) for k in batch_shape)
    else:
      shape = (operator.index(batch_shape),)
  except TypeError:
    raise TypeError(
        f"{where}: batch_shape must be an int or a tuple of ints, got "
        f"{batch_shape!r}.") from None
  if any(k < 0 for k in shape):
    raise ValueError(
        f"{where}: batch_shape={batch_shape!r} has a negative size.")
  return shape


def _dtype(where: str, dtype: DTypeLike | None) -> np.dtype:
  if dtype is None:
    dtype = jnp.float64  # Canonicalised below to float32 without x64.
  dtype = jax.dtypes.canonicalize_dtype(jnp.dtype(dtype))
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{where}: dtype must be a floating dtype, got {dtype!r}.")
  return dtype


def _number(where: str, name: str, value: Any, item: Any) -> float:
  # Tracers land here when a range is not marked static under jit; their
  # float() fails with a ConcretizationTypeError, itself a TypeError.
  if isinstance(item, (bool, np.bool_, str, bytes)):
    raise ValueError(f"{where}: {name}={value!r} must hold numbers, got "
                     f"{item!r}.")
  try:
    return float(item)
  except TypeError:
    raise ValueError(
        f"{where}: {name}={value!r} must hold Python numbers (ranges are "
        "static: under jax.jit close over them or mark them static).") from None


def _range(where: str, name: str, value: Any, *, minimum: float | None = None,
           strict: bool = False,
           integer: bool = False) -> tuple[float, float]:
  """Validates a ``(low, high)`` range and returns it as floats."""
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
      or len(value) != 2):
    raise ValueError(
        f"{where}: {name}={value!r} must be a (low, high) pair of numbers.")
  low, high = (_number(where, name, value, v) for v in value)
  if not (math.isfinite(low) and math.isfinite(high)):
    raise ValueError(f"{where}: {name}={value!r} must be finite.")
  if integer and not (low.is_integer() and high.is_integer()):
    raise ValueError(f"{where}: {name}={value!r} must hold integers.")
  if low > high:
    raise ValueError(
        f"{where}: {name}={value!r} has low {low:g} > high {high:g}.")
  if minimum is not None and (low <= minimum if strict else low < minimum):
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    raise ValueError(
        f"{where}: {name}={value!r} must be {bound} (got low {low:g}).")
  return low, high


def _scalar(where: str, name: str, value: Any, *, minimum: float,
            strict: bool, allow_inf: bool = False) -> float:
  """Validates a scalar keyword that must be at least ``minimum``."""
  if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
    raise ValueError(f"{where}: {name}={value!r} must be a single number.")
  x = _number(where, name, value, value)
  if math.isnan(x) or (math.isinf(x) and not allow_inf):
    raise ValueError(f"{where}: {name}={value!r} must be finite.")
  if x <= minimum if strict else x < minimum:
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    raise ValueError(f"{where}: {name}={value!r} must be {bound}.")
  return x


# --------------------------------------------------------------------------
# Shared helpers.


def _coordinates(grid: Grid, dtype: np.dtype) -> list[jax.Array]:
  """Per-axis coordinates, shaped to broadcast against ``grid.shape``.

  Axis ``a`` comes back with shape ``(1, ..., n_a, ..., 1)`` (``d`` axes) so
  that it broadcasts against ``(*batch_shape, *grid.shape)``.
  """
  d = grid.ndim
  out = []
  for a, x in enumerate(grid.coordinates()):
    shape = [1] * d
    shape[a] = x.size
    out.append(jnp.asarray(x.reshape(shape), dtype=dtype))
  return out


def _over_grid(p: jax.Array, grid: Grid) -> jax.Array:
  """Appends ``grid.ndim`` unit axes to a per-sample parameter."""
  return p.reshape(p.shape + (1,) * grid.ndim)


def _scale(u: jax.Array, bounds: Any) -> jax.Array:
  """Maps uniform [0, 1) draws onto ``[low, high]`` (arrays broadcast).

  ``low + (high - low) * u`` is exactly ``low`` for a degenerate range, so
  such ranges give exact parameters; the clip keeps rounding from stepping
  past ``high``.
  """
  low, high = (np.asarray(b, dtype=u.dtype) for b in bounds)
  return jnp.clip(low + (high - low) * u, low, high)


def _centres(u: jax.Array, grid: Grid, centre_fraction: float) -> jax.Array:
  """Centres uniform in ``[-f L_a, f L_a]`` from draws of shape (..., d)."""
  half = np.asarray(grid.length) * centre_fraction
  return _scale(u, (-half, half))


def _unit_vectors(u: jax.Array, d: int) -> jax.Array:
  """Unit vectors uniform on the sphere S^{d-1} from uniform [0, 1) draws.

  Args:
    u: draws of shape ``(..., max(d - 1, 1))``.
    d: the dimension, 1, 2 or 3.

  Returns:
    Unit vectors of shape ``(..., d)``: in 1-D exactly +-1; in 2-D
    ``(cos phi, sin phi)``; in 3-D Archimedes' construction, ``z`` uniform in
    [-1, 1] and ``phi`` uniform in [0, 2 pi).
  """
  if d == 1:
    return jnp.where(u[..., :1] < 0.5, -1.0, 1.0).astype(u.dtype)
  phi = 2 * np.pi * u[..., 0]
  if d == 2:
    return jnp.stack([jnp.cos(phi), jnp.sin(phi)], axis=-1)
  z = 2 * u[..., 1] - 1
  rho = jnp.sqrt(jnp.maximum(1 - z**2, 0))
  return jnp.stack([rho * jnp.cos(phi), rho * jnp.sin(phi), z], axis=-1)


def _fast_len(n: int) -> int:
  """The smallest 5-smooth integer >= n (cheap FFT length)."""
  while True:
    m = n
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    if m == 1:
      return n
    n += 1


# --------------------------------------------------------------------------
# Families.


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
  _check_grid(where, grid)
  batch = _batch_shape(where, batch_shape)
  dtype = _dtype(where, dtype)
  m_low, m_high = _range(where, "num_wells", num_wells, minimum=1,
                         integer=True)
  depth = _range(where, "depth", depth, minimum=0, strict=True)
  width = _range(where, "width", width, minimum=0, strict=True)
  centre_fraction = _scalar(where, "centre_fraction", centre_fraction,
                            minimum=0, strict=False)
  max_wells = int(m_high)

  # One block of uniform draws per sample, sliced into the parameters: each
  # separate jax.random call adds a threefry kernel and ~0.1 s of compile.
  d = grid.ndim
  u = jax.random.uniform(key, batch + (1 + max_wells * (2 + d),), dtype)
  wells = u[..., 1:].reshape(batch + (max_wells, 2 + d))
  # floor(u * k) is uniform on {0..k-1}; the clip guards u * k rounding to k.
  choices = m_high - m_low + 1
  count = m_low + jnp.minimum(jnp.floor(u[..., 0] * choices), choices - 1)
  active = jnp.arange(max_wells) < count[..., None]
  amplitude = jnp.where(active, _scale(wells[..., 0], depth), 0)
  sigma = _scale(wells[..., 1], width)
  centre = _centres(wells[..., 2:], grid, centre_fraction)

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
  _check_grid(where, grid)
  batch = _batch_shape(where, batch_shape)
  dtype = _dtype(where, dtype)
  omega = _range(where, "omega", omega, minimum=0)
  centre_fraction = _scalar(where, "centre_fraction", centre_fraction,
                            minimum=0, strict=False)

  d = grid.ndim
  u = jax.random.uniform(key, batch + (2 * d,), dtype)
  w = _scale(u[..., :d], omega)
  centre = _centres(u[..., d:], grid, centre_fraction)
  potential = jnp.zeros(batch + grid.shape, dtype)
  for a, x in enumerate(_coordinates(grid, dtype)):
    wa = _over_grid(w[..., a], grid)
    ca = _over_grid(centre[..., a], grid)
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
  _check_grid(where, grid)
  batch = _batch_shape(where, batch_shape)
  dtype = _dtype(where, dtype)
  depth = _range(where, "depth", depth, minimum=0, strict=True)
  separation = _range(where, "separation", separation, minimum=0, strict=True)
  asymmetry = _range(where, "asymmetry", asymmetry)
  omega = _range(where, "omega", omega, minimum=0)
  cap = _scalar(where, "cap", cap, minimum=0, strict=True, allow_inf=True)

  d = grid.ndim
  # One uniform block (see gaussian_wells): four scalars, then d - 1 draws
  # for the direction (one in 1-D, for the sign).
  u = jax.random.uniform(key, batch + (4 + max(d - 1, 1),), dtype)
  barrier = _over_grid(_scale(u[..., 0], depth), grid)
  half_sep = _over_grid(_scale(u[..., 1], separation) / 2, grid)
  tilt = _over_grid(_scale(u[..., 2], asymmetry), grid)
  w = _over_grid(_scale(u[..., 3], omega), grid)
  direction = _unit_vectors(u[..., 4:], d)
  coords = _coordinates(grid, dtype)

  if d == 1:
    # u = +-1 exactly, so r - s u == 0: the transverse term is skipped.
    along = _over_grid(direction[..., 0], grid) * coords[0]
    transverse = 0.0
  else:
    ua = [_over_grid(direction[..., a], grid) for a in range(d)]
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
  _check_grid(where, grid)
  batch = _batch_shape(where, batch_shape)
  dtype = _dtype(where, dtype)
  depth = _range(where, "depth", depth, minimum=0, strict=True)
  half_width = _range(where, "half_width", half_width, minimum=0, strict=True)
  centre_fraction = _scalar(where, "centre_fraction", centre_fraction,
                            minimum=0, strict=False)

  d = grid.ndim
  u = jax.random.uniform(key, batch + (1 + 2 * d,), dtype)
  amplitude = _over_grid(_scale(u[..., 0], depth), grid)
  w = _scale(u[..., 1:1 + d], half_width)
  centre = _centres(u[..., 1 + d:], grid, centre_fraction)
  inside = jnp.ones(batch + grid.shape, bool)
  for a, x in enumerate(_coordinates(grid, dtype)):
    dist = jnp.abs(x - _over_grid(centre[..., a], grid))
    inside = inside & (dist <= _over_grid(w[..., a], grid))
  return jnp.where(inside, -amplitude, jnp.zeros((), dtype))


def random_smooth(key: jax.Array, grid: Grid,
                  batch_shape: int | Sequence[int] = (), *,
                  depth: tuple[float, float] = (1.0, 10.0),
                  correlation_length: tuple[float, float] = (1.0, 3.0),
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
  _check_grid(where, grid)
  batch = _batch_shape(where, batch_shape)
  dtype = _dtype(where, dtype)
  depth = _range(where, "depth", depth, minimum=0, strict=True)
  correlation_length = _range(where, "correlation_length", correlation_length,
                              minimum=0, strict=True)
  # jnp.fft has no half-precision kernels.
  work = jnp.promote_types(dtype, jnp.float32)

  if grid.boundary == "periodic":
    padded = grid.shape
  else:
    padded = tuple(
        _fast_len(n + math.ceil(_PAD_CORRELATION_LENGTHS
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
  length = _over_grid(_scale(u[..., 0], correlation_length), grid)
  spectrum = jnp.fft.rfftn(noise, axes=axes) * jnp.exp(-length**2 * k_sq / 4)
  field = jnp.fft.irfftn(spectrum, s=padded, axes=axes)
  field = field[(...,) + tuple(slice(0, n) for n in grid.shape)]

  f_max = jnp.max(field, axis=axes, keepdims=True)
  f_min = jnp.min(field, axis=axes, keepdims=True)
  # A constant field (measure zero) would divide 0 by 0; it maps to V = 0.
  span = jnp.where(f_max > f_min, f_max - f_min, 1)
  amplitude = _over_grid(_scale(u[..., 1], depth), grid)
  # Dividing before scaling makes the extremes exact: (min - max) / (max -
  # min) rounds to exactly -1 and (max - max) to 0.
  return (amplitude * ((field - f_max) / span)).astype(dtype)


# --------------------------------------------------------------------------
# Registry.

FAMILIES: Mapping[str, PotentialFamily] = types.MappingProxyType({
    "box_well": box_well,
    "double_well": double_well,
    "gaussian_wells": gaussian_wells,
    "harmonic": harmonic,
    "random_smooth": random_smooth,
})


def get_family(name: str) -> PotentialFamily:
  """Looks up a potential family by name.

  Args:
    name: a key of :data:`FAMILIES`, e.g. ``"gaussian_wells"``.

  Returns:
    The family function.

  Raises:
    ValueError: for an unknown name; the message lists the known names.
  """
  if not isinstance(name, str) or name not in FAMILIES:
    raise ValueError(
        f"Unknown potential family {name!r}; known families: "
        f"{', '.join(sorted(FAMILIES))}.")
  return FAMILIES[name]


def sample(name: str, key: jax.Array, grid: Grid,
           batch_shape: int | Sequence[int] = (), **ranges: Any) -> jax.Array:
  """Samples potentials from the family called ``name``.

  Args:
    name: a key of :data:`FAMILIES`.
    key: a JAX PRNG key.
    grid: the grid.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    **ranges: the family's keyword arguments (its ranges and ``dtype``).

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree.

  Raises:
    ValueError: for an unknown family name, or as the family raises.
    TypeError: for a keyword the family does not take (the message names it
      and lists the valid ones), or as the family raises.
  """
  family = get_family(name)
  valid = sorted(
      p.name for p in inspect.signature(family).parameters.values()
      if p.kind is inspect.Parameter.KEYWORD_ONLY)
  unknown = sorted(set(ranges) - set(valid))
  if unknown:
    raise TypeError(
        f"Potential family {name!r} got unknown keyword argument(s) "
        f"{', '.join(map(repr, unknown))}; valid keywords: "
        f"{', '.join(valid)}.")
  return family(key, grid, batch_shape, **ranges)
