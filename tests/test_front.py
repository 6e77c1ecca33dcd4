"""The cascade's front and matched-accuracy speed-ups (DESIGN's definition)."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import potentials
from pgmoe_jax import solvers
from pgmoe_jax.evaluation import front
from pgmoe_jax.solvers.coarse_to_fine import check_iters
from pgmoe_jax.solvers.coarse_to_fine import check_sweeps
from pgmoe_jax.workflows import front as front_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = front.Point


def test_pareto_front_drops_dominated_points():
  points = [P("a", 1.0, 100.0), P("b", 0.1, 50.0), P("c", 0.5, 40.0),
            P("d", 0.01, 10.0), P("e", 2.0, 90.0)]
  assert [p.name for p in front.pareto_front(points)] == ["d", "b", "a"]


def test_matched_speedup_interpolates_in_log_log():
  points = [P("slow", 0.01, 100.0), P("fast", 1.0, 1000.0)]
  # dE 0.1 is halfway in log between 0.01 and 1: the front runs 10**2.5.
  up = front.matched_speedup(0.1, 632.4555320336759, points)
  assert up.kind == "matched"
  assert up.value == pytest.approx(2.0, rel=1e-9)
  assert up.baseline_rate == pytest.approx(10**2.5 / 1, rel=1e-9)
  # At a setting's own dE: that setting's rate.
  assert front.matched_speedup(1.0, 500.0, points).value == pytest.approx(0.5)
  # More accurate than every setting: against the most accurate (a lower
  # bound); less accurate than every setting: against the fastest.
  below = front.matched_speedup(0.001, 300.0, points)
  assert (below.kind, below.value) == ("lower bound", 3.0)
  assert str(below) == ">=3.00x"
  above = front.matched_speedup(5.0, 300.0, points)
  assert (above.kind, above.value) == ("fastest", 0.3)
  # A dominated setting does not enter the interpolation.
  with_dominated = points + [P("bad", 0.1, 10.0)]
  assert front.matched_speedup(0.1, 632.4555320336759,
                               with_dominated).value == pytest.approx(2.0)
  with pytest.raises(ValueError, match="at least one"):
    front.matched_speedup(0.1, 1.0, [])


def test_settings_fit_the_grid():
  assert front.cascade_settings(Grid((64, 64), 20.0)) == front.SETTINGS[2]
  assert front.cascade_settings(Grid((32, 32, 32), 20.0)) == front.SETTINGS[3]
  # 8x8: two halvings leave 2 points, so the three-level settings go.
  small = front.cascade_settings(Grid((8, 8), 20.0))
  assert small and all(len(s.iters) <= 2 for s in small)
  assert front.setting_name((4, 2, 1)) == "cascade (4,2,1)"
  swept = front.Setting((4, 2, 1), (0, 4, 8))
  assert front.setting_name(swept) == "cascade (4,2,1) sweeps (0,4,8)"
  assert front.Setting((6, 1), (0, 0)).name == "cascade (6,1)"
  # Every setting of the grid is one the cascade accepts, and the grid
  # holds smoothed settings on both dimensions.
  for dim, settings in front.SETTINGS.items():
    assert any(s.sweeps for s in settings), dim
    for s in settings:
      check_iters(s.iters)
      check_sweeps(s.sweeps, len(s.iters))


def test_grid_spans_the_coarse_iterations_before_sweeps():
  # A learned cascade that spends fewer coarse iterations before the
  # sweeps (0, 4, 8) meets the untrained cascade of the same shape: the
  # 2-D grid holds (k, 0, 0) with those sweeps for every k from 1 to 4.
  swept = {s.iters for s in front.SETTINGS[2] if s.sweeps == (0, 4, 8)}
  assert {(k, 0, 0) for k in range(1, 5)} <= swept
  # At 32^3 the same from 8^3, with one 16^3 iteration after one or two
  # at 8^3 (the learned 3-D cascade's shape is (1, 1, 0)), and from 16^3
  # alone before the sweeps (0, 8).
  swept = {s.iters for s in front.SETTINGS[3] if s.sweeps == (0, 4, 8)}
  assert {(k, 0, 0) for k in range(1, 5)} | {(1, 1, 0), (2, 1, 0)} <= swept
  swept = {s.iters for s in front.SETTINGS[3] if s.sweeps == (0, 8)}
  assert {(k, 0) for k in (1, 2, 3, 6)} <= swept


def test_3d_grid_spans_the_16_cubed_iterations_after_one_at_8_cubed():
  # At 32^3 each 16^3 iteration after one at 8^3 costs a few percent of
  # the batch and finds the right well far more often (the p90 falls
  # about 2x per iteration on gaussian wells), so a model with k of them
  # meets the untrained cascade of its shape: (1, k, 0) for k from 1 to
  # 5 with the sweeps (0, 4, 8), and from 1 to 3 with (0, 4, 16).
  grid = front.SETTINGS[3]
  assert {(1, k, 0) for k in range(1, 6)} <= {
      s.iters for s in grid if s.sweeps == (0, 4, 8)}
  assert {(1, k, 0) for k in range(1, 4)} <= {
      s.iters for s in grid if s.sweeps == (0, 4, 16)}


def test_2d_grid_spans_the_16x16_iterations_after_8x8_ones():
  # The same at 64x64 from 8x8: one or two 8x8 iterations, then one or two
  # at 16x16, before the sweeps (0, 0, 4, 8) (random landscapes' p90 3.8
  # mHa for (3,0,0) with sweeps (0,4,8), 2.4 for (2,2,0,0) at about its
  # cost).
  swept = {s.iters for s in front.SETTINGS[2] if s.sweeps == (0, 0, 4, 8)}
  assert {(1, 1, 0, 0), (1, 2, 0, 0), (2, 1, 0, 0), (2, 2, 0, 0)} <= swept


class CascadeModel:
  """A stand-in model: a cascade setting behind the predictor interface."""

  def __init__(self, grid, iters):
    self.grid = grid
    self.params = ()
    fn = front_run.cascade_fn(grid, iters)
    self._apply = lambda params, v: fn(v)


def test_measure_split_scores_and_times_every_candidate():
  grid = Grid((8, 8), 20.0)
  v = np.asarray(potentials.gaussian_wells(jax.random.key(0), grid, (12,)))
  e0 = np.asarray(solvers.ground_state(v, grid)[0])
  # A "model" that is the (6, 2) setting itself has speed-up about 1.
  models = {"copy": CascadeModel(grid, (6, 2))}
  result = front_run.measure_split("wells", v, e0, grid, models, batch=8,
                                   repeats=7)
  names = [r.name for r in result.rows]
  assert names[0] == "copy" and len(names) == 1 + len(
      front.cascade_settings(grid))
  by_name = {r.name: r for r in result.rows}
  copy, same = by_name["copy"], by_name["cascade (6,2)"]
  # Same function, same scores; dE against float64 labels, >= 0.
  assert copy.median_mha == pytest.approx(same.median_mha, rel=1e-6)
  assert all(r.median_mha > -1e-6 and r.p90_mha >= r.median_mha - 1e-9
             for r in result.rows)
  # More fine iterations, smaller error; so do sweeps on the fine start
  # in place of a fine iteration.
  assert by_name["cascade (6,3)"].median_mha < same.median_mha
  assert by_name["cascade (6,1) sweeps (0,8)"].median_mha < same.median_mha
  assert copy.speedup_median is not None and copy.speedup_p90 is not None
  table = front_run.format_front(result)
  assert "| copy |" in table and "speed-up at median dE" in table
  with pytest.raises(ValueError, match="at least 7"):
    front_run.measure_split("wells", v, e0, grid, models, repeats=3)
  with pytest.raises(ValueError, match="works on"):
    front_run.measure_split("wells", v, e0, grid,
                            {"x": CascadeModel(Grid((16, 16), 20.0), (4,))})


def run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        check=False, env=dict(os.environ, JAX_PLATFORMS="cpu"))


# Fast tier: test_measure_split_scores_and_times_every_candidate.
@pytest.mark.slow
def test_front_command_on_a_labelled_split(tmp_path):
  split = str(tmp_path / "split")
  made = run("experiments.generate_data", "--family=gaussian_wells",
             "--grid=16", "--num=10", "--workers=1", f"--out={split}")
  assert made.returncode == 0, made.stderr
  out = run("experiments.benchmark", "--what=front", f"--data={split}",
            "--front_batch=8", "--front_repeats=7",
            f"--front_out={tmp_path / 'out'}")
  assert out.returncode == 0, out.stderr
  assert "| cascade (6,2) " in out.stdout and "10 scored" in out.stdout
  assert os.path.exists(tmp_path / "out" / "front.md")
  assert os.path.exists(tmp_path / "out" / "front.png")
  missing = run("experiments.benchmark", "--what=front")
  assert missing.returncode != 0 and "needs --data" in missing.stderr
