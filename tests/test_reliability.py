"""Reliability probes: damaged checkpoints, interrupted and concurrent
writers, edited metadata, and clear errors where a traceback used to be.

Each test reproduces one probe; the solver's wrong answers (an excited
or unconverged state flagged as converged) are tested in test_solvers.py.
"""

import importlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import test as test_config
import helpers
from pgmoe_jax import Grid
from pgmoe_jax import data
from pgmoe_jax import energy
from pgmoe_jax import ground_state
from pgmoe_jax import inference
from pgmoe_jax import potentials
from pgmoe_jax import residual
from pgmoe_jax import solve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# orbax leaves its other reads of an unreadable checkpoint as coroutines;
# pytest keeps the failed frames alive and reports them as unraisable
# whenever they are collected, in whatever test runs then (a plain script
# prints nothing: pgmoe_jax collects them quietly).
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

ENV = dict(os.environ, JAX_PLATFORMS="cpu")
TEST_CONFIG = "experiments/configs/test.py"


def run_module(*args, env=None):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT,
                        env=env or ENV, capture_output=True, text=True,
                        timeout=300, check=False)


def one_line_error(out, prog, *fragments):
  assert out.returncode != 0, out.stdout[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith(f"{prog}: error: "), out.stderr[-2000:]
  for fragment in fragments:
    assert fragment in last, last
  return last


def tiny_config(**train):
  config = test_config.get_config()
  config.train.num_steps = 20
  config.train.checkpoint_every_steps = 10
  config.train.keep_checkpoints = 3
  config.train.update(train)
  return config


@pytest.fixture()
def trained(tmp_path):
  """A tiny label-free run with checkpoints at steps 10 and 20."""
  train_and_evaluate = importlib.import_module(
      "pgmoe_jax.training").train_and_evaluate
  workdir = str(tmp_path / "run")
  train_and_evaluate(tiny_config(), workdir)
  return workdir


def chunk_files(workdir, step):
  """The params data files of a checkpoint, largest first."""
  root = os.path.join(workdir, "checkpoints", str(step), "params")
  files = [os.path.join(d, f) for d, _, names in os.walk(root)
           for f in names if "/d/" in os.path.join(d, f) + "/"
           or os.sep + "d" + os.sep in os.path.join(d, f)]
  return sorted(files, key=os.path.getsize, reverse=True)


def saved_steps(workdir):
  """The complete checkpoint steps on disk (orbax's temporary folders of
  an unfinished save excluded)."""
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(folder) if s.isdigit())


def flip_bytes(path, count=400):
  with open(path, "r+b") as f:
    blob = bytearray(f.read())
    start = len(blob) // 2 - count // 2
    for i in range(start, start + count):
      blob[i] ^= 0x5A
    f.seek(0)
    f.write(blob)


def predictions(workdir, step=None, **kwargs):
  grid = Grid((16, 16), 20.0)
  v = np.asarray(potentials.gaussian_wells(jax.random.key(3), grid, (4,)),
                 np.float32)
  model = inference.load_model(workdir, **kwargs)
  return model.step, np.asarray(model.predict(v))


# --------------------------------------------------------------------------
# Checkpoints prove their integrity and fall back.


@pytest.mark.parametrize("damage", [
    # Fast tier: a truncated file; a flipped byte in the slow tier.
    pytest.param("flip", marks=pytest.mark.slow), "truncate"])
