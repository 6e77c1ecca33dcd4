"""Tests for pgmoe_jax.potentials.

Assumes the conftest enables float64 (jax_enable_x64). Most calls go through
one cached ``jax.jit`` per family and keyword set: on a 2-core CPU a jit
compile costs 0.05-0.5 s, while the first eager call of a new shape compiles
every primitive separately and costs 2-4x more.
"""

import functools
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import potentials
from pgmoe_jax.grid import Grid

NAMES = ("box_well", "double_well", "gaussian_wells", "harmonic",
         "random_smooth", "woods_saxon")

GRID_1D = Grid(64, 20.0)
GRID_2D = Grid((12, 16), (20.0, 24.0))
GRID_3D = Grid((6, 7, 8), 10.0)


def key(seed=0):
  return jax.random.key(seed)


@functools.cache
def _jitted(family, static):
  return jax.jit(potentials.FAMILIES[family],
                 static_argnames=("batch_shape",) + static)


def np_v(family, grid, batch_shape=(), seed=0, **kwargs):
  """Samples through jit; ranges and dtype are static arguments."""
  fn = _jitted(family, tuple(sorted(kwargs)))
  return np.asarray(fn(key(seed), grid, batch_shape=batch_shape, **kwargs))


def test_x64_is_on():
  # The exactness tests below compare to 1e-12 and need float64.
  assert jnp.zeros(()).dtype == jnp.float64


# ---------------------------------------------------------------------------
# Shapes, dtypes, determinism.


# Fast tier: every family in 1-D and 2-D, gaussian_wells in 3-D; the other
# families' 3-D draws in the slow tier.
@pytest.mark.parametrize("name, grid, batch_shape, expected", [
    pytest.param(name, grid, batch_shape, expected,
                 marks=pytest.mark.slow if grid.ndim == 3
                 and name != "gaussian_wells" else ())
    for grid, batch_shape, expected in [(GRID_1D, (), ()), (GRID_2D, 5, (5,)),
                                        (GRID_3D, (2, 3), (2, 3))]
    for name in NAMES])
def test_shapes(name, grid, batch_shape, expected):
  v = np_v(name, grid, batch_shape)
  assert v.shape == expected + grid.shape
  assert v.dtype == np.float64  # The default float under x64.
  assert np.all(np.isfinite(v))


@pytest.mark.parametrize("name", NAMES)
def test_dtype_argument(name):
  v32 = np_v(name, GRID_1D, dtype=jnp.float32)
  v64 = np_v(name, GRID_1D, dtype=jnp.float64)
  assert v32.dtype == np.float32 and v64.dtype == np.float64
  # float32 draws differ from float64 ones (the PRNG bits are consumed per
  # dtype), so only sanity is compared.
  for v in (v32, v64):
    assert np.all(np.isfinite(v)) and np.abs(v).max() > 0.1
  with pytest.raises(ValueError, match="dtype"):
    potentials.FAMILIES[name](key(), GRID_1D, 2, dtype=jnp.int32)


@pytest.mark.parametrize("name", NAMES)
def test_determinism_and_jit(name):
  fn = potentials.FAMILIES[name]
  a = np.asarray(fn(key(7), GRID_2D, (5,)))
  b = np.asarray(fn(key(7), GRID_2D, (5,)))
  c = np.asarray(fn(key(8), GRID_2D, (5,)))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # Batch members are independent draws, not copies.
  assert not np.allclose(a[0], a[1])
  # Same static arguments as test_shapes, so this reuses its compilation.
  d = np_v(name, GRID_2D, (5,), seed=7)
  np.testing.assert_allclose(d, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())


def test_raw_uint32_key():
  a = np.asarray(potentials.harmonic(jax.random.PRNGKey(3), GRID_1D, 2))
  b = np.asarray(potentials.harmonic(jax.random.PRNGKey(3), GRID_1D, 2))
  assert a.shape == (2,) + GRID_1D.shape
  np.testing.assert_array_equal(a, b)


def test_traced_range_under_jit_gives_clear_error():
  jitted = jax.jit(potentials.harmonic)
  with pytest.raises(ValueError, match="static"):
    jitted(key(), GRID_1D, omega=(1.0, 2.0))


