"""Timing: like with like on both sides of every speed-up, compilation out.

Fake functions stand in for models and solvers: their first call sleeps (as
compiling would) and every call is counted, so a figure that includes the
first call, or a reference timed fewer times than the model, shows.
"""

import logging
import time
import types

import jax
import numpy as np
import pytest

from helpers import import_script
from pgmoe_jax import Grid
from pgmoe_jax import timing
from pgmoe_jax.evaluation import scorer

benchmark = import_script("benchmark")

COMPILE_S = 0.4  # what a fake's first call costs (a stand-in for compiling)


class FirstCallSlow:
  """A callable whose first call per key sleeps (compiles); counts calls."""

  def __init__(self, make=lambda *args, **kwargs: 0.0, seconds=COMPILE_S):
    self.calls = 0
    self.per_key = {}
    self._make = make
    self._seconds = seconds

  @property
  def keys(self):
    return set(self.per_key)

  def __call__(self, *args, key=None, **kwargs):
    self.calls += 1
    if key not in self.per_key:
      time.sleep(self._seconds)
    self.per_key[key] = self.per_key.get(key, 0) + 1
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


# --------------------------------------------------------------------------
# The benchmarks (experiments/benchmark.py).


class _Compiles(logging.Handler):
  """Counts the programs JAX compiles while it is attached."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.count = 0

  def emit(self, record):
    if record.getMessage().startswith("Compiling "):
      self.count += 1


def _count_compiles(fn):
  handler = _Compiles()
  logger = logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      fn()
  finally:
    logger.removeHandler(handler)
  return handler.count


def test_scipy_lobpcg_compiles_only_on_its_first_call():
  grid = Grid((8, 8), 20.0)
  v = np.random.default_rng(0).uniform(-1, 0, (1,) + grid.shape)
  first = _count_compiles(lambda: benchmark._scipy_lobpcg(v, grid, 1e-6))
  again = _count_compiles(lambda: benchmark._scipy_lobpcg(v, grid, 1e-6))
  assert first > 0 and again == 0


def _fake_solver_result(v, chunk_size=None):
  del chunk_size
  b = len(v)
  return types.SimpleNamespace(
      energies=np.zeros((b, 1)), iterations=np.ones(b),
      residuals=np.zeros((b, 1)), converged=np.ones(b, bool))


def test_bench_solvers_times_every_row_alike(monkeypatch, capsys):
  solve_calls = FirstCallSlow(_fake_solver_result, seconds=0.05)
  scipy_calls = FirstCallSlow(
      lambda v: (np.zeros(len(v)), np.ones(len(v))), seconds=0.05)

  def solve(v, grid, method="eigsh", tol=None, chunk_size=None, **kwargs):
    del grid, kwargs
    key = (method, np.shape(v), str(np.asarray(v).dtype), tol, chunk_size)
    return solve_calls(v, key=key)

  monkeypatch.setattr(benchmark.solvers, "solve", solve)
  monkeypatch.setattr(  # the real sampler compiles for seconds
      benchmark.potentials, "gaussian_wells",
      lambda key, grid, shape: np.zeros(tuple(shape) + grid.shape))
  monkeypatch.setattr(benchmark, "_scipy_lobpcg",
                      lambda v, grid, tol: scipy_calls(v, key="scipy"))
  repeats = 3
  benchmark.bench_solvers(quick=True, repeats=repeats)
  out = capsys.readouterr().out
  # Each timed row: its warm-up and `repeats` timed calls, eigsh and SciPy
  # (the reference side of the speed-ups) as often as the JAX rows.
  assert scipy_calls.calls == 1 + repeats
  timed_keys = [k for k in solve_calls.keys if k[3] is not None]
  assert len(timed_keys) >= 4
  for key in timed_keys:
    assert solve_calls.per_key[key] == 1 + repeats, key
  # No row's figure holds a slow first call: ms per state (2 states) and
  # states/s of the tolerance table (4 states).
  rows = [line.split("|") for line in out.splitlines()
          if line.startswith("| 16x16 |")]
  per_state = [float(r[3]) for r in rows if len(r) == 9]
  states_per_s = [float(r[6].replace(",", "")) for r in rows if len(r) == 12]
  assert len(per_state) == 4 and len(states_per_s) >= 5
  assert max(per_state) < 1e3 * 0.05 / 2 / 4
  assert min(states_per_s) > 4 / (0.05 / 4)
