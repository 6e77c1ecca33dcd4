"""The entry points run end to end and fail clearly on bad flags."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from experiments import cli
from pgmoe_jax import data
from pgmoe_jax import inference
from pgmoe_jax import potentials
from pgmoe_jax.grid import Grid
from pgmoe_jax.training import train_and_evaluate
from pgmoe_jax.workflows import grid_runs
from pgmoe_jax.workflows import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)


@pytest.mark.slow  # fast tier: test_solvers checks the solvers agree in-process
def test_demo_solves_every_family_and_solvers_agree():
  out = run_module("experiments.demo", "--grid=12,14", "--length=10",
                   "--num=1")
  assert out.returncode == 0, out.stderr
  rows = [line.split() for line in out.stdout.splitlines()
          if line.split() and line.split()[0] in (
              "box_well", "double_well", "gaussian_wells", "harmonic",
              "random_smooth", "woods_saxon")]
  assert len(rows) == 6
  for row in rows:
    gap, residual, d_e0 = float(row[3]), float(row[4]), float(row[8])
    assert gap > 0 and residual < 1e-7 and d_e0 < 1e-8


@pytest.mark.slow  # CI time: 40-70 s of benchmarks' smoke runs
def test_benchmark_quick_prints_tables():
  out = run_module("experiments.benchmark",
                   "--what=matvec,solvers,sine,datagen,predict", "--quick",
                   "--repeats=1")
  assert out.returncode == 0, out.stderr
  assert "## matvec" in out.stdout and "## solvers" in out.stdout
  assert "## datagen" in out.stdout and "Loader:" in out.stdout
  assert "jax lobpcg, one by one" in out.stdout
  # The FFT sine transform against the dense one, both dtypes.
  assert "## sine" in out.stdout and "| 16 | 4096 | float64 |" in out.stdout
  # Predictions against LOBPCG.
  assert "## predict" in out.stdout and "| 16 | 27,360 |" in out.stdout


@pytest.mark.slow  # about 55 s; what they time is tested in test_multihost,
# test_population and test_fixed_iters.
def test_benchmark_quick_multihost_population_gate():
  out = run_module("experiments.benchmark", "--what=multihost,population,"
                   "gate", "--quick", "--repeats=1")
  assert out.returncode == 0, out.stderr
  # The stream is drawn where it is used: half the batch per device.
  assert "| 2 x 1 |" in out.stdout and "32 of 64 rows (sharded)" in out.stdout
  # Populations of 1, 2 and 4 members.
  assert "## population" in out.stdout and "| 2 |" in out.stdout
  # The gate's front: both solvers and a coarse-to-fine start chain, with
  # the envelope's energy error.
  assert "## gate" in out.stdout and "| 8 | fixed | 6 | - |" in out.stdout
  assert "| 8 | lobpcg | 6 | - |" in out.stdout
  assert "| 16 | fixed | 1 | 8 (2, 2) |" in out.stdout


def test_benchmark_unknown_name_lists_known():
  out = run_module("experiments.benchmark", "--what=flops")
  assert out.returncode != 0
  assert ("Unknown benchmark(s) flops; known: matvec, solvers, datagen, "
          "multihost" in out.stderr)


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


GENERATE = ("experiments.generate_data", "--grid=12", "--length=10",
            "--num=40", "--shard_size=1", "--workers=1")


def read_tree(path):
  """The dataset's bytes (not temporary files, nor the lock's holder)."""
  return {name: open(os.path.join(path, name), "rb").read()
          for name in sorted(os.listdir(path))
          if not name.endswith(".tmp") and name != ".lock"}


# Fast tier: test_data::test_interrupted_generation_resumes_to_identical_bytes.
@pytest.mark.slow
def test_generate_data_killed_and_rerun_gives_identical_bytes(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  whole = tmp_path / "a" / "train"
  out = run_module(*GENERATE, f"--out={whole}")
  assert out.returncode == 0, out.stderr
  assert "40 samples, 0 failed, complete" in out.stdout

  killed = tmp_path / "b" / "train"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-m", *GENERATE, f"--out={killed}"],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  meta = killed / "meta.json"
  deadline = time.time() + 120
  shards = 0
  while time.time() < deadline and proc.poll() is None:
    try:
      shards = len(json.loads(meta.read_text())["shards"])
    except (OSError, ValueError):
      shards = 0
    if shards >= 3:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert 3 <= shards < 40, "the run was not interrupted mid-way"
  out = run_module(*GENERATE, f"--out={killed}")
  assert out.returncode == 0, out.stderr
  assert read_tree(killed) == read_tree(whole)


@pytest.mark.slow  # fast tier: test_mixture::test_family_splits
def test_generate_data_universal_splits(tmp_path):
  out = run_module("experiments.generate_data", "--universal_splits",
                   "--grid=6", "--num_eval=1", "--workers=1",
                   f"--out={tmp_path}")
  assert out.returncode == 0, out.stderr
  expected = {f"test_{name}" for name in potentials.UNIVERSAL} | {
      "val_mixture", "test_mixture"}
  assert set(os.listdir(tmp_path)) == expected
  assert out.stdout.count("1 samples, 0 failed, complete") == len(expected)
  out = run_module("experiments.generate_data", "--universal_splits",
                   "--num=3", f"--out={tmp_path / 'x'}")
  assert "--num do not apply to --universal_splits" in out.stderr


def test_generate_data_refuses_other_dataset_and_bad_flags(tmp_path):
  path = tmp_path / "train"
  assert run_module(*GENERATE[:3], "--num=2", f"--out={path}").returncode == 0
  out = run_module(*GENERATE[:3], "--num=3", f"--out={path}")
  assert out.returncode != 0
  assert "holds a different dataset (differs in: num_samples)" in out.stderr
  out = run_module(*GENERATE[:3], "--num=2", "--family=gaussian",
                   f"--out={tmp_path / 'x'}")
  assert "known families: box_well, double_well" in out.stderr
  out = run_module(*GENERATE[:3], "--num=2", "--ranges={depth: 3}",
                   f"--out={tmp_path / 'y'}")
  assert "--ranges is not valid JSON" in out.stderr
  out = run_module(*GENERATE[:3], "--num=2", "--ranges={\"depth\": [10, 5]}",
                   f"--out={tmp_path / 'z'}")
  assert "depth=(10, 5) has low 10 > high 5" in out.stderr
  assert not (tmp_path / "z").exists()  # refused before anything is written


def test_reproduce_refuses_an_unknown_part_and_a_bad_coarse_grid():
  out = run_module("experiments.reproduce", "--parts=grid64")
  assert out.returncode != 0
  assert "known: scaling, warm_start, grid" in out.stderr
  out = run_module("experiments.reproduce", "--parts=grid", "--grid=16",
                   "--coarse=5", "--data_root=/nonexistent/never/written")
  assert out.returncode != 0
  assert "--coarse=5 must divide --grid=16" in out.stderr


def test_reproduce_stopped_by_a_signal_says_so_in_one_line():
  # A grid of runs stopped by SIGTERM (the sweep runner has stopped its
  # trials): one line and the shell's exit code, as experiments.sweep.
  code = textwrap.dedent("""
      import signal, sys
      from absl import app
      from experiments import reproduce
      from pgmoe_jax.workflows import sweep_runner

      def stopped():
        raise sweep_runner.Interrupted(signal.SIGTERM)

      reproduce.PARTS["grid"] = stopped
      sys.argv = ["reproduce", "--parts=grid"]
      app.run(reproduce.main,
              flags_parser=reproduce.cli.flags_parser("reproduce"))
      """)
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       env=dict(os.environ, JAX_PLATFORMS="cpu",
                                PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=300,
                       check=False)
  assert out.returncode == 128 + 15, out.stderr[-3000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1] == (
      "reproduce: SIGTERM: the sweep stopped; rerun the same command to "
      "continue it.")


@pytest.mark.slow  # `make results` runs this part
def test_reproduce_scaling():
  out = run_module("experiments.reproduce", "--parts=scaling",
                   "--sizes=16,32")
  assert out.returncode == 0, out.stderr
  rows = [line for line in out.stdout.splitlines()
          if line.startswith("| 16 ") or line.startswith("| 32 ")]
  assert len(rows) == 2
  # Dense parameters grow with the grid; PG-MoE's barely move.
  dense = [int(r.split("|")[2].replace(",", "")) for r in rows]
  pgmoe = [int(r.split("|")[3].replace(",", "")) for r in rows]
  assert dense[1] > 2 * dense[0] and pgmoe[1] < 1.5 * pgmoe[0]
  assert "gate 'fixed'" in out.stdout  # default.py's gate, not the class's


def test_grid_runs_pin_the_gate_solver_when_asked():
  base = sweep.load_config_file(os.path.join(ROOT, "experiments", "configs",
                                             "default.py"))
  grid = Grid((16, 16), 20.0)
  plain = grid_runs.run_overrides("pgmoe_energy", 16, grid, "d", 20, base)
  assert "model.envelope_solver" not in plain  # the base config's gate
  pinned = grid_runs.run_overrides("pgmoe_energy", 16, grid, "d", 20, base,
                                   envelope_solver="lobpcg")
  config = sweep.apply_overrides(base, pinned)
  assert config.model.envelope_solver == "lobpcg"
  dense = grid_runs.run_overrides("dense_sup", 16, grid, "d", 20, base,
                                  envelope_solver="lobpcg")
  assert "model.envelope_solver" not in dense


@pytest.mark.slow  # CI time: 50-85 s; `make results` runs this workflow
def test_reproduce_grid_runs_resumes_and_writes_tables(tmp_path):
  args = ("experiments.reproduce", "--parts=grid", "--grid=16",
          "--train_sizes=16", "--steps=20", "--num_eval=8", "--coarse=4",
          "--variants=pgmoe_energy,dense_sup", "--eval_splits=test_interp",
          f"--data_root={tmp_path / 'data'}", f"--out={tmp_path / 'out'}")
  out = run_module(*args)
  assert out.returncode == 0, out.stderr
  table = (tmp_path / "out" / "results.md").read_text()
  assert "PG-MoE envelope 4x4" in table
  config = json.loads((tmp_path / "out" / "runs" / "pgmoe_energy_n16" /
                       "config.json").read_text())
  assert config["model"]["coarse"] == 4
  assert "| pgmoe_energy | 16 | test_interp |" in table
  assert "| dense_sup | 16 | test_interp |" in table
  rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
  assert len(rows) == 3 and rows[0].startswith("variant,train_size,split")
  assert (tmp_path / "out" / "error_vs_size.png").stat().st_size > 5000
  # Each run was an experiments.train trial of the sweep runner, the same
  # run as training its config in-process.
  log = (tmp_path / "out" / "logs" / "pgmoe_energy_n16.log").read_text()
  assert "experiments.train" in log and "--config.model.coarse=4" in log
  run_dir = tmp_path / "out" / "runs" / "pgmoe_energy_n16"
  base = sweep.load_config_file(os.path.join(ROOT, "experiments", "configs",
                                             "default.py"))
  overrides = grid_runs.run_overrides("pgmoe_energy", 16, Grid((16, 16), 20.0),
                                      str(tmp_path / "data"), 20, base, 4)
  alone = train_and_evaluate(sweep.apply_overrides(base, overrides),
                             str(tmp_path / "alone"))
  trained = inference.load_model(str(run_dir), which="latest")
  for a, b in zip(jax.tree.leaves(trained.params),
                  jax.tree.leaves(alone.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A rerun trains nothing: the finished runs are skipped.
  before = (run_dir / "metrics.jsonl").stat().st_mtime_ns
  assert run_module(*args).returncode == 0
  assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == before
  assert (tmp_path / "out" / "logs" / "pgmoe_energy_n16.log").read_text(
      ) == log
  # Warm start from the tiny model: every start converges to the reference
  # energies, and the exact state in float32 needs far fewer iterations than
  # the cold start (the ceiling any float32 predictor could reach).
  out = run_module("experiments.reproduce", "--parts=warm_start", "--num=4",
                   "--repeats=1", f"--workdir={run_dir}",
                   f"--data={tmp_path / 'data' / 'test_interp'}")
  assert out.returncode == 0, out.stderr
  rows, history = {}, {}
  for line in out.stdout.splitlines():
    if line.startswith("| "):  # the iterations table, then the history
      cells = line.split("|")
      (history if cells[1].strip() in rows else rows)[cells[1].strip()] = (
          cells[2:-1])
  for label in ("cold: lowest kinetic modes (default)", "cold: random",
                "warm: `init=model.predict(V)`",
                "warm: exact state rounded to float32"):
    assert rows[label][5].strip() == "4/4", (label, rows[label])
    assert float(rows[label][4]) < 1e-7
  cold = float(rows["cold: lowest kinetic modes (default)"][2])
  exact = float(rows["warm: exact state rounded to float32"][2])
  assert exact < cold / 2
  # The residual after 1, 2, 4, 8 and 12 iterations falls from every start.
  for label in ("cold: lowest kinetic modes (default)",
                "warm: exact state rounded to float32"):
    residuals = [float(x) for x in history[label][:5]]
    assert residuals[-1] < residuals[0] / 100, (label, residuals)
  # Ablation: zeroing the experts leaves the gate's envelope, a different
  # prediction (20 steps do not make it a better one); a dense run is refused
  # by name.
  out = run_module("experiments.reproduce", "--parts=ablation",
                   f"--workdir={run_dir}",
                   f"--data={tmp_path / 'data' / 'test_interp'}")
  assert out.returncode == 0, out.stderr
  rows = {line.split("|")[1].strip(): line.split("|")[2:-1]
          for line in out.stdout.splitlines() if line.startswith("| ")}
  full = float(rows["PG-MoE"][2].replace(",", ""))
  gate = float(rows["gate alone (experts off)"][2].replace(",", ""))
  assert full > 0 and gate > 0 and full != gate
  out = run_module("experiments.reproduce", "--parts=ablation",
                   f"--workdir={run_dir.parent / 'dense_sup_n16'}",
                   f"--data={tmp_path / 'data' / 'test_interp'}")
  assert out.returncode != 0 and "holds a dense model" in out.stderr


USER_FAMILY = '''
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

def ring_wells(key, grid, batch_shape=(), *, depth=(1.0, 5.0),
               radius=(2.0, 4.0), dtype: DTypeLike | None = None):
  """A user's family: a ring-shaped well of random depth and radius."""
  batch = (batch_shape,) if isinstance(batch_shape, int) else tuple(
      batch_shape)
  u = jax.random.uniform(key, batch + (2,), dtype or jnp.float32)
  a = depth[0] + (depth[1] - depth[0]) * u[..., 0]
  r0 = radius[0] + (radius[1] - radius[0]) * u[..., 1]
  x, y = jnp.meshgrid(*[jnp.asarray(c, u.dtype) for c in
                        grid.coordinates()], indexing="ij")
  r = jnp.sqrt(x**2 + y**2)
  shape = batch + (1, 1)
  return -a.reshape(shape) * jnp.exp(-(r - r0.reshape(shape))**2)