# ---------------------------------------------------------------------------
# gaussian_wells.


def test_gaussian_single_well_exact_formula():
  x, y = GRID_2D.mesh()
  v = np_v("gaussian_wells", GRID_2D, num_wells=(1, 1), depth=(3.0, 3.0),
           width=(1.5, 1.5), centre_fraction=0.0)
  np.testing.assert_allclose(v, -3.0 * np.exp(-(x**2 + y**2) / (2 * 1.5**2)),
                             rtol=0, atol=1e-12)


def _nearest_point_factor(grid, width_low):
  # A grid point lies within half a spacing per axis of any centre, so the
  # sampled minimum is at least this fraction of the well depth.
  dist2 = sum((h / 2)**2 for h in grid.spacing)
  return math.exp(-dist2 / (2 * width_low**2))


def test_gaussian_single_well_depth_and_centre():
  v = np_v("gaussian_wells", GRID_2D, 200, seed=3, num_wells=(1, 1))
  mins = v.reshape(200, -1).min(axis=1)
  factor = _nearest_point_factor(GRID_2D, 0.7)
  assert np.all(mins >= -10.0 - 1e-12)
  assert np.all(mins <= -1.0 * factor)
  # Depths fill the range [1, 10] rather than sitting at one value.
  assert mins.min() < -9.0 and mins.max() > -2.5
  x, y = GRID_2D.mesh()
  idx = v.reshape(200, -1).argmin(axis=1)
  for coord, length, h in zip((x.ravel()[idx], y.ravel()[idx]),
                              GRID_2D.length, GRID_2D.spacing):
    assert np.all(np.abs(coord) <= length / 4 + h)
    # ...and spread over the centre box, not stuck at the origin.
    assert coord.max() - coord.min() > length / 4


def test_gaussian_depth_range_respected():
  v = np_v("gaussian_wells", GRID_2D, 50, seed=4, num_wells=(1, 1),
           depth=(10.0, 20.0))
  mins = v.reshape(50, -1).min(axis=1)
  assert np.all(mins >= -20.0 - 1e-12)
  assert np.all(mins <= -10.0 * _nearest_point_factor(GRID_2D, 0.7))


def test_gaussian_nonpositive():
  v = np_v("gaussian_wells", GRID_2D, 50, seed=5)
  assert v.max() <= 0.0
  assert v.min() < -1.0


@pytest.mark.parametrize("num_wells", [(1, 4), (2, 3), (4, 4)])
def test_gaussian_number_of_wells(num_wells):
  # Unit-depth, unit-width wells at least 5 widths from the walls each
  # integrate to sqrt(2 pi) in 1-D, so the integral counts the wells.
  v = np_v("gaussian_wells", GRID_1D, 100, seed=6, num_wells=num_wells,
           depth=(1.0, 1.0), width=(1.0, 1.0))
  counts = -v.sum(axis=1) * GRID_1D.spacing[0] / math.sqrt(2 * math.pi)
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)
  assert set(np.round(counts).astype(int)) == set(
      range(num_wells[0], num_wells[1] + 1))


# ---------------------------------------------------------------------------
# harmonic.


def test_harmonic_exact_1d():
  (x,) = GRID_1D.coordinates()
  v = np_v("harmonic", GRID_1D, 3, omega=(1.0, 1.0), centre_fraction=0.0)
  np.testing.assert_allclose(v, np.broadcast_to(0.5 * x**2, v.shape),
                             rtol=0, atol=1e-12)


def test_harmonic_nonnegative_and_centred():
  v = np_v("harmonic", GRID_2D, 100, seed=9)
  assert v.min() >= 0.0
  x, y = GRID_2D.mesh()
  idx = v.reshape(100, -1).argmin(axis=1)
  for coord, length, h in zip((x.ravel()[idx], y.ravel()[idx]),
                              GRID_2D.length, GRID_2D.spacing):
    assert np.all(np.abs(coord) <= 0.1 * length + h)
    assert coord.max() > coord.min()