def test_damaged_checkpoint_is_named_and_skipped(trained, damage):
  checkpoint = importlib.import_module("pgmoe_jax.rundir.checkpoint")
  files = chunk_files(trained, 20)
  assert files, os.listdir(os.path.join(trained, "checkpoints", "20"))
  if damage == "flip":
    flip_bytes(files[0])  # same size, different bytes
  else:
    with open(files[0], "r+b") as f:
      f.truncate(os.path.getsize(files[0]) // 2)
  with pytest.warns(RuntimeWarning, match=r"step\(s\) 20 are damaged.*using "
                    r"step 10 instead of step 20"):
    step, psi = predictions(trained, which="latest")
  assert step == 10 and np.isfinite(psi).all()
  # Asked for directly, the damaged step is named.
  with pytest.warns(RuntimeWarning):
    params = inference.load_model(trained, which="latest").params
  with checkpoint.Checkpoints(os.path.join(trained, "checkpoints"),
                              read_only=True) as ckpts:
    with pytest.raises(checkpoint.CheckpointDamagedError,
                       match="Checkpoint step 20 is damaged"):
      ckpts.restore(20, jax.tree.map(jnp.zeros_like, params))


def test_resume_falls_back_and_sets_the_damaged_step_aside(trained):
  train_and_evaluate = importlib.import_module(
      "pgmoe_jax.training").train_and_evaluate
  flip_bytes(chunk_files(trained, 20)[0])
  config = tiny_config(num_steps=30)
  train_and_evaluate(config, trained)
  steps = sorted(int(s) for s in os.listdir(os.path.join(trained,
                                                         "checkpoints"))
                 if s.isdigit())
  assert steps == [10, 20, 30]  # 20 saved again from the intact step 10
  aside = os.listdir(os.path.join(trained, "damaged_checkpoints"))
  assert len(aside) == 1 and aside[0].startswith("20-")  # nothing deleted
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # everything intact again: no warning
    assert predictions(trained, which="latest")[0] == 30


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
  """A tiny run with checkpoints at steps 10 and 20, to copy."""
  train_and_evaluate = importlib.import_module(
      "pgmoe_jax.training").train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  train_and_evaluate(tiny_config(), workdir)
  return workdir


# The JSON files of a checkpoint step (orbax's metadata and the checksums)
# and an array chunk.
STEP_FILES = ("_CHECKPOINT_METADATA", "checksums/metadata", "params/_METADATA",
              "opt_state/_METADATA", "params/array_metadatas/process_0",
              "params/_sharding", "array chunk")


@pytest.mark.parametrize("name", STEP_FILES)
def test_truncated_newest_checkpoint_is_set_aside(trained_once, tmp_path,
                                                  caplog, name):
  train_and_evaluate = importlib.import_module(
      "pgmoe_jax.training").train_and_evaluate
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_once, workdir)
  path = (chunk_files(workdir, 20)[0] if name == "array chunk" else
          os.path.join(workdir, "checkpoints", "20", name))
  os.truncate(path, os.path.getsize(path) // 2)
  caplog.set_level("WARNING")
  train_and_evaluate(tiny_config(num_steps=30), workdir)
  warning = re.search(r"Checkpoint step 20 was damaged \((.*)\); moved it to "
                      r"(.*) and resumed from step 10\.", caplog.text)
  assert warning, caplog.text
  if name != "array chunk":
    assert name in warning.group(1), warning.group(1)
  aside = os.listdir(os.path.join(workdir, "damaged_checkpoints"))
  assert len(aside) == 1 and aside[0].startswith("20-")  # nothing deleted
  assert saved_steps(workdir) == [10, 20, 30]  # 20 saved again from 10


def test_no_intact_checkpoint_stops(trained):
  for step in (10, 20):
    flip_bytes(chunk_files(trained, step)[0])
  with pytest.raises(ValueError, match=r"No intact checkpoint.*step 20: .*"
                     r"step 10: "):
    inference.load_model(trained)


def test_nonfinite_parameters_are_never_saved(tmp_path):
  checkpoint = importlib.import_module("pgmoe_jax.rundir.checkpoint")
  params = {"w": jnp.asarray([1.0, np.nan])}
  with checkpoint.Checkpoints(str(tmp_path / "ckpt")) as ckpts:
    with pytest.raises(FloatingPointError, match="hold NaN or inf"):
      ckpts.save(5, params, {"m": jnp.zeros(2)})
    assert ckpts.steps() == []


# --------------------------------------------------------------------------
# Generation killed before its first meta.json resumes.


# Fast tier: test_data::test_interrupted_generation_resumes_to_identical_bytes.
@pytest.mark.slow
def test_generation_killed_before_first_meta_resumes(tmp_path):
  out = tmp_path / "train"
  out.mkdir()
  # What a kill during the first shard's write leaves: shard files, no meta.
  (out / "shard-00000.potential.npy.tmp").write_bytes(b"partial")
  (out / "shard-00000.psi0.npy").write_bytes(b"unrecorded")
  args = ("experiments.generate_data", "--grid=12", "--num=4",
          f"--out={out}", "--shard_size=2")
  done = run_module(*args)
  assert done.returncode == 0, done.stderr[-2000:]
  assert len(data.open_dataset(str(out))) == 4
  # And with --overwrite on the same kind of leftover.
  other = tmp_path / "other"
  other.mkdir()
  (other / "shard-00000.E0.npy.tmp").write_bytes(b"partial")
  done = run_module(*args[:-2], f"--out={other}", "--overwrite")
  assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------
# Nothing is written before the config is validated.


# Fast tier: test_config_typo_is_one_line.
@pytest.mark.slow
def test_invalid_model_writes_nothing_and_the_fix_then_runs(tmp_path):
  workdir = tmp_path / "run"
  common = ("experiments.train", "--config=experiments/configs/test.py",
            f"--workdir={workdir}", "--config.train.num_steps=2",
            "--config.optim.warmup_steps=1")
  out = run_module(*common, "--config.model.tiles=3")
  one_line_error(out, "train", "tiles=3 must divide the grid")
  assert not workdir.exists()
  out = run_module(*common, "--config.model.tiles=2")
  assert out.returncode == 0, out.stderr[-2000:]


# --------------------------------------------------------------------------
# One process owns an output folder.


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path):
  locks = importlib.import_module("pgmoe_jax.locks")
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "metrics.jsonl").write_text("")
  with locks.exclusive(str(workdir), "workdir"):
    out = run_module("experiments.train",
                     "--config=experiments/configs/test.py",
                     f"--workdir={workdir}")
    one_line_error(out, "train", "is in use by process", str(os.getpid()))
    out = run_module("experiments.generate_data", "--grid=12", "--num=2",
                     f"--out={workdir}")
    one_line_error(out, "generate_data", "is in use by process")
  assert (workdir / "metrics.jsonl").read_text() == ""  # untouched


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  locks = importlib.import_module("pgmoe_jax.locks")
  folder = str(tmp_path)
  code = textwrap.dedent(f"""
      import time
      from pgmoe_jax import locks
      with locks.exclusive({folder!r}):
        print("locked", flush=True)
        time.sleep(60)
      """)
  holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  with pytest.raises(locks.FolderInUseError, match=str(holder.pid)):
    with locks.exclusive(folder):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with locks.exclusive(folder):  # the kernel released it
    pass


