"""The entry points run end to end and fail clearly on bad flags."""

import os
import subprocess
import sys

import pytest

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)


def test_demo_solves_every_family_and_solvers_agree():
  out = run_module("experiments.demo", "--grid=12,14", "--length=10",
                   "--num=1")
  assert out.returncode == 0, out.stderr
  rows = [line.split() for line in out.stdout.splitlines()
          if line.split() and line.split()[0] in (
              "box_well", "double_well", "gaussian_wells", "harmonic",
              "random_smooth")]
  assert len(rows) == 5
  for row in rows:
    gap, residual, d_e0 = float(row[3]), float(row[4]), float(row[8])
    assert gap > 0 and residual < 1e-7 and d_e0 < 1e-8


def test_benchmark_quick_prints_tables():
  out = run_module("experiments.benchmark", "--what=matvec,solvers",
                   "--quick", "--repeats=1")
  assert out.returncode == 0, out.stderr
  assert "## matvec" in out.stdout and "## solvers" in out.stdout
  assert "jax lobpcg, one by one" in out.stdout


def test_benchmark_unknown_name_lists_known():
  out = run_module("experiments.benchmark", "--what=flops")
  assert out.returncode != 0
  assert "Unknown benchmark(s) flops; known: matvec, solvers" in out.stderr


def test_grid_flags():
  assert cli.grid_from_flags("32", "20", ndim=2).shape == (32, 32)
  grid = cli.grid_from_flags("32,48", "20,24")
  assert grid.shape == (32, 48) and grid.length == (20.0, 24.0)
  with pytest.raises(ValueError, match="--grid='32x32'"):
    cli.grid_from_flags("32x32", "20")
  with pytest.raises(ValueError, match="--length='abc'"):
    cli.grid_from_flags("32", "abc")
  with pytest.raises(ValueError, match="at least 3 points"):
    cli.grid_from_flags("2", "20")
