"""``--vectorize``: a sweep's populations equal its trials trained alone."""

import csv
import json
import os
import textwrap

import jax
import numpy as np
import pytest

from pgmoe_jax import data
from pgmoe_jax import inference
from pgmoe_jax.grid import Grid
from pgmoe_jax.training import train_and_evaluate
from pgmoe_jax.workflows import sweep
from pgmoe_jax.workflows import sweep_populations
from test_sweep import run_module
from test_sweep import write


def vectorize_setup(tmp_path):
  """A float64 config with a validation set and 8 trials (2 seeds x 4
  learning rates), and one more trial of another model size."""
  val = str(tmp_path / "val")
  data.generate(val, data.DatasetSpec("gaussian_wells", Grid((16, 16), 20.0),
                                      16, split="val"))
  config = write(tmp_path / "config.py", textwrap.dedent(f"""\
      from experiments.configs import test


      def get_config():
        config = test.get_config()
        config.dtype = "float64"
        config.data.val = {val!r}
        config.train.num_steps = 12
        config.train.eval_every_steps = 6
        config.train.checkpoint_every_steps = 6
        config.train.log_every_steps = 3
        return config
      """))
  sweep_file = write(tmp_path / "sweep.py", textwrap.dedent("""\
      from pgmoe_jax.workflows.sweep import concat, product


      def get_sweep():
        return concat(
            product({"seed": [0, 1],
                     "optim.learning_rate": [1e-3, 2e-3, 3e-3, 4e-3]}),
            [{"seed": 0, "model.expert_hidden": (8,)}])
      """))
  return config, sweep_file


# Fast tier: tests/test_sweep.py (a sweep's trials) and test_population's
# test_only_batchable_fields_may_differ (which trials form a population).
@pytest.mark.slow
def test_vectorized_sweep_equals_trials_trained_alone(tmp_path):
  config_path, sweep_file = vectorize_setup(tmp_path)
  root = str(tmp_path / "sweep")
  args = ("experiments.sweep", f"--config={config_path}",
          f"--sweep={sweep_file}", f"--workdir={root}", "--vectorize",
          "--extra_flags=--jax_enable_x64")
  printed = run_module(*args, "--print_commands")
  assert printed.returncode == 0, printed.stderr[-3000:]
  commands = printed.stdout.splitlines()
  assert len(commands) == 2, commands  # one population, one trial alone
  assert "--population=population-0" in commands[0]
  assert "experiments.train" in commands[1]
  assert "runs alone (it differs from" in printed.stderr
  assert "model.expert_hidden" in printed.stderr

  out = run_module(*args)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(root, "sweep.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 9 and {r["status"] for r in rows} == {"done"}

  config = sweep.load_config_file(config_path)
  trials = sweep.make_trials(root, sweep.load_sweep(sweep_file))
  configs = sweep.check_trials(config, trials)
  (pop,), alone = sweep_populations.group(trials, configs)
  assert len(pop.trials) == 8 and len(alone) == 1
  # One member alone (the last: another seed and learning rate than the
  # first) keeps the test short; tests/test_population.py checks every
  # member of its population.
  for trial in (pop.trials[-1],):
    single_dir = str(tmp_path / "alone" / trial.name)
    single = train_and_evaluate(configs[trial.name], single_dir)
    member = inference.load_model(trial.workdir, which="latest")
    assert member.step == 12
    for a, b in zip(jax.tree.leaves(member.params),
                    jax.tree.leaves(single.params), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9,
                                 atol=1e-12, err_msg=trial.name)
    records = []
    for folder in (trial.workdir, single_dir):
      with open(os.path.join(folder, "metrics.jsonl")) as f:
        records.append([json.loads(line) for line in f
                        if '"val"' in line])
    assert [r["step"] for r in records[0]] == [6, 12]
    for a, b in zip(*records, strict=True):
      for key in b:
        if key != "split":
          np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-12)
  # A rerun has nothing to do.
  again = run_module(*args)
  assert again.returncode == 0
  assert "9/9 done" in again.stdout + again.stderr