# --------------------------------------------------------------------------
# Edits to meta.json and config.json are named.


def test_edited_dataset_spec_is_reported(tmp_path):
  jax.config.update("jax_enable_x64", True)
  path = str(tmp_path / "train")
  data.generate(path, data.DatasetSpec("gaussian_wells", Grid((12, 12), 10.0),
                                       4))
  meta_file = os.path.join(path, "meta.json")
  meta = json.loads(pathlib.Path(meta_file).read_text())
  for field, value in (("seed", 7), ("tol", 1e-3)):
    edited = json.loads(json.dumps(meta))
    edited["spec"][field] = value
    pathlib.Path(meta_file).write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"meta.json was edited"):
      data.open_dataset(path)
  pathlib.Path(meta_file).write_text(json.dumps(meta))
  assert len(data.open_dataset(path)) == 4


def test_edited_config_json_is_reported_and_can_be_accepted(trained):
  workdir_lib = importlib.import_module("pgmoe_jax.rundir.workdir")
  path = os.path.join(trained, "config.json")
  config = json.loads(pathlib.Path(path).read_text())
  config["model"]["input_clip"] = 7.0  # keeps every parameter shape
  pathlib.Path(path).write_text(json.dumps(config, indent=2, sort_keys=True))
  with pytest.raises(ValueError, match=r"config.json was edited.*"
                     r"accept_config_edit"):
    inference.load_model(trained)
  workdir_lib.accept_config_edit(trained)
  model = inference.load_model(trained)
  assert model.config.model.input_clip == 7.0


