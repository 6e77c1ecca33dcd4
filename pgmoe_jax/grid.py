r"""The spatial grid: a frozen, hashable description of the discretised box.

Conventions (a contract: README.md states them for users):

* Dirichlet (default): the box is :math:`[-L/2, L/2]` per axis with ``n``
  interior points, spacing :math:`h = L/(n+1)` and
  :math:`x_i = -L/2 + (i+1) h`, ``i = 0..n-1``; the state vanishes on the
  walls, which are not stored.
* Periodic: :math:`h = L/n` and :math:`x_i = -L/2 + i h`.

A :class:`Grid` holds only Python tuples, so it is static data for JAX: it is
registered with :func:`jax.tree_util.register_static`, and
``jax.jit(energy)(psi, V, grid)`` works without ``static_argnames``. All
arrays derived from it (coordinates, spacings) are built on demand with NumPy
and therefore become compile-time constants under ``jit``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import numpy as np

BOUNDARIES = ("dirichlet", "periodic")
MAX_DIM = 3
MIN_POINTS = 3


def _as_tuple(value, name: str) -> tuple:
  if isinstance(value, (str, bytes)):
    raise TypeError(f"Grid {name} must be a number or a sequence of numbers, "
                    f"got the string {value!r}.")
  if np.ndim(value) == 0:
    return (value,)
  return tuple(np.asarray(value).tolist())


@dataclasses.dataclass(frozen=True)
class Grid:
  """A uniform grid on a box, in atomic units (bohr).

  Attributes:
    shape: points per axis ``(n1, ..., nd)``, ``1 <= d <= 3``, each ``>= 3``.
      An integer means a 1-D grid.
    length: box length per axis in bohr; a scalar is used for every axis.
    boundary: ``"dirichlet"`` (hard walls, the default) or ``"periodic"``.

  Raises:
    ValueError: for a dimension outside 1..3, fewer than 3 points on an axis,
      a non-positive or non-finite length, a length tuple of the wrong size, or
      an unknown boundary.
  """

  shape: tuple[int, ...]
  length: tuple[float, ...]
  boundary: str = "dirichlet"

  def __init__(self, shape: int | Sequence[int],
               length: float | Sequence[float],
               boundary: str = "dirichlet"):
    shape = _as_tuple(shape, "shape")
    if not 1 <= len(shape) <= MAX_DIM:
      raise ValueError(
          f"Grid shape {shape} has {len(shape)} axes; pgmoe_jax supports 1, 2 "
          "or 3 spatial dimensions.")
    for n in shape:
      if isinstance(n, bool) or not float(n).is_integer():
        raise ValueError(f"Grid shape {shape} must hold integers, got {n!r}.")
    shape = tuple(int(n) for n in shape)
    if min(shape) < MIN_POINTS:
      raise ValueError(
          f"Grid shape {shape}: every axis needs at least {MIN_POINTS} points "
          "(n >= 3) for the three-point stencil; use a larger n.")
    length = _as_tuple(length, "length")
    if len(length) == 1:
      length = length * len(shape)
    if len(length) != len(shape):
      raise ValueError(
          f"Grid length {length} has {len(length)} entries but shape {shape} "
          f"has {len(shape)} axes; give one length or one per axis.")
    length = tuple(float(a) for a in length)
    if not all(math.isfinite(a) and a > 0 for a in length):
      raise ValueError(
          f"Grid length {length} must be positive and finite (box length in "
          "bohr, e.g. length=20.0).")
    if boundary not in BOUNDARIES:
      raise ValueError(
          f"Unknown boundary {boundary!r}; known boundaries: "
          f"{', '.join(BOUNDARIES)}.")
    object.__setattr__(self, "shape", shape)
    object.__setattr__(self, "length", length)
    object.__setattr__(self, "boundary", boundary)

  @property
  def ndim(self) -> int:
    """Number of spatial dimensions d."""
    return len(self.shape)

  @property
  def size(self) -> int:
    """Total number of grid points, prod(shape)."""
    return math.prod(self.shape)

  @property
  def spacing(self) -> tuple[float, ...]:
    """Grid spacing h per axis in bohr."""
    if self.boundary == "dirichlet":
      return tuple(a / (n + 1) for n, a in zip(self.shape, self.length))
    return tuple(a / n for n, a in zip(self.shape, self.length))

  @property
  def volume_element(self) -> float:
    """prod(h): the weight of one grid point in integrals."""
    return math.prod(self.spacing)

  @property
  def axes(self) -> tuple[int, ...]:
    """The trailing array axes that are spatial: ``(-d, ..., -1)``."""
    return tuple(range(-self.ndim, 0))

  def coordinates(self) -> tuple[np.ndarray, ...]:
    """The 1-D coordinate arrays x_i per axis (float64 NumPy arrays)."""
    offset = 1 if self.boundary == "dirichlet" else 0
    return tuple(-a / 2 + (np.arange(n) + offset) * h
                 for n, a, h in zip(self.shape, self.length, self.spacing))

  def mesh(self) -> tuple[np.ndarray, ...]:
    """Coordinates broadcast to the full grid, ``indexing="ij"``."""
    return tuple(np.meshgrid(*self.coordinates(), indexing="ij"))

  def check_array(self, name: str, x, *, min_leading: int = 0) -> None:
    """Raises ValueError unless the trailing axes of ``x`` equal ``shape``.

    Args:
      name: what to call the array in the message (e.g. ``"psi"``).
      x: an array of shape ``(..., *self.shape)``.
      min_leading: the number of leading axes ``x`` must at least have.
    """
    shape = tuple(np.shape(x))
    d = self.ndim
    if len(shape) < d + min_leading or shape[len(shape) - d:] != self.shape:
      expected = "(..., " if min_leading else "([batch...,] "
      expected += ", ".join(map(str, self.shape)) + ")"
      raise ValueError(
          f"{name} has shape {shape}, which does not match the grid: expected "
          f"{expected} for {self}. Check the grid shape or the array's axes.")

  def __str__(self) -> str:
    shape = "x".join(map(str, self.shape))
    length = "x".join(f"{a:g}" for a in self.length)
    return f"Grid({shape}, L={length} bohr, {self.boundary})"


jax.tree_util.register_static(Grid)


def check_same_grid(expected: Grid, got: Grid, *, expected_what: str,
                    got_what: str, fix: str) -> None:
  """Raises ValueError, naming both grids and the fix, if they differ.

  The one check behind every "data on another grid" error (training data
  against the config, datasets against a model, ``open_dataset(grid=...)``).

  Args:
    expected: the grid the caller works on.
    got: the grid of the thing it was handed.
    expected_what: what ``expected`` belongs to, e.g. ``"the config"``.
    got_what: what ``got`` belongs to, e.g. ``"data.train='data/x'"``.
    fix: one sentence saying what to do.
  """
  if expected != got:
    raise ValueError(f"{got_what} is on {got}, but {expected_what} is on "
                     f"{expected}. {fix}")
