"""The cascade's accuracy-speed front and a model's matched-accuracy speed-up.

The baseline of every model speed figure is the parameter-free cascade
(:func:`pgmoe_jax.solvers.cascade`) run over a fixed grid of settings
(:func:`cascade_settings`: iterations per level, with or without
Chebyshev-Jacobi sweeps on the interpolated starts). Each setting gives a
point (energy error, states/s); the points no other setting beats on both
are the Pareto front (:func:`pareto_front`). A model's matched-accuracy speed-up
(:func:`matched_speedup`) is its states/s over the front's states/s at the
model's energy error, interpolated piecewise-linearly in (log dE,
log states/s); where the model is more accurate than every setting, the most
accurate setting's states/s is used (the speed-up is then a lower bound);
where it is less accurate than every setting, the fastest setting's.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from pgmoe_jax.grid import Grid


class Setting(NamedTuple):
  """One setting of the cascade (:func:`pgmoe_jax.solvers.cascade`).

  Attributes:
    iters: fixed-cost iterations per level, coarsest first.
    sweeps: Chebyshev-Jacobi sweeps per level on the interpolated start
      (coarsest first, the coarsest 0), or ``None`` for none.
  """
  iters: tuple[int, ...]
  sweeps: tuple[int, ...] | None = None

  @property
  def name(self) -> str:
    """``"cascade (4,2,1)"``, or ``"cascade (4,2,1) sweeps (0,4,8)"``."""
    text = "cascade (" + ",".join(str(int(k)) for k in self.iters) + ")"
    if self.sweeps is not None and any(self.sweeps):
      text += " sweeps (" + ",".join(str(int(k)) for k in self.sweeps) + ")"
    return text


def as_setting(value) -> Setting:
  """A :class:`Setting`, or iterations per level alone (no sweeps)."""
  if isinstance(value, Setting):
    return Setting(tuple(int(k) for k in value.iters),
                   None if value.sweeps is None else tuple(
                       int(k) for k in value.sweeps))
  return Setting(tuple(int(k) for k in value))


# The fixed settings grid, per dimension: the plain cascade, and the
# cascade whose interpolated starts are smoothed by Chebyshev-Jacobi sweeps.
SETTINGS = {
    2: tuple(Setting(i) for i in (
        (4,), (6,), (8,), (6, 1), (6, 2), (6, 3), (6, 4), (4, 2, 1),
        (4, 2, 2), (4, 2, 3))) + (
            Setting((6, 0), (0, 16)), Setting((6, 1), (0, 8)),
            Setting((2, 0, 0), (0, 2, 4)), Setting((4, 0, 0), (0, 2, 4)),
            # From 1 to 4 iterations at the coarsest level before the
            # sweeps (0, 4, 8): each costs about a tenth of the batch.
            Setting((1, 0, 0), (0, 4, 8)), Setting((2, 0, 0), (0, 4, 8)),
            Setting((3, 0, 0), (0, 4, 8)),
            Setting((4, 0, 0), (0, 4, 8)), Setting((4, 0, 0), (0, 8, 16)),
            Setting((4, 2, 0), (0, 4, 8)), Setting((4, 2, 0), (0, 4, 16)),
            Setting((4, 2, 1), (0, 4, 8)), Setting((4, 2, 1), (0, 4, 16)),
            # A fourth, coarsest level (8x8 at 64x64) finds the right well
            # more often for the cost of a few 16x16 iterations.
            Setting((1, 1, 0, 0), (0, 0, 4, 8)),
            Setting((1, 2, 0, 0), (0, 0, 4, 8)),
            Setting((2, 1, 0, 0), (0, 0, 4, 8)),
            Setting((2, 2, 0, 0), (0, 0, 4, 8)),
            Setting((2, 4, 0, 0), (0, 0, 4, 8)),
            Setting((4, 4, 0, 0), (0, 0, 4, 8)),
            Setting((2, 4, 0, 0), (0, 0, 8, 16))),
    3: tuple(Setting(i) for i in (
        (4,), (6,), (6, 1), (6, 2), (6, 3), (4, 2, 1), (4, 2, 2))) + (
            Setting((6, 0), (0, 4)), Setting((6, 0), (0, 8)),
            Setting((6, 0), (0, 16)), Setting((6, 1), (0, 8)),
            # From 1 to 3 iterations at 16^3 before the sweeps (0, 8).
            Setting((1, 0), (0, 8)), Setting((2, 0), (0, 8)),
            Setting((3, 0), (0, 8)),
            Setting((4, 2, 0), (0, 2, 4)), Setting((4, 2, 0), (0, 4, 8)),
            Setting((4, 2, 0), (0, 4, 16)), Setting((4, 2, 1), (0, 4, 8)),
            # From 1 to 4 iterations at 8^3 before the sweeps (0, 4, 8),
            # and one at 16^3 after one or two there (which finds the
            # right well far more often for a few percent of the time).
            Setting((1, 0, 0), (0, 4, 8)), Setting((2, 0, 0), (0, 4, 8)),
            Setting((3, 0, 0), (0, 4, 8)), Setting((4, 0, 0), (0, 4, 8)),
            Setting((1, 1, 0), (0, 4, 8)), Setting((2, 1, 0), (0, 4, 8)),
            # 2-5 iterations at 16^3 after one at 8^3: each costs a few
            # percent of the batch and about halves the p90 (the tail is
            # states in the wrong well); and 1-3 with the sweeps (0, 4, 16).
            Setting((1, 2, 0), (0, 4, 8)), Setting((1, 3, 0), (0, 4, 8)),
            Setting((1, 4, 0), (0, 4, 8)), Setting((1, 5, 0), (0, 4, 8)),
            Setting((1, 1, 0), (0, 4, 16)), Setting((1, 2, 0), (0, 4, 16)),
            Setting((1, 3, 0), (0, 4, 16))),
}

# Energy errors below this (mHa) are taken as this on the log scale: a
# float32 state scored in float64 can come out a rounding error below E0.
DE_FLOOR_MHA = 1e-6


def cascade_settings(grid: Grid) -> tuple[Setting, ...]:
  """The settings of the front on ``grid`` whose levels fit it.

  2-D settings serve 1-D grids; a setting whose levels would not divide
  the grid or would fall below 3 points per axis is left out.
  """
  settings = SETTINGS[3 if grid.ndim == 3 else 2]
  out = []
  for setting in settings:
    factor = 2**(len(setting.iters) - 1)
    if all(n % factor == 0 and n // factor >= 3 for n in grid.shape):
      out.append(setting)
  return tuple(out)


def setting_name(setting) -> str:
  """``(4, 2, 1)`` -> ``"cascade (4,2,1)"``; a :class:`Setting` its name."""
  return as_setting(setting).name


class Point(NamedTuple):
  """One candidate on the accuracy-speed plane."""
  name: str
  error: float  # energy error (mHa), a median or a p90
  rate: float  # states per second


def pareto_front(points: Sequence[Point]) -> list[Point]:
  """The points no other point beats in both error and rate.

  Returned by increasing error (and so increasing rate). Errors below
  :data:`DE_FLOOR_MHA` count as that floor.
  """
  ordered = sorted(points, key=lambda p: (max(p.error, DE_FLOOR_MHA),
                                          -p.rate))
  front = []
  for p in ordered:
    if not front or p.rate > front[-1].rate:
      front.append(p)
  return front


class Speedup(NamedTuple):
  """A matched-accuracy speed-up.

  Attributes:
    value: the model's states/s over the front's at the model's error.
    kind: ``"matched"`` (interpolated on the front), ``"lower bound"``
      (the model is more accurate than every setting: against the most
      accurate one) or ``"fastest"`` (less accurate than every setting:
      against the fastest one).
    baseline_rate: the front's states/s it is divided by.
  """
  value: float
  kind: str
  baseline_rate: float

  def __str__(self) -> str:
    prefix = {"lower bound": ">=", "fastest": "(fastest) "}.get(self.kind, "")
    return f"{prefix}{self.value:.2f}x"


def matched_speedup(error: float, rate: float,
                    points: Sequence[Point]) -> Speedup:
  """The model's speed-up over the cascade's front at the model's error.

  Args:
    error: the model's energy error (mHa), median or p90.
    rate: the model's states/s.
    points: the cascade settings' points for the same statistic.

  Raises:
    ValueError: no points, or a nonpositive rate.
  """
  if not points:
    raise ValueError("matched_speedup needs at least one cascade point.")
  if not rate > 0 or any(not p.rate > 0 for p in points):
    raise ValueError("states/s must be positive.")
  front = pareto_front(points)
  log_e = np.log([max(p.error, DE_FLOOR_MHA) for p in front])
  log_r = np.log([p.rate for p in front])
  x = np.log(max(error, DE_FLOOR_MHA))
  if x <= log_e[0]:
    if x < log_e[0]:
      return Speedup(rate / front[0].rate, "lower bound", front[0].rate)
    return Speedup(rate / front[0].rate, "matched", front[0].rate)
  if x >= log_e[-1]:
    kind = "matched" if x == log_e[-1] else "fastest"
    return Speedup(rate / front[-1].rate, kind, front[-1].rate)
  baseline = float(np.exp(np.interp(x, log_e, log_r)))
  return Speedup(rate / baseline, "matched", baseline)
