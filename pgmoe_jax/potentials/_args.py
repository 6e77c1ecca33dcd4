"""Eager validation of potential-family arguments (before anything is traced).

Ranges fix array shapes, so they are static Python numbers; a bad one raises
``ValueError`` naming the family, the argument and the value.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
import numpy as np

from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import check_fits


def check_grid(where: str, grid: Any) -> None:
  if not isinstance(grid, Grid):
    raise TypeError(f"{where}: grid must be a pgmoe_jax.grid.Grid, got "
                    f"{type(grid).__name__} {grid!r}.")


def as_batch_shape(where: str, batch_shape: Any) -> tuple[int, ...]:
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


def as_dtype(where: str, dtype: DTypeLike | None) -> np.dtype:
  if dtype is None:
    dtype = jnp.float64  # Canonicalised below to float32 without x64.
  dtype = jax.dtypes.canonicalize_dtype(jnp.dtype(dtype))
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{where}: dtype must be a floating dtype, got {dtype!r}.")
  return dtype


def check_size(where: str, batch: tuple[int, ...], grid: Grid,
               dtype: np.dtype) -> None:
  """Refuses a batch of potentials that cannot fit in memory (see memory)."""
  count = math.prod(batch)
  nbytes = 4.0 * count * grid.size * np.dtype(dtype).itemsize
  check_fits(nbytes, f"{where}: {count} potential(s) on {grid}",
             "sample fewer potentials per call or use a smaller grid")


def number(where: str, name: str, value: Any, item: Any) -> float:
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


def check_range(where: str, name: str, value: Any, *,
                minimum: float | None = None, strict: bool = False,
                integer: bool = False) -> tuple[float, float]:
  """Validates a ``(low, high)`` range and returns it as floats."""
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
      or len(value) != 2):
    raise ValueError(
        f"{where}: {name}={value!r} must be a (low, high) pair of numbers.")
  low, high = (number(where, name, value, v) for v in value)
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


def check_scalar(where: str, name: str, value: Any, *, minimum: float,
                 strict: bool, allow_inf: bool = False) -> float:
  """Validates a scalar keyword that must be at least ``minimum``."""
  if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
    raise ValueError(f"{where}: {name}={value!r} must be a single number.")
  x = number(where, name, value, value)
  if math.isnan(x) or (math.isinf(x) and not allow_inf):
    raise ValueError(f"{where}: {name}={value!r} must be finite.")
  if x <= minimum if strict else x < minimum:
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    raise ValueError(f"{where}: {name}={value!r} must be {bound}.")
  return x


class FrozenMapping(Mapping):
  """An immutable, hashable mapping with sorted keys: a static argument.

  Nested mappings and sequences are frozen too (into ``FrozenMapping`` s and
  tuples, :func:`freeze`), so the whole value can be a static argument under
  ``jax.jit`` or a field of a frozen dataclass (``DatasetSpec.ranges``).
  It compares equal to any mapping with equal (frozen) items.
  """

  __slots__ = ("_items", "_dict")

  def __init__(self, mapping: Mapping[str, Any] | None = None):
    items = dict(mapping or {})
    self._items = tuple(sorted((k, freeze(v)) for k, v in items.items()))
    self._dict = dict(self._items)

  def __getitem__(self, name: str) -> Any:
    return self._dict[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._dict)

  def __len__(self) -> int:
    return len(self._dict)

  def __hash__(self) -> int:
    return hash(self._items)

  def __eq__(self, other: Any) -> bool:
    if not isinstance(other, Mapping):
      return NotImplemented
    return self._dict == {k: freeze(v) for k, v in other.items()}

  def __repr__(self) -> str:
    return f"FrozenMapping({self._dict!r})"


def freeze(value: Any) -> Any:
  """Mappings to :class:`FrozenMapping`, lists and tuples to tuples, deeply."""
  if isinstance(value, Mapping):
    return value if isinstance(value, FrozenMapping) else FrozenMapping(value)
  if isinstance(value, (list, tuple)):
    return tuple(freeze(v) for v in value)
  return value


def thaw(value: Any) -> Any:
  """The JSON form of a frozen value: mappings to dicts, tuples to lists."""
  if isinstance(value, Mapping):
    return {k: thaw(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [thaw(v) for v in value]
  return value