def test_harmonic_independent_omega_per_axis():
  v = np_v("harmonic", GRID_2D, 50, seed=10, omega=(0.5, 2.0))
  hx, hy = GRID_2D.spacing
  # A quadratic's second difference is exactly omega^2 h^2 everywhere.
  w2x = (v[:, 2:, :] - 2 * v[:, 1:-1, :] + v[:, :-2, :]) / hx**2
  w2y = (v[:, :, 2:] - 2 * v[:, :, 1:-1] + v[:, :, :-2]) / hy**2
  np.testing.assert_allclose(w2x, w2x[:, :1, :1] + 0 * w2x, atol=1e-9)
  np.testing.assert_allclose(w2y, w2y[:, :1, :1] + 0 * w2y, atol=1e-9)
  wx, wy = np.sqrt(w2x[:, 0, 0]), np.sqrt(w2y[:, 0, 0])
  for w in (wx, wy):
    assert np.all((w >= 0.5 - 1e-6) & (w <= 2.0 + 1e-6))
  assert np.all(np.abs(wx - wy) > 1e-6)
  # Separable: no mixed x-y term.
  mixed = v[:, 1:, 1:] - v[:, 1:, :-1] - v[:, :-1, 1:] + v[:, :-1, :-1]
  np.testing.assert_allclose(mixed, 0.0, atol=1e-9)


# ---------------------------------------------------------------------------
# double_well.


def test_double_well_symmetric_1d_two_minima():
  (x,) = GRID_1D.coordinates()
  h = GRID_1D.spacing[0]
  v = np_v("double_well", GRID_1D, 20, seed=11, asymmetry=(0.0, 0.0),
           separation=(3.0, 3.0), depth=(2.0, 5.0))
  np.testing.assert_allclose(v, v[:, ::-1], rtol=0, atol=1e-10)
  assert v.max() <= 50.0
  np.testing.assert_allclose(v.max(axis=1), 50.0)  # The cap is hit.
  left = x[np.argmin(np.where(x < 0, v, np.inf), axis=1)]
  right = x[np.argmin(np.where(x > 0, v, np.inf), axis=1)]
  np.testing.assert_allclose(left, -1.5, atol=h)
  np.testing.assert_allclose(right, 1.5, atol=h)
  # The barrier between them is D in [2, 5].
  centre = v[:, np.abs(x) < h].max(axis=1)
  assert np.all((centre > 1.5) & (centre <= 5.0))


def test_double_well_formula_1d_and_cap():
  (x,) = GRID_1D.coordinates()
  d, b, eps = 2.0, 1.5, 0.2
  v = np_v("double_well", GRID_1D, 20, seed=12, depth=(d, d),
           separation=(2 * b, 2 * b), asymmetry=(eps, eps), cap=20.0)

  def formula(s):
    return np.minimum(d * ((s / b)**2 - 1)**2 + eps * d * s / b, 20.0)

  plus = np.all(np.isclose(v, formula(x), rtol=0, atol=1e-12), axis=1)
  minus = np.all(np.isclose(v, formula(-x), rtol=0, atol=1e-12), axis=1)
  assert np.all(plus | minus)
  assert plus.any() and minus.any()  # Both directions u = +-1 occur.
  assert v.max() == 20.0


def test_double_well_2d_point_symmetry_and_minima():
  grid = Grid((33, 33), 16.0)
  x, y = grid.mesh()
  v = np_v("double_well", grid, 30, seed=13, asymmetry=(0.0, 0.0),
           separation=(4.0, 4.0), omega=(1.5, 1.5))
  np.testing.assert_allclose(v, v[:, ::-1, ::-1], rtol=0, atol=1e-10)
  assert v.min() >= -1e-12 and v.max() <= 50.0
  idx = v.reshape(30, -1).argmin(axis=1)
  r = np.hypot(x.ravel()[idx], y.ravel()[idx])
  np.testing.assert_allclose(r, 2.0, atol=grid.spacing[0])
  # The direction u is random: minima sit at many angles (mod pi).
  angle = np.mod(np.arctan2(y.ravel()[idx], x.ravel()[idx]), np.pi)
  assert angle.max() - angle.min() > 1.0