# --------------------------------------------------------------------------
# Clear errors instead of tracebacks.


def test_output_folder_under_a_file(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("not a folder")
  out = run_module("experiments.train", f"--config={TEST_CONFIG}",
                   f"--workdir={afile / 'run'}")
  one_line_error(out, "train", "is a file, not a folder")
  out = run_module("experiments.generate_data", "--grid=12", "--num=2",
                   f"--out={afile}")
  one_line_error(out, "generate_data", "is a file, not a folder")


def test_full_disk_is_named(tmp_path):
  checks = importlib.import_module("pgmoe_jax.checks")
  summaries = importlib.import_module("pgmoe_jax.training.summaries")
  log = summaries.MetricsLog(str(tmp_path), 0, tensorboard=False)
  # The disk fills up during training: appends go to /dev/full (ENOSPC).
  os.symlink("/dev/full", tmp_path / "metrics.jsonl")
  with pytest.raises(checks.OutputError, match="disk is full"):
    log.write(1, "train", {"loss": 1.0})
  # Dataset generation: the shard that hits the full disk is named, and
  # the shards recorded before it are kept.
  jax.config.update("jax_enable_x64", True)
  path = tmp_path / "ds"
  spec = data.DatasetSpec("gaussian_wells", Grid((12, 12), 10.0), 4,
                          shard_size=2)
  data.generate(str(path), spec, max_shards=1)
  os.symlink("/dev/full", path / "shard-00001.potential.npy.tmp")
  with pytest.raises(checks.OutputError, match=r"shard 1.*disk is full.*"
                     "rerun the same command to resume"):
    data.generate(str(path), spec)
  meta = json.loads((path / "meta.json").read_text())
  assert len(meta["shards"]) == 1
  os.remove(path / "shard-00001.potential.npy.tmp")
  assert data.generate(str(path), spec)["complete"]


@pytest.mark.parametrize("how", sorted(helpers.DISK_FULL_ERRORS))
def test_full_disk_during_a_checkpoint_save(tmp_path, monkeypatch, caplog,
                                            how):
  checks = importlib.import_module("pgmoe_jax.checks")
  train_and_evaluate = importlib.import_module(
      "pgmoe_jax.training").train_and_evaluate
  workdir = str(tmp_path / "run")
  helpers.disk_full_at_checkpoint(20, how, patch=monkeypatch.setattr)
  with pytest.raises(checks.OutputError) as raised:
    train_and_evaluate(tiny_config(), workdir)
  message = str(raised.value)
  assert "\n" not in message, message
  for fragment in (os.path.join(workdir, "checkpoints"), "disk is full",
                   "last intact checkpoint is step 10", "rerun"):
    assert fragment in message, message
  assert saved_steps(workdir) == [10]
  monkeypatch.undo()  # space freed: the same call resumes
  caplog.set_level("INFO")
  state = train_and_evaluate(tiny_config(), workdir)
  assert int(state.step) == 20 and saved_steps(workdir) == [10, 20]
  assert "Resumed from checkpoint step 10" in caplog.text


TRAIN_WITH_A_FULL_DISK = textwrap.dedent("""
    import sys
    sys.path.insert(0, "tests")
    import helpers
    helpers.disk_full_at_checkpoint(20)
    from absl import app
    import jax
    from experiments import cli
    from experiments import train
    jax.config.config_with_absl()
    app.run(train.main, flags_parser=cli.flags_parser("train"))
    """)


def test_full_disk_stops_training_with_one_line(tmp_path):
  workdir = str(tmp_path / "run")
  args = (f"--config={TEST_CONFIG}", f"--workdir={workdir}")
  out = subprocess.run([sys.executable, "-c", TRAIN_WITH_A_FULL_DISK, *args],
                       cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=300, check=False)
  one_line_error(out, "train", os.path.join(workdir, "checkpoints"),
                 "disk is full", "last intact checkpoint is step 10")
  assert "Exception ignored" not in out.stderr, out.stderr[-3000:]
  assert saved_steps(workdir) == [10]
  out = run_module("experiments.train", *args)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "Resumed from checkpoint step 10" in out.stderr
  assert saved_steps(workdir) == [10, 20]


@pytest.fixture()
def small_filesystem(tmp_path):
  """A 2 MiB tmpfs (root only; skipped where it cannot be mounted)."""
  mount = tmp_path / "fs"
  mount.mkdir()
  if not hasattr(os, "geteuid") or os.geteuid() != 0:
    pytest.skip("mounting a tmpfs needs root")
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                         str(mount)], capture_output=True, text=True,
                        check=False)
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder, leave):
  """Fills the filesystem of ``folder`` up to ``leave`` bytes free."""
  path = os.path.join(folder, "filler")
  with open(path, "wb") as f:
    try:
      while True:
        f.write(b"\0" * 65536)
        f.flush()
    except OSError:
      pass
  os.truncate(path, max(0, os.path.getsize(path) - leave))
  return path


