"""Geometry of PG-MoE: tiles with halos, coarse grids and their interpolation.

:class:`Tiling` is the value object a PG-MoE model holds: the grid, the
tiles per axis and the halo, with the derived shapes (tile, patch) and the
two maps between a field on the grid and its per-tile patches
(:meth:`Tiling.cut`, :meth:`Tiling.merge`), as jax-cfd's ``Grid`` owns
offsets and spacing. Below it, the pure NumPy index and matrix builders
(compile-time constants under ``jit``) and the JAX maps it uses; no
parameters.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.grid import Grid
# The grid transfers live in the core (the cascade solver uses them too).
from pgmoe_jax.multigrid import apply_per_axis  # noqa: F401
from pgmoe_jax.multigrid import block_mean  # noqa: F401
from pgmoe_jax.multigrid import interpolate  # noqa: F401
from pgmoe_jax.multigrid import interpolation_matrix  # noqa: F401


def per_axis(value: int | Sequence[int], grid: Grid,
             name: str) -> tuple[int, ...]:
  """One value per grid axis from a number or a sequence, checked."""
  values = (value,) * grid.ndim if np.ndim(value) == 0 else tuple(value)
  if len(values) != grid.ndim:
    raise ValueError(f"PG-MoE {name}={value!r} needs one value or one per "
                     f"axis ({grid.ndim}).")
  return tuple(int(v) for v in values)


# Halo modes of :meth:`Tiling.cut`: beyond the grid a halo holds a constant,
# the edge value or the other side.
HALO_MODES = ("constant", "edge", "wrap")


@dataclasses.dataclass(frozen=True)
class Tiling:
  """The grid cut into equal tiles, each seen with a halo (a value object).

  Frozen and hashable: a flax module holds it as a static field.

  Attributes:
    grid: the grid.
    tiles: tiles per axis (one number, or one per axis; stored as a tuple);
      each divides the grid's points on its axis.
    halo: grid points each patch adds around its tile on every side.

  Shapes: ``T = num_tiles`` tiles in C order; a tile is ``tile_shape``
  points, its patch (tile plus halo) ``patch_shape``.

  Raises:
    ValueError: tiles that do not divide the grid, or a negative halo.
  """
  grid: Grid
  tiles: int | tuple[int, ...]
  halo: int = 0

  def __post_init__(self):
    tiles = per_axis(self.tiles, self.grid, "tiles")
    if any(t < 1 or n % t for n, t in zip(self.grid.shape, tiles)):
      raise ValueError(f"PG-MoE tiles={self.tiles!r} must divide the grid "
                       f"{self.grid.shape} on every axis.")
    object.__setattr__(self, "tiles", tiles)
    object.__setattr__(self, "halo", int(self.halo))
    if self.halo < 0:
      raise ValueError(f"PG-MoE halo must be >= 0, got {self.halo}.")

  @property
  def num_tiles(self) -> int:
    """T, the number of tiles."""
    return math.prod(self.tiles)

  @property
  def tile_shape(self) -> tuple[int, ...]:
    """Points of one tile per axis."""
    return tuple(n // t for n, t in zip(self.grid.shape, self.tiles))

  @property
  def patch_shape(self) -> tuple[int, ...]:
    """Points of one patch (tile plus halo on both sides) per axis."""
    return tuple(s + 2 * self.halo for s in self.tile_shape)

  @property
  def tile_size(self) -> int:
    """S, points per tile."""
    return math.prod(self.tile_shape)

  @property
  def patch_size(self) -> int:
    """P, points per patch."""
    return math.prod(self.patch_shape)

  def cut(self, x: jax.Array, mode: str = "constant",
          constant: float | jax.Array = 0.0) -> jax.Array:
    """Each tile's patch of a field: ``x (b, *grid.shape) -> (b, T, *patch)``.

    Beyond the grid a halo holds ``constant`` (``mode="constant"``), the
    edge value (``"edge"``) or the other side (``"wrap"``). Halos within a
    tile's size come from the neighbouring tiles (no padded copy of the
    grid; a spatially sharded grid exchanges only the halos); wider ones
    from a padded grid. The values are those of padding ``x`` by ``halo``
    with ``jnp.pad(mode=mode)`` and slicing each patch.
    """
    if mode not in HALO_MODES:
      raise ValueError(f"Unknown halo mode {mode!r}; known: "
                       f"{', '.join(HALO_MODES)}.")
    if self.halo <= min(self.tile_shape):
      flat = extract_tiles_with_halos(x, self.tiles, self.tile_shape,
                                      self.halo, mode, constant)
    else:
      pad = [(0, 0)] + [(self.halo, self.halo)] * self.grid.ndim
      kwargs = dict(constant_values=constant) if mode == "constant" else {}
      flat = extract_tiles(jnp.pad(x, pad, mode=mode, **kwargs), self.tiles,
                           self.tile_shape, self.halo)
    return flat.reshape(flat.shape[:2] + self.patch_shape)

  def merge(self, values: jax.Array) -> jax.Array:
    """Per-tile values back onto the grid: ``(b, T, *tile) -> (b, *grid)``.

    ``values`` may also be ``(b, T, S)``, each tile flattened in C order.
    Tiles do not overlap: a reshape and a transpose.
    """
    return merge_tiles(values, self.tiles, self.tile_shape)


def tile_indices(shape, tiles, halo):
  """Gather and scatter indices for tiles with a halo.

  Returns:
    ``gather (T, P)``: flat indices into the grid padded by ``halo`` on every
    side, one row per tile listing its patch (tile plus halo) in C order;
    ``scatter (N,)``: for each flat fine-grid point, its position in the
    flattened ``(T, S)`` array of tile outputs (S points per tile).
  """
  d = len(shape)
  size = [n // t for n, t in zip(shape, tiles)]
  padded = [n + 2 * halo for n in shape]
  tile_ids = list(np.ndindex(*tiles))
  patch = [np.arange(s + 2 * halo) for s in size]
  gather = []
  for tile in tile_ids:
    starts = [tile[a] * size[a] for a in range(d)]  # in padded coordinates
    coords = np.meshgrid(*[starts[a] + patch[a] for a in range(d)],
                         indexing="ij")
    gather.append(np.ravel_multi_index([c.ravel() for c in coords], padded))
  scatter = np.empty(math.prod(shape), np.int64)
  local = list(np.ndindex(*size))
  for t, tile in enumerate(tile_ids):
    for j, loc in enumerate(local):
      point = [tile[a] * size[a] + loc[a] for a in range(d)]
      scatter[np.ravel_multi_index(point, shape)] = t * len(local) + j
  return np.stack(gather), scatter


def extract_tiles(padded: jax.Array, tiles: Sequence[int],
                  tile_shape: Sequence[int], halo: int) -> jax.Array:
  """Each tile's patch (the tile plus ``halo`` points on every side).

  ``padded (b, *[n + 2 halo])`` -> ``(b, T, P)``: tiles in C order, each
  patch flattened in C order, the same values as gathering with
  :func:`tile_indices` but by slices, reshapes and one transpose (no index
  gather, which is slow on CPU). Axis by axis, the window of tile ``t`` is
  ``padded[s t : s t + s + 2 halo]``: the first ``s`` points are a reshape
  of ``padded[:n]``, the last ``2 halo`` the first points of the next
  block, a reshape of ``padded[s : n + s]`` (when ``2 halo > s`` more
  blocks follow).
  """
  b = padded.shape[0]
  d = len(tiles)
  x = padded
  for axis, (t, s) in enumerate(zip(tiles, tile_shape)):
    ax = 1 + 2 * axis  # axes before this one are already (T_a, W_a) pairs
    width = s + 2 * halo
    # Blocks past the first reach beyond the padded axis; what they read
    # there is never taken (each block keeps only its first points).
    extra = -(-width // s) * s - 2 * halo
    pad = [(0, 0)] * x.ndim
    pad[ax] = (0, extra)
    x = jnp.pad(x, pad)
    parts = []
    offset = 0
    while offset < width:
      take = min(s, width - offset)
      block = jax.lax.slice_in_dim(x, offset, offset + t * s, axis=ax)
      block = block.reshape(x.shape[:ax] + (t, s) + x.shape[ax + 1:])
      parts.append(jax.lax.slice_in_dim(block, 0, take, axis=ax + 1))
      offset += take
    x = jnp.concatenate(parts, axis=ax + 1) if len(parts) > 1 else parts[0]
  # (b, T1, W1, ..., Td, Wd) -> (b, T1..Td, W1..Wd)
  order = [0] + [1 + 2 * a for a in range(d)] + [2 + 2 * a for a in range(d)]
  x = x.transpose(order)
  return x.reshape(b, math.prod(tiles), -1)


def extract_tiles_with_halos(x: jax.Array, tiles: Sequence[int],
                             tile_shape: Sequence[int], halo: int, mode: str,
                             constant: float = 0.0) -> jax.Array:
  """:func:`extract_tiles` of the padded grid, from the unpadded grid.

  ``x (b, *shape)`` -> ``(b, T, P)``, equal to padding ``x`` by ``halo``
  with ``jnp.pad(mode=mode)`` (``"constant"`` with ``constant``,
  ``"edge"`` or ``"wrap"``) and calling :func:`extract_tiles`. Axis by
  axis the grid is reshaped into its tiles ``(T, s)``; a tile's halos are
  the last ``halo`` points of the tile before it and the first of the tile
  after it (shifts along the tile axis), and the outermost tiles' halos
  are the padding. No array of the padded grid's size is formed, so a grid
  sharded across devices along a tile-aligned axis keeps its layout: the
  shifts become neighbour exchanges of ``halo`` points.

  Raises:
    ValueError: ``halo`` exceeds a tile's size (the halo would reach past
      the neighbouring tile), or ``mode`` is unknown.
  """
  if mode not in ("constant", "edge", "wrap"):
    raise ValueError(f"Unknown halo mode {mode!r}; known: constant, edge, "
                     "wrap.")
  if halo > min(tile_shape):
    raise ValueError(f"halo={halo} is larger than a tile "
                     f"({'x'.join(map(str, tile_shape))}): the neighbour "
                     "halos reach one tile only; use extract_tiles.")
  b = x.shape[0]
  d = len(tiles)
  for axis, (t, s) in enumerate(zip(tiles, tile_shape)):
    ax = 1 + 2 * axis  # axes before this one are already (T_a, W_a) pairs
    x = x.reshape(x.shape[:ax] + (t, s) + x.shape[ax + 1:])
    if halo == 0:
      continue
    head = jax.lax.slice_in_dim(x, 0, halo, axis=ax + 1)
    tail = jax.lax.slice_in_dim(x, s - halo, s, axis=ax + 1)
    if mode == "wrap":
      before = jax.lax.slice_in_dim(tail, t - 1, t, axis=ax)
      after = jax.lax.slice_in_dim(head, 0, 1, axis=ax)
    elif mode == "edge":
      first = jax.lax.slice_in_dim(jax.lax.slice_in_dim(x, 0, 1, axis=ax),
                                   0, 1, axis=ax + 1)
      last = jax.lax.slice_in_dim(jax.lax.slice_in_dim(x, t - 1, t, axis=ax),
                                  s - 1, s, axis=ax + 1)
      before = jnp.concatenate([first] * halo, axis=ax + 1)
      after = jnp.concatenate([last] * halo, axis=ax + 1)
    else:
      one = list(head.shape)
      one[ax] = 1
      before = after = jnp.full(one, constant, x.dtype)
    left = jnp.concatenate(
        [before, jax.lax.slice_in_dim(tail, 0, t - 1, axis=ax)], axis=ax)
    right = jnp.concatenate(
        [jax.lax.slice_in_dim(head, 1, t, axis=ax), after], axis=ax)
    x = jnp.concatenate([left, x, right], axis=ax + 1)
  order = [0] + [1 + 2 * a for a in range(d)] + [2 + 2 * a for a in range(d)]
  x = x.transpose(order)
  return x.reshape(b, math.prod(tiles), -1)


def merge_tiles(values: jax.Array, tiles: Sequence[int],
                tile_shape: Sequence[int]) -> jax.Array:
  """Per-tile values ``(b, T, S)`` back onto the grid ``(b, *shape)``.

  The inverse layout of :func:`extract_tiles` without halos (tiles do not
  overlap): a reshape and a transpose, equal to indexing with
  :func:`tile_indices`' ``scatter``.
  """
  b = values.shape[0]
  d = len(tiles)
  x = values.reshape((b,) + tuple(tiles) + tuple(tile_shape))
  order = [0] + [i for a in range(d) for i in (1 + a, 1 + d + a)]
  x = x.transpose(order)
  return x.reshape((b,) + tuple(t * s for t, s in zip(tiles, tile_shape)))