# ---------------------------------------------------------------------------
# box_well.


def test_box_well_values():
  v = np_v("box_well", GRID_2D, 40, seed=14)
  for sample in v:
    values = np.unique(sample)
    assert len(values) == 2 and values[1] == 0.0
    assert -10.0 <= values[0] <= -1.0
    # The inside is a rectangle: the outer product of its projections.
    inside = sample < 0
    np.testing.assert_array_equal(
        inside, np.outer(inside.any(axis=1), inside.any(axis=0)))
  depths = v.reshape(40, -1).min(axis=1)
  assert depths.max() - depths.min() > 3.0
  # Full widths 2 w_a in [2, 8] bohr, measured to within a spacing, and drawn
  # independently per axis.
  (hx, hy), inside = GRID_2D.spacing, v < 0
  width_x = inside.any(axis=2).sum(axis=1) * hx
  width_y = inside.any(axis=1).sum(axis=1) * hy
  for w, h in ((width_x, hx), (width_y, hy)):
    assert np.all((w >= 2.0 - h) & (w <= 8.0 + h))
  assert np.abs(width_x - width_y).max() > 3.0


def test_box_well_exact_formula():
  x, y = GRID_2D.mesh()
  v = np_v("box_well", GRID_2D, depth=(5.0, 5.0), half_width=(2.0, 2.0),
           centre_fraction=0.0)
  expected = np.where((np.abs(x) <= 2.0) & (np.abs(y) <= 2.0), -5.0, 0.0)
  np.testing.assert_array_equal(v, expected)


# ---------------------------------------------------------------------------
# random_smooth.


def test_random_smooth_range_exact():
  v = np_v("random_smooth", GRID_2D, 30, seed=15, depth=(2.0, 8.0))
  flat = v.reshape(30, -1)
  np.testing.assert_allclose(flat.max(axis=1), 0.0, rtol=0, atol=1e-12)
  depths = -flat.min(axis=1)
  assert np.all((depths >= 2.0) & (depths <= 8.0))
  assert depths.max() - depths.min() > 1.0


def test_random_smooth_smoother_with_longer_correlation():
  def mean_sq_diff(length):
    v = np_v("random_smooth", GRID_1D, 50, seed=16, depth=(1.0, 1.0),
             correlation_length=(length, length))
    return np.mean(np.diff(v, axis=-1)**2)
  assert mean_sq_diff(3.0) < 0.3 * mean_sq_diff(1.0)


def test_random_smooth_correlation_length():
  # h = 0.5 bohr; with l = 2 the covariance at lags l and 2 l is
  # exp(-1/2) and exp(-2) of the variance.
  # The box is 500 l long, so removing each sample's mean biases the
  # estimate by only ~ l sqrt(2 pi) / L = 0.005.
  grid = Grid(2047, 1024.0)
  v = np_v("random_smooth", grid, 64, seed=17,
           correlation_length=(2.0, 2.0))
  f = v - v.mean(axis=1, keepdims=True)
  # Per-sample ratios: the affine rescaling differs between samples.
  c0 = np.mean(f * f, axis=1)
  for lag, expected in ((4, math.exp(-0.5)), (8, math.exp(-2.0))):
    ratio = np.mean(f[:, lag:] * f[:, :-lag], axis=1) / c0
    assert abs(ratio.mean() - expected) < 0.02


def test_random_smooth_walls_uncorrelated_unless_periodic():
  def wall_correlation(boundary):
    grid = Grid(32, 20.0, boundary)
    v = np_v("random_smooth", grid, 1000, seed=18,
             correlation_length=(3.0, 3.0))
    return np.corrcoef(v[:, 0], v[:, -1])[0, 1]
  assert wall_correlation("dirichlet") < 0.4
  assert wall_correlation("periodic") > 0.8


