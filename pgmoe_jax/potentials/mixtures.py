r"""The mixture of potential families: every kind of potential, one stream.

A sample of :func:`mixture` is drawn from a component family picked at
random with given weights, with probability ``sum_probability`` plus an
independent second component draw (a sum of two families: a well in a
trap, a double well with bumps...), and shifted by a random constant (the
zero of energy is arbitrary)::

    V = V_i + [s] V_j + c,   i, j ~ weights,  s ~ Bernoulli(p),
                             c ~ U(offset)

It follows the family contract of :mod:`pgmoe_jax.potentials` and is
looked up there as ``"mixture"``, so a dataset (``DatasetSpec``) or the
label-free stream (``data.family = "mixture"``) can draw from it.

Static shapes: every component with a positive weight is sampled for the
whole batch (twice when sums are on: one call with a leading axis of 2)
and each sample selects its own, so the cost is that of all components
together, whatever the weights. A component of weight 0 is not sampled.

Stratified (``stratified=True``, for training streams): each component
draws only its share of the batch. With ``p_i = w_i / sum w`` and a batch
of ``B`` samples, component ``i`` fills ``floor(B p_i)`` rows (its
stratum) and the ``R`` rows left over are picked at random as above; the
second terms of sums come from the same scheme, their rows shuffled. The
cost is about one draw per row instead of one per row and component, the
share of component ``i`` is ``(floor(B p_i) + R p_i) / B`` (within ``1 /
B`` of ``p_i``; exactly ``p_i`` when every ``B p_i`` is whole), and rows
come grouped by component (a loss that averages over the batch does not
care). A batch of one is the unstratified draw.

Keys: from ``key`` come ``k_pick, k_draw = split(key)``; component
``name`` draws ``family(component_key(k_draw, name), grid, (slots,
*batch_shape))`` with ``component_key(k, name) = fold_in(k, crc32(name))``
and ``slots`` 2 when ``sum_probability > 0`` else 1 (row 0 is the first
term, row 1 the second), and ``k_pick`` gives four uniforms per sample
(first choice, second choice, sum flag, offset). A component's draws thus
do not depend on which other components are present or on their weights.
Stratified, component ``name`` draws ``(slots, n_name + R)`` rows from the
same key (its stratum, then candidates for the ``R`` rows left over, which
take the uniforms of the last ``R`` samples), and the second terms are
permuted by ``permutation(fold_in(k_pick, 1), B)``.

:data:`UNIVERSAL` are the broad ranges of the universal model (2-D, 20 bohr
box, 32x32 and 64x64). Checked per component with float64 LOBPCG (50
samples at 32x32, 20 at 64x64): every solve converged (at most 45
iterations); E0 within -19.5..+2.7 Ha (sums reach about -34 Ha, offsets
add +-10 Ha); the ground state's probability within 1 bohr of the walls
below 5e-4 for every sample; nearly symmetric double wells give gaps E1 -
E0 down to ~1e-3 Ha (40% below 1e-2 Ha), the others stay above 1e-2 Ha.
Widths stay >= 0.6 bohr and oscillator lengths >= ~0.4 bohr: E0 on h =
0.625 bohr (31x31) differs from h = 0.3125 bohr by 20-60 mHa (median per
component), less than for the default gaussian_wells (72 mHa) and
double_well (102 mHa) datasets. Harmonic traps reach ~400 Ha at the walls
(as the default harmonic family does).
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
import numpy as np

from pgmoe_jax.grid import Grid
from pgmoe_jax.potentials._args import FrozenMapping
from pgmoe_jax.potentials._args import as_batch_shape
from pgmoe_jax.potentials._args import as_dtype
from pgmoe_jax.potentials._args import check_grid
from pgmoe_jax.potentials._args import check_range
from pgmoe_jax.potentials._args import check_size
from pgmoe_jax.potentials._args import freeze
from pgmoe_jax.potentials._args import number
from pgmoe_jax.potentials._sampling import over_grid
from pgmoe_jax.potentials._sampling import uniform_in

# The keys of a component: its relative weight and, optionally, its family
# (default: the component's name); every other key is a keyword range of
# the family.
WEIGHT = "weight"
FAMILY = "family"

# The universal mixture's components: name -> weight (relative), family
# (when it differs from the name) and the family's ranges (Hartree, bohr).
# Every family of FAMILIES is a component.
UNIVERSAL: Mapping[str, Mapping[str, Any]] = FrozenMapping({
    # One to eight Gaussian wells, shallow to deep, narrow to wide; where
    # they overlap V reaches about -25 Ha.
    "gaussian_wells": {
        WEIGHT: 1.0, "num_wells": (1, 8), "depth": (0.5, 10.0),
        "width": (0.6, 3.0), "centre_fraction": 0.3},
    # Anisotropic traps from loose (length 1.8 bohr) to tight (0.7 bohr).
    "harmonic": {
        WEIGHT: 1.0, "omega": (0.3, 2.0), "centre_fraction": 0.1},
    # Tilted double wells, minima 1.5 to 4 bohr from the centre (closer
    # and deeper ones are too stiff for 32x32: oscillator lengths < 0.4).
    "double_well": {
        WEIGHT: 1.0, "depth": (0.5, 8.0), "separation": (3.0, 8.0),
        "asymmetry": (-0.5, 0.5), "omega": (0.5, 2.0), "cap": 30.0},
    # Nearly symmetric double wells: tunnel-split, near-degenerate doublets
    # (E1 - E0 from ~1e-4 Ha up), whose ground state spreads over both wells
    # or localises in one depending on the tilt (|epsilon D| <= 0.016 Ha).
    "double_well_symmetric": {
        WEIGHT: 1.0, FAMILY: "double_well", "depth": (1.0, 8.0),
        "separation": (3.0, 8.0), "asymmetry": (-0.002, 0.002),
        "omega": (0.5, 2.0), "cap": 30.0},
    # Sharp-edged flat-bottomed rectangles.
    "box_well": {
        WEIGHT: 1.0, "depth": (2.0, 20.0), "half_width": (0.75, 5.0),
        "centre_fraction": 0.125},
    # Smooth-edged flat-bottomed ellipses.
    "woods_saxon": {
        WEIGHT: 1.0, "depth": (2.0, 20.0), "radius": (1.0, 5.0),
        "diffuseness": (0.3, 1.5), "centre_fraction": 0.125},
    # Disordered landscapes, rough (l = 0.7 bohr) to smooth (4 bohr),
    # faded towards the walls (window 5 bohr) as for an isolated system.
    "random_smooth": {
        WEIGHT: 1.0, "depth": (0.5, 20.0), "correlation_length": (0.7, 4.0),
        "window": 5.0},
})
# Probability that a universal sample is the sum of two component draws.
SUM_PROBABILITY = 0.25
# Range of the universal constant offset of the zero of energy, Hartree.
OFFSET = (-10.0, 10.0)


def component_key(slot_key: jax.Array, name: str) -> jax.Array:
  """The key component ``name`` draws from in a slot (see the module)."""
  return jax.random.fold_in(slot_key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def check_components(components: Any, where: str = "mixture"
                     ) -> tuple[tuple[str, str, float, FrozenMapping], ...]:
  """Validates a mixture's components.

  Each component's ranges are checked by its family when it is sampled (or
  traced, for a weight of 0); here only their names.

  Args:
    components: see :func:`mixture`.
    where: the prefix of error messages.

  Returns:
    ``(name, family, weight, ranges)`` per component, sorted by name.

  Raises:
    ValueError: not a non-empty mapping; an unknown family, or a composite
      one (the mixture itself), as a component; a component without a
      weight; a weight that is not a finite number >= 0; all weights 0; a
      range its family does not take (the message names the component and
      the ranges, and lists the valid ones).
  """
  # pylint: disable-next=g-import-not-at-top
  from pgmoe_jax import potentials  # The registry imports this module.
  if not isinstance(components, Mapping) or not components:
    raise ValueError(f"{where}: components={components!r} must be a "
                     "non-empty mapping of component name -> {'weight': w, "
                     "<range>: value, ...}.")
  out = []
  for name in sorted(components, key=str):
    spec = components[name]
    if not isinstance(spec, Mapping) or WEIGHT not in spec:
      raise ValueError(f"{where}: component {name!r} must be a mapping with "
                       f"a {WEIGHT!r} and the family's ranges, got "
                       f"{spec!r}.")
    family_name = spec.get(FAMILY, name)
    if (not isinstance(family_name, str)
        or family_name in potentials.COMPOSITE_FAMILIES):
      raise ValueError(f"{where}: component {name!r}: family "
                       f"{family_name!r} cannot be a mixture component; use "
                       "the base families.")
    try:
      family = potentials.get_family(family_name)
    except ValueError as e:
      raise ValueError(f"{where}: unknown component {name!r}: {e}") from None
    weight = number(where, f"component {name!r} weight", spec[WEIGHT],
                    spec[WEIGHT])
    if not (math.isfinite(weight) and weight >= 0):
      raise ValueError(f"{where}: component {name!r} has weight "
                       f"{spec[WEIGHT]!r}; a weight must be a finite number "
                       ">= 0.")
    ranges = {k: v for k, v in spec.items() if k not in (WEIGHT, FAMILY)}
    valid = potentials.range_names(family)
    unknown = sorted(set(ranges) - set(valid))
    if unknown:
      raise ValueError(
          f"{where}: component {name!r} ({family_name}) has unknown "
          f"range(s) {', '.join(map(repr, unknown))}; valid keys: "
          f"{', '.join(map(repr, [WEIGHT, FAMILY] + valid))}.")
    out.append((name, family_name, weight, FrozenMapping(ranges)))
  if not sum(w for _, _, w, _ in out) > 0:
    raise ValueError(f"{where}: every component weight is 0; at least one "
                     "must be positive.")
  return tuple(out)


def _sample_component(name, family_name, key, grid, batch, ranges, dtype,
                      where):
  # pylint: disable-next=g-import-not-at-top
  from pgmoe_jax import potentials  # The registry imports this module.
  family = potentials.get_family(family_name)
  try:
    v = potentials.call_family(family_name, family, key, grid, batch,
                               dtype=dtype, **ranges)
  except potentials.FamilyError as e:
    raise potentials.FamilyError(
        f"{where}: component {name!r}: {e}") from e.__cause__
  except (TypeError, ValueError) as e:
    raise type(e)(f"{where}: component {name!r}: {e}") from None
  return jnp.asarray(v).astype(dtype)


def _pick(u: jax.Array, weights: Sequence[float]) -> jax.Array:
  """Indices ``k`` with probabilities ``weights / sum`` from uniforms ``u``."""
  cdf = np.cumsum(np.asarray(weights, np.float64))
  bounds = jnp.asarray(cdf[:-1] / cdf[-1], u.dtype)
  return jnp.sum(u[..., None] >= bounds, axis=-1)


def mixture(key: jax.Array, grid: Grid,
            batch_shape: int | Sequence[int] = (), *,
            components: Mapping[str, Mapping[str, Any]] = UNIVERSAL,
            sum_probability: float = SUM_PROBABILITY,
            offset: tuple[float, float] = OFFSET,
            stratified: bool = False,
            dtype: DTypeLike | None = None) -> jax.Array:
  r"""Potentials from a weighted mixture of families, summed and offset.

  .. math:: V = V_i + s V_j + c

  per sample: components ``i`` and ``j`` are drawn independently with
  probabilities proportional to their weights, ``V_i`` and ``V_j`` are
  independent draws of those families with the component's ranges (``j``
  may equal ``i``), ``s`` is 1 with probability ``sum_probability`` (else
  0) and ``c`` (Hartree) is uniform in ``offset``. The offset shifts every
  eigenvalue by ``c`` and leaves the states unchanged.

  Args:
    key: a JAX PRNG key.
    grid: the grid, d = 1, 2 or 3.
    batch_shape: leading batch shape; an int ``k`` means ``(k,)``.
    components: component name -> ``{"weight": w, "family": f, <range>:
      value, ...}``: a relative weight ``w >= 0`` (not all 0; 0 leaves the
      component out), the family ``f`` (a key of ``FAMILIES`` or a user
      family ``"package.module:function"``; optional, the component's name
      by default, so one family can be two components with different
      ranges) and the family's keyword ranges (ranges not given take the
      family's defaults). Static (see the package's contract);
      :data:`UNIVERSAL` by default.
    sum_probability: probability in [0, 1] that a sample is the sum of two
      component draws.
    offset: range of the constant added to each sample, Hartree (any sign;
      ``(0, 0)`` for none).
    stratified: each component draws only its share of the batch (see the
      module docstring): about ``len(components)`` times cheaper, for
      training streams; ``False`` (the default, and what datasets use)
      draws every sample's component independently.
    dtype: floating dtype of the result; ``None`` for JAX's default float.

  Returns:
    V of shape ``(*batch_shape, *grid.shape)`` in Hartree.

  Raises:
    TypeError: if ``grid`` is not a :class:`Grid` or ``batch_shape`` is not an
      int or a tuple of ints.
    ValueError: bad components (see :func:`check_components`), a component
      range its family rejects (named with the component), a
      ``sum_probability`` outside [0, 1], a malformed ``offset`` or a
      non-float dtype.
  """
  where = "mixture"
  check_grid(where, grid)
  batch = as_batch_shape(where, batch_shape)
  dtype = as_dtype(where, dtype)
  parts = check_components(freeze(components), where)
  if isinstance(sum_probability, (tuple, list)) or not 0 <= number(
      where, "sum_probability", sum_probability, sum_probability) <= 1:
    raise ValueError(f"{where}: sum_probability={sum_probability!r} must be "
                     "a probability in [0, 1].")
  p = float(sum_probability)
  offset = check_range(where, "offset", offset)
  if not isinstance(stratified, (bool, np.bool_)):
    raise ValueError(f"{where}: stratified={stratified!r} must be True or "
                     "False.")

  for name, family_name, weight, ranges in parts:
    if weight == 0:  # Not sampled: check its ranges without computing.
      jax.eval_shape(lambda k, n=name, f=family_name, r=ranges:
                     _sample_component(n, f, k, grid, (), r, dtype, where),
                     jax.random.key(0))
  active = [part for part in parts if part[2] > 0]
  slots = 2 if p > 0 else 1
  size = math.prod(batch)
  if stratified and size > 1:
    drawn, u = _stratified(key, grid, size, active, slots, dtype, where)
    return _sum_and_offset(drawn, u, p, offset, grid).reshape(
        batch + grid.shape)
  # A grid per component and term, the selection and the sum.
  check_size(where, batch + (slots * (len(active) + 1) + 1,), grid, dtype)

  k_pick, k_draw = jax.random.split(key)
  u = jax.random.uniform(k_pick, batch + (4,), dtype)
  # Both terms' choices at once: (slots, *batch, 1, ..., 1).
  choice = over_grid(_pick(jnp.moveaxis(u[..., :slots], -1, 0),
                           [part[2] for part in active]), grid)
  drawn = None
  for k, (name, family_name, _, ranges) in enumerate(active):
    # One call for both terms (a leading axis of slots): one kernel each.
    v = _sample_component(name, family_name, component_key(k_draw, name),
                          grid, (slots,) + batch, ranges, dtype, where)
    drawn = v if drawn is None else jnp.where(choice == k, v, drawn)
  return _sum_and_offset(drawn, u, p, offset, grid)


def _sum_and_offset(drawn, u, p, offset, grid):
  """``drawn[0] (+ drawn[1] where u[..., 2] < p) + offset`` (see mixture)."""
  potential = drawn[0]
  if len(drawn) == 2:
    summed = over_grid(u[..., 2] < p, grid)
    potential = jnp.where(summed, potential + drawn[1], potential)
  return potential + over_grid(uniform_in(u[..., 3], offset), grid)


def _stratified(key, grid, size, active, slots, dtype, where):
  """The draws ``(slots, size, *grid.shape)`` and uniforms ``(size, 4)`` of
  ``mixture(..., stratified=True)`` for a flat batch of ``size``."""
  weights = np.asarray([part[2] for part in active], np.float64)
  counts = np.floor(size * weights / weights.sum()).astype(int)
  rest = size - int(counts.sum())
  # A grid per row drawn, the selection and the sum.
  check_size(where, (slots * (size + rest * len(active)) + 2 * size,), grid,
             dtype)
  k_pick, k_draw = jax.random.split(key)
  u = jax.random.uniform(k_pick, (size, 4), dtype)
  # The rows left over: a random component each, as unstratified.
  choice = over_grid(_pick(u[size - rest:, :slots].T, weights), grid)
  strata, leftover = [], None
  for k, (part, n) in enumerate(zip(active, counts)):
    name, family_name, _, ranges = part
    if n + rest == 0:
      continue
    v = _sample_component(name, family_name, component_key(k_draw, name),
                          grid, (slots, int(n) + rest), ranges, dtype, where)
    strata.append(v[:, :n])
    leftover = v[:, n:] if leftover is None else jnp.where(
        choice == k, v[:, n:], leftover)
  drawn = jnp.concatenate(strata + [leftover], axis=1)
  if slots == 2:  # second terms shuffled: pairs of random components
    drawn = drawn.at[1].set(drawn[1][jax.random.permutation(
        jax.random.fold_in(k_pick, 1), size)])
  return drawn, u
