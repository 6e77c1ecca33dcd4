"""Timing: like with like on both sides of every speed-up, compilation out.

Fake functions stand in for models and solvers: their first call sleeps (as
compiling would) and every call is counted, so a figure that includes the
first call, or a reference timed fewer times than the model, shows.
"""

import time
import types

import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import timing
from pgmoe_jax.evaluation import scorer

COMPILE_S = 0.4  # what a fake's first call costs (a stand-in for compiling)


class FirstCallSlow:
  """A callable whose first call per key sleeps ``COMPILE_S``; counts calls."""

  def __init__(self, make=lambda *args, **kwargs: 0.0):
    self.calls = 0
    self.keys = set()
    self._make = make

  def __call__(self, *args, key=None, **kwargs):
    self.calls += 1
    if key not in self.keys:
      self.keys.add(key)
      time.sleep(COMPILE_S)
    return self._make(*args, **kwargs)


def test_timed_best_excludes_the_warmup_and_counts_repeats():
  fn = FirstCallSlow(lambda: "result")
  out, seconds = timing.timed_best(fn, 3)
  assert out == "result"
  assert fn.calls == 4  # one warm-up, three timed
  assert seconds < COMPILE_S / 4
  assert timing.best_time(FirstCallSlow(), 2) < COMPILE_S / 4


def test_timed_best_without_warmup_times_the_first_call():
  fn = FirstCallSlow(lambda: 7)
  out, seconds = timing.timed_best(fn, 1, warmup=False)
  assert out == 7 and fn.calls == 1 and seconds >= COMPILE_S


@pytest.mark.parametrize("repeats", [0, -1, 1.5, True])
def test_timed_best_refuses_bad_repeats(repeats):
  with pytest.raises(ValueError, match="repeats"):
    timing.timed_best(lambda: 0, repeats)


def _fake_solve(solve_calls):
  """A stand-in for ``solvers.solve``: counts calls, first call slow."""

  def solve(v, grid, method="eigsh", chunk_size=None, **kwargs):
    del grid, kwargs
    return types.SimpleNamespace(energies=solve_calls(
        np.zeros((len(v), 1)), key=(method, np.shape(v), chunk_size)))
  return solve


def test_reference_speed_warms_up_and_takes_best_of_repeats(monkeypatch):
  calls = FirstCallSlow(lambda x: x)
  monkeypatch.setattr(scorer.solvers, "solve", _fake_solve(calls))
  grid = Grid((8, 8), 20.0)
  potentials = np.zeros((3,) + grid.shape)
  rate = scorer.reference_speed(potentials, grid, "lobpcg", repeats=4)
  assert calls.calls == 3 * (1 + 4)  # a warm-up pass and four timed passes
  assert rate > 3 / (COMPILE_S / 4)  # the slow first call is not timed


class _Data:
  """The little of a :class:`pgmoe_jax.data.Dataset` evaluation reads."""

  def __init__(self, grid, n):
    rng = np.random.default_rng(0)
    self.grid, self.name, self.path = grid, "fake", None
    self.potentials = rng.uniform(0, 1, (n,) + grid.shape)
    self.psi0 = np.ones((n,) + grid.shape)
    self.E0 = np.zeros(n)  # pylint: disable=invalid-name
    self.E1 = None  # pylint: disable=invalid-name
    self.index = np.arange(n)

  def __len__(self):
    return len(self.E0)


class _Model:
  """A predictor (flat states) whose calls are counted."""

  def __init__(self, grid):
    self.grid, self.num_params = grid, 0
    self.calls = FirstCallSlow(lambda v: np.ones(np.shape(v)))

  def predict(self, V):  # pylint: disable=invalid-name
    return self.calls(V, key=np.shape(V))


@pytest.mark.parametrize("timing_repeats", [1, 3])
def test_evaluation_times_reference_as_often_as_the_model(
    monkeypatch, timing_repeats):
  solve_calls = FirstCallSlow(lambda x: x)
  monkeypatch.setattr(scorer.solvers, "solve", _fake_solve(solve_calls))
  grid = Grid((8, 8), 20.0)
  dataset, model, num_reference = _Data(grid, 6), _Model(grid), 2
  result = scorer.evaluate_predictor(model, dataset, batch_size=6,
                                     num_reference=num_reference,
                                     timing_repeats=timing_repeats)
  scoring_calls = 1  # one batch of 6
  model_runs = model.calls.calls - scoring_calls  # warm-up and timed calls
  reference_passes = solve_calls.calls // num_reference
  assert model_runs == 1 + timing_repeats
  assert reference_passes == model_runs
  # Neither side's slow first call is in its figure.
  assert result.reference_solves_per_s > num_reference / (COMPILE_S / 4)
  assert result.predictions_per_s > 6 / (COMPILE_S / 4)