def test_random_smooth_window_fades_the_walls():
  grid = Grid((32, 32), 20.0)
  x, y = grid.mesh()
  r = np.hypot(x, y)
  plain = np_v("random_smooth", grid, 40, seed=19, depth=(2.0, 8.0))
  v = np_v("random_smooth", grid, 40, seed=19, depth=(2.0, 8.0), window=3.0)
  flat = v.reshape(40, -1)
  # Still [-A, 0], with the same depths A as without the window.
  np.testing.assert_allclose(flat.min(axis=1),
                             plain.reshape(40, -1).min(axis=1), rtol=1e-14)
  np.testing.assert_array_equal(flat.max(axis=1), 0.0)
  # g = plain / A times the window, rescaled: V / plain is the window up to
  # one factor per sample, >= 1 (the rescaling deepens it back to A).
  inside = plain < -1e-3
  ratio = np.where(inside, v / np.where(inside, plain, 1), np.nan)
  window = np.exp(-r**2 / (2 * 3.0**2))
  factor = ratio / window
  spread = np.nanmax(factor, axis=(1, 2)) / np.nanmin(factor, axis=(1, 2))
  np.testing.assert_allclose(spread, 1.0, rtol=1e-9)
  # The walls: within 1 bohr of them the valleys are at most
  # exp(-9^2 / 18) ~ 1% of the field (times the rescaling).
  near = (np.abs(x) > 9) | (np.abs(y) > 9)
  assert np.abs(v[:, near]).max() < 0.2 * np.abs(plain[:, near]).max()
  with pytest.raises(ValueError, match="window"):
    potentials.random_smooth(key(), grid, window=0.0)


# ---------------------------------------------------------------------------
# woods_saxon.


def test_woods_saxon_round_formula():
  x, y = GRID_2D.mesh()
  v = np_v("woods_saxon", GRID_2D, depth=(5.0, 5.0), radius=(3.0, 3.0),
           diffuseness=(0.5, 0.5), centre_fraction=0.0)
  r = np.hypot(x, y)
  np.testing.assert_allclose(v, -5.0 / (1 + np.exp((r - 3.0) / 0.5)),
                             rtol=1e-12, atol=1e-14)


def test_woods_saxon_flat_bottom_ellipses():
  grid = Grid((40, 40), 20.0)
  x, y = grid.mesh()
  v = np_v("woods_saxon", grid, 30, seed=20, depth=(2.0, 9.0),
           radius=(2.0, 5.0), diffuseness=(0.3, 0.3))
  depths = -v.reshape(30, -1).min(axis=1)
  assert np.all((depths <= 9.0) & (depths > 2.0 * 0.99))
  assert depths.max() - depths.min() > 3.0
  assert v.max() < 0.0
  for sample, depth in zip(v, depths):
    # Flat bottom: a sizeable region within 1% of the depth; the surface
    # (between 10% and 90%) is a thin shell around it.
    bottom = sample < -0.99 * depth
    surface = (sample < -0.1 * depth) & (sample > -0.9 * depth)
    assert bottom.sum() >= 4
    # Independent semi-axes: the extents of the bottom along x and y differ
    # in general, and the outline is elliptical, not rectangular.
    assert surface.sum() < 2 * bottom.sum() + 60
  extent_x = (v < -0.5 * depths[:, None, None]).any(axis=2).sum(axis=1)
  extent_y = (v < -0.5 * depths[:, None, None]).any(axis=1).sum(axis=1)
  assert np.abs(extent_x - extent_y).max() >= 4


# ---------------------------------------------------------------------------
# Defaults unchanged: stored datasets' bytes depend on them.

# SHA-256 (first 16 hex digits) of make_sampler(name, GRID_2D, float64), the
# path of stored datasets, on fold_in(key(3), i), i < 4, computed before
# random_smooth took its window option (2026-12-02, JAX 0.10 on CPU).
# Recompute only for a deliberate change of a family's draws (it changes
# every stored dataset), or after a JAX/XLA upgrade that changes rounding
# (say so in the commit).
DEFAULT_CHECKSUMS = {
    "box_well": "5ae9d1fc6e61612f",
    "double_well": "1423af194f7c39e9",
    "gaussian_wells": "48c0967343b7523a",
    "harmonic": "3b162326e95aadf6",
    "random_smooth": "af2d123d6d8a945d",
}


