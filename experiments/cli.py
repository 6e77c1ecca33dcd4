"""Flag parsing shared by the entry points: grids and comma lists."""

from __future__ import annotations

from pgmoe_jax import Grid


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
  """Parses ``"32"`` or ``"32,48"`` into a tuple of ints, naming the flag."""
  try:
    values = tuple(int(part) for part in str(text).split(","))
  except ValueError:
    raise ValueError(f"--{flag}={text!r}: expected integers separated by "
                     "commas, e.g. --grid=32 or --grid=32,48.") from None
  return values


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
  """Parses ``"20"`` or ``"20,24"`` into a tuple of floats, naming the flag."""
  try:
    return tuple(float(part) for part in str(text).split(","))
  except ValueError:
    raise ValueError(f"--{flag}={text!r}: expected numbers separated by "
                     "commas, e.g. --length=20 or --length=20,24.") from None


def grid_from_flags(grid: str, length: str, boundary: str = "dirichlet",
                    ndim: int | None = None) -> Grid:
  """Builds a Grid from ``--grid`` / ``--length`` flag values.

  Args:
    grid: points per axis, ``"32"`` or ``"32,48"``.
    length: box length(s) in bohr, ``"20"`` or ``"20,24"``.
    boundary: ``"dirichlet"`` or ``"periodic"``.
    ndim: the dimension when ``grid`` holds a single number (``"32"`` with
      ``ndim=2`` is 32x32); ``None`` takes the number of entries.
  """
  shape = parse_ints(grid, "grid")
  if len(shape) == 1 and ndim is not None:
    shape = shape * ndim
  return Grid(shape, parse_floats(length, "length"), boundary)
