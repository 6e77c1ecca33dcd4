"""Sweeps: trials, names, overrides, commands, status, the leaderboard.

The local runner and a sweep killed midway: test_sweep_runner.py.
"""

import csv
import glob
import json
import os
import shlex
import subprocess
import sys
import textwrap

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import pytest

from pgmoe_jax import models
from pgmoe_jax.training import config as config_lib
from pgmoe_jax.workflows import leaderboard
from pgmoe_jax.workflows import sweep
from pgmoe_jax.workflows import sweep_runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_CONFIG = os.path.join(ROOT, "experiments", "configs", "test.py")
TEST_SWEEP = os.path.join(ROOT, "experiments", "sweeps", "test_lr_seed.py")


def quick_config(folder) -> str:
  """A config file: the test config, 6 steps, checkpoints every 3."""
  path = os.path.join(folder, "config.py")
  with open(path, "w") as f:
    f.write(textwrap.dedent("""\
        from experiments.configs import test


        def get_config():
          config = test.get_config()
          config.train.num_steps = 6
          config.train.checkpoint_every_steps = 3
          config.train.log_every_steps = 3
          return config
        """))
  return path


def write(path, text: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  return str(path)


def run_module(*args, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False, **kwargs)


def parse_train_flags(argv):
  """(config, workdir) that experiments.train would get from ``argv``."""
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      "config", None, "", flag_values=values, lock_config=True,
      sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  values(list(argv))
  return holder.value, values.workdir


# --------------------------------------------------------------------------
# Building, naming, overriding.


def test_product_zip_and_concat():
  trials = sweep.product({"seed": [0, 1],
                          "optim.learning_rate": [1e-3, 3e-3, 1e-2]})
  assert len(trials) == 6
  assert trials[:2] == [{"seed": 0, "optim.learning_rate": 1e-3},
                        {"seed": 0, "optim.learning_rate": 3e-3}]
  assert list(trials[0]) == ["seed", "optim.learning_rate"]
  assert sweep.zip_axes({"a": [1, 2], "b": ["x", "y"]}) == [
      {"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
  with pytest.raises(ValueError, match="equal length; got a: 2, b: 3"):
    sweep.zip_axes({"a": [1, 2], "b": [1, 2, 3]})
  with pytest.raises(ValueError, match="expected a list of values"):
    sweep.product({"model.gate": "envelope"})
  assert sweep.concat(trials[:1], [{"seed": 5}]) == [trials[0], {"seed": 5}]


def test_trial_names_are_stable_safe_and_readable():
  assert sweep.trial_name({"optim.learning_rate": 3e-4, "seed": 1}) == (
      "learning_rate=0.0003,seed=1")
  assert sweep.trial_name({"seed": 1, "optim.learning_rate": 3e-4}) == (
      "learning_rate=0.0003,seed=1")
  assert sweep.trial_name({}) == "base"
  assert sweep.trial_name({"grid.shape": (16, 16), "loss.augment": False}) == (
      "augment=false,shape=16x16")
  # A shared last component shows the full keys.
  assert sweep.trial_name({"model.name": "dense", "optim.name": "adam"}) == (
      "model.name=dense,optim.name=adam")
  # Rewritten values and long names end in a hash of the overrides.
  a = sweep.trial_name({"data.train": "data/a b/train"})
  b = sweep.trial_name({"data.train": "data/a_b/train"})
  assert a != b and a.startswith("train=data_a_b_train-")
  long = sweep.trial_name({f"x.k{i}": 0.1 * i for i in range(20)})
  assert len(long) == sweep.MAX_NAME
  for name in (a, b, long):
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW"
                            "XYZ0123456789._=,-")
  trials = sweep.make_trials("runs/x/", sweep.product({"seed": [0, 1]}))
  assert trials[1] == sweep.Trial("seed=1", {"seed": 1},
                                  os.path.join("runs/x", "trials", "seed=1"))
  assert trials[1].log_path == os.path.join("runs/x", "logs", "seed=1.log")
  with pytest.raises(ValueError, match="same name 'shape=16x16'"):
    sweep.make_trials("r", [{"grid.shape": "16x16"}, {"grid.shape": (16, 16)}])


def test_apply_overrides_copies_and_coerces_like_the_command_line():
  config = sweep.load_config_file(TEST_CONFIG)
  new = sweep.apply_overrides(config, {"optim.learning_rate": 1,
                                       "grid.shape": (8, 8),
                                       "loss.augment": False,
                                       "seed": np.int64(3)})
  assert new.optim.learning_rate == 1.0
  assert isinstance(new.optim.learning_rate, float)
  assert new.grid.shape == (8, 8) and new.seed == 3 and not new.loss.augment
  assert config.optim.learning_rate == 3e-3 and config.grid.shape == (16, 16)
  assert new.is_locked
  with pytest.raises(ValueError, match=r"Unknown config key 'optim.learnig_"
                     r"rate'; closest: optim.learning_rate"):
    sweep.apply_overrides(config, {"optim.learnig_rate": 1e-3})
  with pytest.raises(ValueError, match="'optim.learning_rate' takes a float"):
    sweep.apply_overrides(config, {"optim.learning_rate": "1e-3"})
  with pytest.raises(ValueError, match="'seed' takes an int"):
    sweep.apply_overrides(config, {"seed": 1.5})
  with pytest.raises(ValueError, match="'loss.augment' takes a bool"):
    sweep.apply_overrides(config, {"loss.augment": 1})
  with pytest.raises(ValueError, match="'model' is a section"):
    sweep.apply_overrides(config, {"model": 1})
  with pytest.raises(ValueError, match="use a tuple"):
    sweep.apply_overrides(config, {"grid.shape": [8, 8]})


def test_train_command_round_trips_through_config_flags():
  config = sweep.load_config_file(TEST_CONFIG)
  overrides = {"optim.learning_rate": 1, "optim.weight_decay": 1e-5,
               "grid.length": 12.5, "seed": -3, "loss.augment": False,
               "data.train": "a dir/with spaces,and=signs",
               "data.val": "", "grid.shape": (8, 8),
               "model.expert_hidden": (), "model.gate_hidden": (4,)}
  trial = sweep.Trial("t", overrides, "/tmp/sweep/trials/t")
  argv = sweep.train_command(TEST_CONFIG, trial, "python",
                             ["--jax_enable_x64"])
  assert argv[:5] == ["python", "-m", "experiments.train",
                      f"--config={TEST_CONFIG}",
                      "--workdir=/tmp/sweep/trials/t"]
  assert argv[-1] == "--jax_enable_x64"
  assert shlex.split(sweep.shell_command(argv)) == argv
  parsed, workdir = parse_train_flags(argv[2:-1])
  assert workdir == trial.workdir
  assert parsed.to_json() == sweep.apply_overrides(config,
                                                   overrides).to_json()


def test_load_sweep_checks_the_file(tmp_path):
  def load(body):
    return sweep.load_sweep(write(tmp_path / "s.py", body))

  with pytest.raises(ValueError, match="does not exist"):
    sweep.load_sweep(str(tmp_path / "missing.py"))
  with pytest.raises(ValueError, match="defines no get_sweep"):
    load("X = 1\n")
  with pytest.raises(ValueError, match="non-empty list"):
    load("def get_sweep():\n  return []\n")
  with pytest.raises(ValueError, match=r"trial 1 'grid.shape'.*use a tuple"):
    load("def get_sweep():\n  return [{}, {'grid.shape': [8, 8]}]\n")
  with pytest.raises(ValueError, match="trials 0 and 2 are the same"):
    load("def get_sweep():\n  return [{'seed': 1, 'x.y': 2}, {'seed': 2},"
         " {'x.y': 2, 'seed': 1}]\n")
  with pytest.raises(ValueError, match="failed to import: NameError"):
    load("undefined_name\n")
  trials = load("import numpy as np\n"
                "def get_sweep():\n"
                "  return [{'optim.learning_rate': v} for v in "
                "np.array([1e-3, 3e-3])]\n")
  assert trials == [{"optim.learning_rate": 1e-3},
                    {"optim.learning_rate": 3e-3}]
  assert type(trials[0]["optim.learning_rate"]) is float


@pytest.mark.parametrize("config, sweep_file, count", [
    ("test", "test_lr_seed", 4), ("quickstart", "lr_seed", 6),
    ("pgmoe", "pgmoe_shapes", 12)])
def test_shipped_sweeps_pass_their_configs(config, sweep_file, count):
  trials = sweep.make_trials("/tmp/s", sweep.load_sweep(os.path.join(
      ROOT, "experiments", "sweeps", f"{sweep_file}.py")))
  assert len(trials) == count
  configs = sweep.check_trials(sweep.load_config_file(os.path.join(
      ROOT, "experiments", "configs", f"{config}.py")), trials)
  assert set(configs) == {t.name for t in trials}


def test_every_sweep_file_is_tested():
  files = {os.path.basename(p)[:-3] for p in glob.glob(
      os.path.join(ROOT, "experiments", "sweeps", "*.py"))} - {"__init__"}
  assert files == {"test_lr_seed", "lr_seed", "pgmoe_shapes"}


def test_check_trials_names_the_trial_that_fails_resolve():
  config = sweep.load_config_file(TEST_CONFIG)
  trials = sweep.make_trials("/tmp/s", [{"model.tiles": 4},
                                        {"model.tiles": 5}])
  with pytest.raises(ValueError, match="trial tiles=5: "):
    sweep.check_trials(config, trials)


# --------------------------------------------------------------------------
# Status and the leaderboard.


def fake_run(trial, steps, records, marker=None):
  """A workdir with checkpoint folders and metric records, no training."""
  for step in steps:
    os.makedirs(os.path.join(trial.workdir, "checkpoints", str(step)))
  write(os.path.join(trial.workdir, "metrics.jsonl"),
        "".join(json.dumps(r) + "\n" for r in records))
  if marker is not None:
    write(sweep_runner.marker_path(trial.log_dir, trial.name),
          json.dumps(marker))


def test_trial_status_reads_the_folders(tmp_path):
  trial = sweep.make_trials(str(tmp_path), [{"seed": 1}])[0]
  assert leaderboard.trial_status(trial, 6) == "new"
  os.makedirs(os.path.join(trial.workdir, "checkpoints", "3"))
  os.makedirs(os.path.join(trial.workdir, "checkpoints",
                           "6.orbax-checkpoint-tmp-1"))
  assert leaderboard.checkpoint_steps(trial.workdir) == [3]
  assert leaderboard.trial_status(trial, 6) == "partial"
  write(sweep_runner.failure_path(trial.log_dir, trial.name), "{}")
  assert leaderboard.trial_status(trial, 6) == "failed"
  os.makedirs(os.path.join(trial.workdir, "checkpoints", "6"))
  assert leaderboard.trial_status(trial, 6) == "done"
  write(sweep_runner.marker_path(trial.log_dir, trial.name),
        json.dumps({"returncode": 1}))
  assert leaderboard.trial_status(trial, 6) == "failed"


def test_summarize_writes_rows_table_and_figure(tmp_path):
  config = sweep.apply_overrides(sweep.load_config_file(TEST_CONFIG),
                                 {"train.num_steps": 10})
  trials = sweep.make_trials(str(tmp_path), sweep.product(
      {"optim.learning_rate": [1e-3, 1e-2, 1e-1]}))
  metric = "energy_error_mha_median"
  fake_run(trials[0], [5, 10], [
      {"step": 5, "split": "train", "loss": 2.0, "steps_per_sec": 10.0},
      {"step": 5, "split": "val", metric: 3.0, "infidelity_median": 0.1},
      {"step": 10, "split": "train", "loss": 1.0, "steps_per_sec": 5.0},
      {"step": 10, "split": "val", metric: 2.0, "infidelity_median": 0.05}],
           marker={"returncode": 0, "seconds": 12.5, "finished": "x"})
  fake_run(trials[1], [5], [
      {"step": 5, "split": "val", metric: 1.0},
      {"step": 8, "split": "val", metric: 4.0}])
  messages = []
  rows = leaderboard.summarize(str(tmp_path), trials, config=config,
                               echo=messages.append)
  assert [r["trial"] for r in rows] == [t.name for t in
                                        (trials[1], trials[0], trials[2])]
  second, first, third = rows
  assert second["status"] == "partial" and second["step"] == 8
  assert (second[f"best_{metric}"], second["best_step"]) == (1.0, 5)
  assert second[f"final_{metric}"] == 4.0
  assert first["status"] == "done" and first["wall_seconds"] == 12.5
  assert first["train_seconds"] == pytest.approx(0.5 + 1.0)
  assert first["val_infidelity_median"] == 0.05 and first["train_loss"] == 1.0
  assert third["status"] == "new" and third[f"best_{metric}"] is None
  model = config_lib.resolve_model(config).model
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 16, 16), jnp.float32))
  assert first["num_params"] == models.count_params(shapes["params"])
  with open(tmp_path / "sweep.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["optim.learning_rate"] for r in table] == ["0.01", "0.001",
                                                       "0.1"]
  text = (tmp_path / "sweep.md").read_text()
  assert "| optim.learning_rate | status |" in text
  assert text.index("| 0.01 |") < text.index("| 0.001 |")
  assert os.path.getsize(tmp_path / f"sweep_{metric}.png") > 1000
  assert not messages
  with pytest.raises(ValueError, match="mode='best'"):
    leaderboard.summarize(str(tmp_path), trials, mode="best")


