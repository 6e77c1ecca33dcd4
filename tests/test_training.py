"""Training loop: metrics, checkpoints, exact resume, devices, guards, CLI."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import test as test_config
from helpers import four_cpu_devices_env
from helpers import wells_splits
from pgmoe_jax import data
from pgmoe_jax import inference
from pgmoe_jax.grid import Grid
from pgmoe_jax.rundir import checkpoint
from pgmoe_jax.rundir import workdir as workdir_lib
from pgmoe_jax.training import config as config_lib
from pgmoe_jax.training import loop
from pgmoe_jax.training import losses
from pgmoe_jax.training import step as step_lib
from pgmoe_jax.training import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = Grid((16, 16), 20.0)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  paths = wells_splits(root, GRID, (("train", 64), ("val", 32)),
                       shard_size=32)
  return paths["train"], paths["val"]


def supervised_config(datasets, **train_fields):
  """The test config on labelled data; constant LR after a 2-step warmup,
  so runs of different lengths share a schedule."""
  config = test_config.get_config()
  config.data.train, config.data.val = datasets
  config.loss.mode = "supervised"
  config.optim.end_learning_rate_factor = 1.0
  config.train.num_steps = 100
  config.train.log_every_steps = 10
  config.train.eval_every_steps = 25
  config.train.checkpoint_every_steps = 15
  config.train.keep_checkpoints = 2
  for name, value in train_fields.items():
    config.train[name] = value
  return config


def read_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def assert_trees_close(a, b, **tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


@pytest.fixture(scope="module")
def run100(datasets, tmp_path_factory):
  """One uninterrupted 100-step supervised run: (workdir, final state)."""
  workdir = str(tmp_path_factory.mktemp("run100"))
  state = train_and_evaluate(supervised_config(datasets), workdir)
  return workdir, state


def test_run_writes_config_metrics_and_checkpoints(run100, datasets):
  workdir, state = run100
  assert int(state.step) == 100
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved == workdir_lib.config_to_dict(supervised_config(datasets))
  assert saved["grid"]["shape"] == [16, 16]  # tuples as lists

  records = read_records(workdir)
  train_rows = [r for r in records if r["split"] == "train"]
  val_rows = [r for r in records if r["split"] == "val"]
  assert [r["step"] for r in train_rows] == list(range(10, 101, 10))
  for key in ("loss", "lr", "grad_norm", "steps_per_sec", "infidelity"):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  # Evaluated every 25 steps and at every checkpoint (every 15, and 100).
  assert sorted(r["step"] for r in val_rows) == [
      15, 25, 30, 45, 50, 60, 75, 90, 100]
  assert all(r["num_samples"] == 32 for r in val_rows)
  for key in ("infidelity_median", "infidelity_p90",
              "energy_error_mha_median", "energy_error_mha_p90"):
    assert all(np.isfinite(r[key]) for r in val_rows), key

  # The loss goes down.
  assert train_rows[-1]["loss"] < 0.7 * train_rows[0]["loss"]
  assert val_rows[-1]["infidelity_median"] < val_rows[0]["infidelity_median"]

  # Kept: the 2 latest checkpoints plus the best by val energy error.
  ckpts = checkpoint.Checkpoints(checkpoint.checkpoint_dir(workdir),
                                 best_metric="val/energy_error_mha_median",
                                 read_only=True)
  saved_steps = (15, 30, 45, 60, 75, 90, 100)
  by_step = {r["step"]: r["energy_error_mha_median"] for r in val_rows
             if r["step"] in saved_steps}
  best = min(saved_steps, key=lambda s: (by_step[s], -s))
  assert ckpts.best_step() == best
  assert ckpts.steps() == sorted({90, 100, best})
  assert ckpts.metrics(100)["val/energy_error_mha_median"] == pytest.approx(
      by_step[100])
  ckpts.close()


def test_extended_and_killed_runs_resume_exactly(run100, datasets, tmp_path):
  """30 steps, extended to 100 but killed at 50, resumed: equals 100 steps."""
  class Killed(Exception):
    pass

  def kill_at_50(step, total):
    del total
    if step == 50:
      raise Killed()

  workdir = str(tmp_path)
  config = supervised_config(datasets)
  config.train.num_steps = 30
  assert int(train_and_evaluate(config, workdir).step) == 30
  config.train.num_steps = 100
  with pytest.raises(Killed):
    train_and_evaluate(config, workdir, progress=kill_at_50)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["train"]["num_steps"] == 100
  ckpts = checkpoint.Checkpoints(checkpoint.checkpoint_dir(workdir),
                                 read_only=True)
  assert ckpts.latest_step() == 45
  ckpts.close()
  # 45 = 5 epochs of 8 batches + 5: the resumed stream starts mid-epoch.
  state = train_and_evaluate(config, workdir)
  assert int(state.step) == 100
  assert_trees_close(state.params, run100[1].params, rtol=1e-6, atol=1e-7)
  assert_trees_close(state.opt_state, run100[1].opt_state, rtol=1e-6,
                     atol=1e-7)
  # The killed run's records after step 45 were dropped, not duplicated.
  steps = [(r["split"], r["step"]) for r in read_records(workdir)]
  assert steps == [(r["split"], r["step"]) for r in read_records(run100[0])]


def test_device_resident_batches_equal_the_streamed_ones(datasets):
  # A small training set lives on the device and each step gathers its rows
  # there; those must be exactly the streamed batches, resumed mid-epoch too.
  ds = data.open_dataset(datasets[0])
  rows = loop.resident_training_set(ds, np.float32, None)
  assert set(rows) == {"potential", "psi0", "E0", "E1", "index"}
  for start in (0, 13):
    streamed = loop.train_batches(ds, 16, 3, start, np.float32, None)
    indices = loop.resident_batch_indices(ds, 16, 3, start)
    for _ in range(6):  # past an epoch boundary (4 batches per epoch)
      batch, idx = next(streamed), next(indices)
      for key, value in batch.items():
        np.testing.assert_array_equal(np.asarray(rows[key][idx]),
                                      np.asarray(value))


def test_run_with_streamed_batches_equals_the_resident_run(
    run100, datasets, tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "RESIDENT_BYTES", 0)
  state = train_and_evaluate(supervised_config(datasets), str(tmp_path))
  assert_trees_close(state.params, run100[1].params, rtol=1e-6, atol=1e-7)


# Fast tier: test_multihost::test_the_compiled_loss_streams_per_device_rows (two
# devices) and test_extended_and_killed_runs_resume_exactly.
@pytest.mark.slow
def test_train_step_on_four_devices_matches_one(run100, datasets, tmp_path):
  workdir = str(tmp_path)
  config = supervised_config(datasets)
  script = textwrap.dedent(f"""
      import json
      import jax
      import ml_collections
      jax.config.update("jax_enable_x64", True)
      assert jax.device_count() == 4, jax.devices()
      from pgmoe_jax.training import train_and_evaluate
      config = ml_collections.ConfigDict(json.loads({config.to_json()!r}))
      config.train.batch_size = 6
      try:
        train_and_evaluate(config, {workdir!r})
      except ValueError as e:
        assert "divisible by the number of devices (4)" in str(e), e
      else:
        raise AssertionError("batch 6 on 4 devices was accepted")
      config.train.batch_size = 8
      train_and_evaluate(config, {workdir!r})
      """)
  env = four_cpu_devices_env()
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  four = inference.load_model(workdir, which="latest")
  assert four.step == 100
  assert_trees_close(four.params, run100[1].params, rtol=1e-4, atol=1e-5)
  val_one = [r for r in read_records(run100[0]) if r["split"] == "val"]
  val_four = [r for r in read_records(workdir) if r["split"] == "val"]
  assert val_four[-1]["infidelity_median"] == pytest.approx(
      val_one[-1]["infidelity_median"], rel=1e-3)


def test_workdir_of_another_model_is_refused(run100, datasets):
  workdir, _ = run100
  with open(os.path.join(workdir, "config.json")) as f:
    before = f.read()
  config = supervised_config(datasets)
  config.model.tiles = 2
  with pytest.raises(ValueError, match=r"another model's checkpoints.*"
                     r"model\.tiles: 4 -> 2"):
    train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == before


def test_dataset_on_another_grid_is_refused(datasets, tmp_path):
  config = supervised_config(datasets)
  config.grid.shape = (8, 8)
  with pytest.raises(ValueError, match=r"Grid\(16x16.*Grid\(8x8"):
    train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "config.json")


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(
    datasets, tmp_path, monkeypatch):
  make_loss_fn = losses.make_loss_fn

  def nan_from_step_23(run, apply_fn, batch_sharding=None):
    loss_fn = make_loss_fn(run, apply_fn, batch_sharding)

    def patched(params, batch, key, step):
      loss, metrics = loss_fn(params, batch, key, step)
      return loss + jnp.where(step >= 23, jnp.nan, 0.0), metrics

    return patched

  monkeypatch.setattr(losses, "make_loss_fn", nan_from_step_23)
  config = supervised_config(datasets, num_steps=40, log_every_steps=5,
                             checkpoint_every_steps=10)
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError,
                     match=r"at step 23 .*last good checkpoint is step 20"):
    train_and_evaluate(config, workdir)
  model = inference.load_model(workdir, which="latest")
  assert model.step == 20
  psi = model.predict(np.zeros(GRID.shape, np.float32))
  assert np.all(np.isfinite(np.asarray(psi)))
  assert max(r["step"] for r in read_records(workdir)) <= 20


def test_config_errors_are_clear(datasets):
  config = supervised_config(datasets)
  config.data.train = ""
  with pytest.raises(ValueError, match="set data.train"):
    config_lib.resolve(config)
  config = supervised_config(datasets)
  config.train.best_metric = "val/accuracy"
  with pytest.raises(ValueError, match="Unknown train.best_metric"):
    config_lib.resolve(config)
  config = supervised_config(datasets)
  config.optim.warmup_steps = 100
  with pytest.raises(ValueError, match="warmup_steps=100 must be less"):
    config_lib.resolve(config)


def test_make_optimizer_schedule():
  config = test_config.get_config()
  schedule = step_lib.make_schedule(config.optim, config.train.num_steps)
  lr = config.optim.learning_rate
  assert float(schedule(0)) == 0.0
  assert float(schedule(config.optim.warmup_steps)) == pytest.approx(lr)
  assert float(schedule(config.train.num_steps)) == pytest.approx(
      lr * config.optim.end_learning_rate_factor)


def run_train_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=experiments/configs/test.py", *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)


def test_cli_trains_with_overrides(tmp_path):
  workdir = str(tmp_path / "run")
  out = run_train_cli(f"--workdir={workdir}", "--config.train.num_steps=4",
                      "--config.optim.warmup_steps=1",
                      "--config.train.log_every_steps=1",
                      "--config.train.checkpoint_every_steps=2",
                      "--config.model.tiles=2")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["train"]["num_steps"] == 4 and saved["model"]["tiles"] == 2
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  rows = read_records(workdir)  # label-free: streamed energies, no val
  assert [r["split"] for r in rows] == ["train"] * 4
  assert all(np.isfinite(r["energy"]) for r in rows)
  assert "Finished at step 4" in out.stderr
  # TensorBoard event files beside metrics.jsonl (tensorboardX installed).
  assert os.listdir(os.path.join(workdir, "tensorboard", "train"))
  assert "orbax" not in out.stderr  # the checkpoint library stays quiet


def test_cli_config_typo_fails(tmp_path):
  out = run_train_cli(f"--workdir={tmp_path}", "--config.model.tilez=8")
  assert out.returncode != 0
  assert "tilez" in out.stderr
  assert not os.listdir(tmp_path)