# Fast tier: test_full_disk_stops_training_with_one_line (the same run on a
# simulated full disk) and test_full_disk_during_a_checkpoint_save.
@pytest.mark.slow
def test_training_into_a_full_filesystem(small_filesystem):
  workdir = str(small_filesystem / "run")
  args = (f"--config={TEST_CONFIG}", f"--workdir={workdir}")
  out = run_module("experiments.train", *args, "--config.train.num_steps=10")
  assert out.returncode == 0, out.stderr[-2000:]
  filler = fill(small_filesystem, leave=40 * 1024)
  out = run_module("experiments.train", *args)
  one_line_error(out, "train", workdir, "disk is full", str(small_filesystem),
                 "last intact checkpoint is step 10")
  assert "Exception ignored" not in out.stderr, out.stderr[-3000:]
  assert "Exception in thread" not in out.stderr, out.stderr[-3000:]
  assert saved_steps(workdir) == [10]
  os.remove(filler)
  out = run_module("experiments.train", *args)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "Resumed from checkpoint step 10" in out.stderr
  assert saved_steps(workdir) == [10, 20]


def test_grid_far_too_large_stops_before_allocating():
  memory = importlib.import_module("pgmoe_jax.memory")
  huge = Grid((100_000, 100_000), 20.0)
  with pytest.raises(memory.InsufficientMemoryError,
                     match=r"gaussian_wells: 1 potential\(s\) on "
                     r"Grid\(100000x100000.*needs about .* GiB.*smaller grid"):
    potentials.gaussian_wells(jax.random.key(0), huge)
  out = run_module("experiments.generate_data", "--grid=100000", "--num=2",
                   "--out=/tmp/never_written_pgmoe")
  one_line_error(out, "generate_data", "needs about", "available")
  assert not os.path.exists("/tmp/never_written_pgmoe")
  out = run_module("experiments.train", f"--config={TEST_CONFIG}",
                   "--workdir=/tmp/never_written_pgmoe_run",
                   "--config.grid.shape=(100000,100000)")
  one_line_error(out, "train", "needs about")
  assert not os.path.exists("/tmp/never_written_pgmoe_run")
  # A grid whose potentials can be drawn but whose training step cannot
  # fit: the estimate per device, by part, and what to change.
  out = run_module("experiments.train", f"--config={TEST_CONFIG}",
                   "--workdir=/tmp/never_written_pgmoe_run",
                   "--config.loss.mode=supervised",
                   "--config.data.train=/tmp/no_data_needed",
                   "--config.grid.shape=(16384,16384)",
                   "--config.model.tiles=4")
  one_line_error(out, "train", "needs about", "per device",
                 "Estimate per device:", "parameters", "activations",
                 "mesh.space")
  assert not os.path.exists("/tmp/never_written_pgmoe_run")