# --------------------------------------------------------------------------
# The command line.


def test_print_commands_parse_back_into_the_trials(tmp_path):
  root = str(tmp_path / "sweep")
  config_path = quick_config(str(tmp_path))
  out = run_module("experiments.sweep", f"--config={config_path}",
                   f"--sweep={TEST_SWEEP}", f"--workdir={root}",
                   "--print_commands", "--extra_flags=--jax_enable_x64",
                   "--python=python3")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  config = sweep.load_config_file(config_path)
  trials = sweep.make_trials(root, sweep.load_sweep(TEST_SWEEP))
  assert len(lines) == len(trials) == 4
  for line, trial in zip(lines, trials):
    argv = shlex.split(line)
    assert argv[:3] == ["python3", "-m", "experiments.train"]
    assert argv[-1] == "--jax_enable_x64"
    parsed, workdir = parse_train_flags(argv[2:-1])
    assert workdir == trial.workdir
    assert parsed.to_json() == sweep.apply_overrides(
        config, trial.overrides).to_json()
  assert not os.path.exists(root)


def test_a_bad_trial_stops_the_sweep_before_anything_runs(tmp_path):
  bad = write(tmp_path / "bad.py", "def get_sweep():\n  return [{'seed': 1},"
              " {'optim.learnig_rate': 1e-3}]\n")
  out = run_module("experiments.sweep", f"--config={TEST_CONFIG}",
                   f"--sweep={bad}", f"--workdir={tmp_path / 'root'}")
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == (
      "sweep: error: trial learnig_rate=0.001: Unknown config key "
      "'optim.learnig_rate'; closest: optim.learning_rate, "
      "optim.end_learning_rate_factor, optim.weight_decay.")
  assert not os.path.exists(tmp_path / "root")