'''


# Fast tier: test_reliability's
# test_a_broken_user_family_is_one_line_from_generate_data.
@pytest.mark.slow
def test_a_users_own_family_without_editing_the_package(tmp_path):
  (tmp_path / "userfam.py").write_text(USER_FAMILY)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")

  def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)

  path = tmp_path / "ring"
  out = run("experiments.generate_data", "--family=userfam:ring_wells",
            "--grid=16", "--num=6", f"--out={path}",
            '--ranges={"depth": [2, 3]}')
  assert out.returncode == 0, out.stderr
  # Opening the dataset needs no family code (this process cannot import
  # userfam); the stored spec names the family and its full ranges.
  ds = data.open_dataset(str(path))
  assert ds.spec.family == "userfam:ring_wells" and len(ds) == 6
  assert dict(ds.spec.ranges)["depth"] == (2, 3)
  assert dict(ds.spec.ranges)["radius"] == (2.0, 4.0)
  assert float(np.min(ds.potentials)) < -1.0
  # Label-free training streams the same family from the config.
  out = run("experiments.train", "--config=experiments/configs/test.py",
            f"--workdir={tmp_path / 'run'}", "--config.train.num_steps=3",
            "--config.optim.warmup_steps=1",
            "--config.data.family=userfam:ring_wells")
  assert out.returncode == 0, out.stderr[-2000:]
  # A name that cannot be imported is named, with what to do.
  out = run("experiments.generate_data", "--family=nosuchmod:fn",
            "--grid=16", "--num=2", f"--out={tmp_path / 'none'}")
  assert out.returncode != 0
  assert "cannot import module 'nosuchmod'" in out.stderr
  assert "Traceback" not in out.stderr