def test_config_typo_is_one_line(tmp_path):
  out = run_module("experiments.train", f"--config={TEST_CONFIG}",
                   f"--workdir={tmp_path}", "--config.train.lr_typo=1")
  one_line_error(out, "train", "--config.train.lr_typo", "no field 'lr_typo'")


def test_empty_batches_are_named():
  grid = Grid((8, 8), 5.0)
  empty = np.zeros((0, 8, 8))
  for fn in (lambda: energy(empty, empty, grid),
             lambda: residual(empty, empty, grid),
             lambda: solve(empty, grid),
             lambda: ground_state(empty, grid, method="lobpcg")):
    with pytest.raises(ValueError, match="empty batch"):
      fn()


def test_nan_potentials_are_blamed_on_the_data(trained, tmp_path):
  evaluation = importlib.import_module("pgmoe_jax.evaluation")
  jax.config.update("jax_enable_x64", True)
  model = inference.load_model(trained)
  v = np.zeros((3, 16, 16), np.float32)
  v[1, 2, 3] = np.nan
  with pytest.raises(ValueError, match=r"NaN or inf \(first at index "
                     r"\(1, 2, 3\)\)"):
    model.predict(v)
  with pytest.raises(ValueError, match="empty batch"):
    model.predict(np.zeros((0, 16, 16), np.float32))
  path = str(tmp_path / "test")
  data.generate(path, data.DatasetSpec("gaussian_wells", model.grid, 4))
  ds = data.open_dataset(path)
  broken = data.Dataset(ds.grid, {
      "potential": np.where(np.arange(4)[:, None, None] == 2, np.nan,
                            np.asarray(ds.potentials)),
      "psi0": ds.psi0, "E0": ds.E0, "residual": ds.residual,
      "index": ds.index}, path=path, name="test")
  with pytest.raises(ValueError, match=r"sample 2 holds NaN or inf.*the "
                     "data are broken, not the model"):
    evaluation.evaluate_predictor(model, broken, num_reference=0)


def test_memory_estimate_divides_over_the_mesh():
  memory = importlib.import_module("pgmoe_jax.memory")
  one = memory.training_estimate(1000, 4, 64, 32**3, 5000)
  assert one["parameters"] == 4000 and one["gradients and optimiser state"] == (
      12000)
  assert one["activations"] == 4 * 64 * (memory.GRID_ARRAYS_PER_SAMPLE * 32**3
                                         + 2 * 5000)
  split = memory.training_estimate(1000, 4, 64, 32**3, 5000, batch_devices=2,
                                   space_devices=4)
  # Parameters are replicated; activations split over batch and space.
  assert split["parameters"] == one["parameters"]
  assert split["activations"] == one["activations"] / 8


BAD_FAMILIES = '''
import jax
import jax.numpy as jnp


def _batch(batch_shape):
  return (batch_shape,) if isinstance(batch_shape, int) else tuple(
      batch_shape)


def raises(key, grid, batch_shape=(), *, dtype=None):
  raise RuntimeError("no wells configured")


def calls_float(key, grid, batch_shape=(), *, dtype=None):
  depth = float(jax.random.uniform(key))
  return jnp.full(_batch(batch_shape) + grid.shape, -depth, dtype)


def branches(key, grid, batch_shape=(), *, dtype=None):
  if jax.random.uniform(key) > 0.5:
    return jnp.zeros(_batch(batch_shape) + grid.shape, dtype)
  return jnp.ones(_batch(batch_shape) + grid.shape, dtype)


def no_dtype(key, grid, batch_shape=()):
  return jnp.zeros(_batch(batch_shape) + grid.shape)
'''
# What the error names, per family of BAD_FAMILIES.
BAD_FAMILY_ERRORS = {
    "raises": "raised an error (RuntimeError: no wells configured)",
    "calls_float": "is not jittable (ConcretizationTypeError: Abstract "
                   "tracer value encountered where concrete value is "
                   "expected",
    "branches": "is not jittable (TracerBoolConversionError: Attempted "
                "boolean conversion of traced array",
    "no_dtype": "raised an error (TypeError: no_dtype() got an unexpected "
                "keyword argument 'dtype')",
}
FAMILY_CONTRACT = ("a family must be pure and jittable, with no Python "
                   "control flow on sampled values")