@pytest.mark.parametrize("name", sorted(DEFAULT_CHECKSUMS))
def test_default_draws_are_bitwise_unchanged(name):
  keys = jax.vmap(lambda i: jax.random.fold_in(key(3), i))(
      jnp.arange(4, dtype=jnp.uint32))
  v = np.asarray(potentials.make_sampler(name, GRID_2D, "float64")(keys))
  digest = hashlib.sha256(v.tobytes()).hexdigest()[:16]
  assert digest == DEFAULT_CHECKSUMS[name]


# ---------------------------------------------------------------------------
# Registry, sample() and argument checking.


def test_families_registry():
  assert set(potentials.FAMILIES) == set(NAMES)
  for name in NAMES:
    assert potentials.get_family(name) is potentials.FAMILIES[name]
  with pytest.raises(TypeError):
    potentials.FAMILIES["new"] = potentials.harmonic  # Read-only.


def test_get_family_unknown():
  with pytest.raises(ValueError) as info:
    potentials.get_family("foo")
  assert str(info.value) == (
      "Unknown potential family 'foo'; known families: box_well, "
      "double_well, gaussian_wells, harmonic, random_smooth, woods_saxon, "
      "the mixture of them 'mixture', or a user family given as "
      "'package.module:function'.")


def test_sample_matches_family_and_rejects_bad_keyword():
  np.testing.assert_array_equal(
      potentials.sample("harmonic", key(), GRID_1D, 2, omega=(1.0, 1.5)),
      potentials.harmonic(key(), GRID_1D, 2, omega=(1.0, 1.5)))
  with pytest.raises((TypeError, ValueError)) as info:
    potentials.sample("gaussian_wells", key(), GRID_1D, depht=(1.0, 2.0))
  message = str(info.value)
  assert "depht" in message
  for valid in ("num_wells", "depth", "width", "centre_fraction", "dtype"):
    assert valid in message
  with pytest.raises(ValueError, match="known families"):
    potentials.sample("nope", key(), GRID_1D)


@pytest.mark.parametrize("name, kwargs, bad", [
    ("gaussian_wells", {"depth": (10.0, 1.0)}, "depth"),
    ("gaussian_wells", {"width": (-1.0, 2.0)}, "width"),
    ("gaussian_wells", {"num_wells": (0, 2)}, "num_wells"),
    ("gaussian_wells", {"num_wells": (1.5, 2)}, "num_wells"),
    ("gaussian_wells", {"width": (1.0, 2.0, 3.0)}, "width"),
    ("gaussian_wells", {"centre_fraction": -0.1}, "centre_fraction"),
    ("harmonic", {"omega": (2.0, 1.0)}, "omega"),
    ("harmonic", {"omega": (-1.0, 1.0)}, "omega"),
    ("double_well", {"separation": (0.0, 1.0)}, "separation"),
    ("double_well", {"asymmetry": (0.3, -0.3)}, "asymmetry"),
    ("double_well", {"cap": 0.0}, "cap"),
    ("box_well", {"half_width": (-1.0, 1.0)}, "half_width"),
    ("box_well", {"depth": (1.0, math.nan)}, "depth"),
    ("random_smooth", {"correlation_length": (0.0, 1.0)},
     "correlation_length"),
    ("random_smooth", {"depth": 5.0}, "depth"),
    ("random_smooth", {"window": -1.0}, "window"),
    ("woods_saxon", {"radius": (0.0, 1.0)}, "radius"),
    ("woods_saxon", {"diffuseness": (2.0, 1.0)}, "diffuseness"),
])
def test_bad_ranges_raise(name, kwargs, bad):
  with pytest.raises(ValueError) as info:
    potentials.FAMILIES[name](key(), GRID_1D, **kwargs)
  assert bad in str(info.value)
  assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_bad_grid_and_batch_shape(name):
  fn = potentials.FAMILIES[name]
  with pytest.raises(TypeError, match="Grid"):
    fn(key(), (32,))
  with pytest.raises(ValueError, match="batch_shape"):
    fn(key(), GRID_1D, (-1,))
  with pytest.raises(TypeError, match="batch_shape"):
    fn(key(), GRID_1D, 2.5)