def test_a_broken_user_family_is_named_with_the_contract(tmp_path,
                                                         monkeypatch):
  config_lib = importlib.import_module("pgmoe_jax.training.config")
  predict_lib = importlib.import_module("pgmoe_jax.workflows.predict")
  (tmp_path / "rel_bad_families.py").write_text(BAD_FAMILIES)
  monkeypatch.syspath_prepend(str(tmp_path))
  grid = Grid((8, 8), 10.0)
  keys = jax.random.split(jax.random.key(0), 2)
  for attr, fragment in BAD_FAMILY_ERRORS.items():
    name = f"rel_bad_families:{attr}"
    calls = {
        "spec": lambda: data.DatasetSpec(name, grid, 2),
        "sampler": lambda: potentials.make_sampler(name, grid)(keys),
        "stream": lambda: potentials.make_potential_stream(name, grid, 2),
        "predict": lambda: predict_lib.sample_potentials(name, grid, 2, 0),
    }
    if attr == "raises":  # The others work eagerly, without dtype=.
      calls["sample"] = lambda: potentials.sample(name, jax.random.key(0),
                                                  grid, (2,))
    for where, call in calls.items():
      with pytest.raises(ValueError) as info:
        call()
      message = str(info.value)
      assert message.startswith(f"Potential family {name!r} {fragment}"), (
          attr, where, message)
      assert "\n" not in message, (attr, where, message)
      assert isinstance(info.value, potentials.FamilyError)
      assert FAMILY_CONTRACT in message and "dtype=" in message and (
          "batch_shape + grid.shape" in message), (attr, where, message)
      assert info.value.__cause__ is not None, (attr, where)
    if attr == "calls_float":  # Where JAX says the value was needed.
      assert "The problem arose with the `float` function." in message
  # A user family as a mixture component: the component is named too.
  with pytest.raises(potentials.FamilyError, match=(
      "^mixture: component 'bad': Potential family "
      "'rel_bad_families:raises' raised an error")):
    data.DatasetSpec("mixture", grid, 2, ranges={"components": {"bad": {
        "weight": 1.0, "family": "rel_bad_families:raises"}}})
  # The training config names its field and keeps the message.
  config = test_config.get_config()
  config.data.family = "rel_bad_families:raises"
  with pytest.raises(ValueError) as info:
    config_lib.resolve(config)
  message = str(info.value)
  assert "\n" not in message and (
      "data.family='rel_bad_families:raises'" in message) and (
          BAD_FAMILY_ERRORS["raises"] in message), message


def test_a_broken_user_family_is_one_line_from_generate_data(tmp_path):
  (tmp_path / "rel_bad_families.py").write_text(BAD_FAMILIES)
  env = dict(ENV, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
  for attr in ("raises", "calls_float"):
    out = run_module("experiments.generate_data",
                     f"--family=rel_bad_families:{attr}", "--grid=8",
                     "--num=2", "--workers=1", f"--out={tmp_path / attr}",
                     env=env)
    one_line_error(out, "generate_data",
                   f"Potential family 'rel_bad_families:{attr}' "
                   f"{BAD_FAMILY_ERRORS[attr]}", FAMILY_CONTRACT)
    assert not (tmp_path / attr).exists()
