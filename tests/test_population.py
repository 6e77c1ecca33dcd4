"""Populations: K members in one vmapped program equal K runs trained alone."""

import os
import shutil
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import inference
from pgmoe_jax.training import losses
from pgmoe_jax.training import population
from pgmoe_jax.training import train_and_evaluate
from pgmoe_jax.training.preemption import Preempted
from tests.test_training import assert_trees_close
from tests.test_training import datasets  # noqa: F401
from tests.test_training import read_records
from tests.test_training import supervised_config

# Every batchable field differs somewhere; members 0 and 2 share a seed.
MEMBERS = (
    {"seed": 0, "optim.learning_rate": 3e-3},
    {"seed": 1, "optim.learning_rate": 1e-3, "loss.energy_weight": 0.0},
    {"seed": 0, "optim.learning_rate": 1e-3, "optim.weight_decay": 0.0,
     "optim.grad_clip": 0.0, "data.num_train": 32},
    {"seed": 1, "optim.learning_rate": 2e-3, "loss.supervised_weight": 0.5,
     "optim.end_learning_rate_factor": 0.1, "loss.energy_weight": 0.3},
)


def member_config(datasets, overrides, **train):  # noqa: F811
  config = supervised_config(datasets, num_steps=30, eval_every_steps=10,
                             checkpoint_every_steps=10, log_every_steps=5,
                             **train)
  config.dtype = "float64"
  for dotted, value in overrides.items():
    section, _, name = dotted.rpartition(".")
    (config[section] if section else config)[name] = value
  return config


@pytest.fixture(scope="module")
def trained_population(datasets, tmp_path_factory):  # noqa: F811
  """The population alone (xdist may run this module on both workers: the
  resume test needs no runs alone, so its worker trains only this)."""
  root = tmp_path_factory.mktemp("population")
  configs = [member_config(datasets, m) for m in MEMBERS]
  pop_dirs = [str(root / f"member{k}") for k in range(len(MEMBERS))]
  states = population.train_population(configs, pop_dirs)
  return configs, pop_dirs, states


@pytest.fixture(scope="module")
def trained(trained_population, tmp_path_factory):
  """The population and the same members trained alone."""
  configs, pop_dirs, states = trained_population
  root = tmp_path_factory.mktemp("alone")
  alone_dirs = [str(root / f"alone{k}") for k in range(len(MEMBERS))]
  alone = [train_and_evaluate(c, w) for c, w in zip(configs, alone_dirs)]
  return configs, pop_dirs, alone_dirs, states, alone


# Fast tier: test_only_batchable_fields_may_differ and tests/test_training.py
# (the train step each member runs, vmapped).
@pytest.mark.slow
def test_members_equal_runs_trained_alone(trained):
  _, pop_dirs, alone_dirs, states, alone = trained
  for k, (state, single) in enumerate(zip(states, alone)):
    assert int(state.step) == int(single.step) == 30, k
    assert_trees_close(state.params, single.params, rtol=1e-9, atol=1e-12)
    assert_trees_close(state.opt_state, single.opt_state, rtol=1e-9,
                       atol=1e-12)
    pop_val = [r for r in read_records(pop_dirs[k]) if r["split"] == "val"]
    alone_val = [r for r in read_records(alone_dirs[k])
                 if r["split"] == "val"]
    assert [r["step"] for r in pop_val] == [10, 20, 30]
    for a, b in zip(pop_val, alone_val, strict=True):
      assert a.keys() == b.keys()
      for key, value in b.items():
        if key == "split":
          continue
        np.testing.assert_allclose(a[key], value, rtol=1e-9, atol=1e-12,
                                   err_msg=f"member {k} {key}")


# Fast tier: test_only_batchable_fields_may_differ and tests/test_training.py
# (the train step each member runs, vmapped).
@pytest.mark.slow
def test_members_load_as_ordinary_runs(trained):
  _, pop_dirs, alone_dirs, _, _ = trained
  v = np.linspace(0.0, 1.0, 256).reshape(1, 16, 16)
  outputs = []
  for pop_dir, alone_dir in zip(pop_dirs, alone_dirs):
    model = inference.load_model(pop_dir, which="latest")
    single = inference.load_model(alone_dir, which="latest")
    assert model.step == 30
    psi = np.asarray(model.predict(v))
    np.testing.assert_allclose(psi, np.asarray(single.predict(v)),
                               rtol=1e-8, atol=1e-12)
    outputs.append(psi)
  # Different hyperparameters make different models.
  assert not np.allclose(outputs[0], outputs[1])
  assert not np.allclose(outputs[0], outputs[2])


# Fast tier: test_only_batchable_fields_may_differ and tests/test_training.py
# (the train step each member runs, vmapped).
@pytest.mark.slow
def test_population_resumes_from_the_common_step(trained_population,
                                                 tmp_path):
  configs, pop_dirs, states = trained_population
  dirs = []
  for k, src in enumerate(pop_dirs):
    dst = str(tmp_path / f"member{k}")
    shutil.copytree(src, dst)
    dirs.append(dst)
    # Killed before the last save; member 1 also lost step 20.
    shutil.rmtree(os.path.join(dst, "checkpoints", "30"))
  shutil.rmtree(os.path.join(dirs[1], "checkpoints", "20"))
  resumed = population.train_population(configs, dirs)
  for k, (a, b) in enumerate(zip(resumed, states)):
    assert int(a.step) == 30, k
    assert_trees_close(a.params, b.params, rtol=1e-9, atol=1e-12)
  steps = [r["step"] for r in read_records(dirs[0]) if r["split"] == "val"]
  assert steps == [10, 20, 30]


# Fast tier: test_only_batchable_fields_may_differ and tests/test_training.py
# (the train step each member runs, vmapped).
@pytest.mark.slow
def test_a_preempted_population_saves_every_member_and_resumes(
    trained_population, tmp_path):
  configs, pop_dirs, states = trained_population
  dirs = [str(tmp_path / f"member{k}") for k in range(len(MEMBERS))]

  def sigterm_at_step_7(step, num_steps):
    del num_steps
    if step == 7:
      os.kill(os.getpid(), signal.SIGTERM)

  with pytest.raises(Preempted) as e:
    population.train_population(configs, dirs, progress=sigterm_at_step_7)
  assert e.value.step == 8
  for d in dirs:
    assert [s for s in os.listdir(os.path.join(d, "checkpoints"))
            if s.isdigit()] == ["8"]
  resumed = population.train_population(configs, dirs)
  for k, (a, b) in enumerate(zip(resumed, states)):
    assert_trees_close(a.params, b.params, rtol=1e-9, atol=1e-12)
    assert ([(r["step"], r["split"]) for r in read_records(dirs[k])]
            == [(r["step"], r["split"]) for r in read_records(pop_dirs[k])])


def test_only_batchable_fields_may_differ(datasets, tmp_path):  # noqa: F811
  configs = [member_config(datasets, {}),
             member_config(datasets, {"model.tiles": 2})]
  with pytest.raises(ValueError, match=r"model\.tiles.*only seed"):
    population.train_population(configs, [str(tmp_path / "a"),
                                          str(tmp_path / "b")])
  assert not os.path.exists(tmp_path / "a")
  assert (population.population_key(configs[0])
          != population.population_key(configs[1]))
  assert (population.population_key(member_config(datasets, MEMBERS[0]))
          == population.population_key(member_config(datasets, MEMBERS[3])))
  with pytest.raises(ValueError, match="share a workdir"):
    population.train_population(configs[:1] * 2, [str(tmp_path / "a")] * 2)


# Fast tier: test_only_batchable_fields_may_differ and tests/test_training.py
# (the train step each member runs, vmapped).
@pytest.mark.slow
def test_a_failing_member_stops_alone(datasets, tmp_path,  # noqa: F811
                                      monkeypatch):
  make_loss_fn = losses.make_loss_fn

  def nan_for_member_0(run, apply_fn, batch_sharding=None, hparams=None):
    loss_fn = make_loss_fn(run, apply_fn, batch_sharding, hparams)

    def patched(params, batch, key, step):
      loss, metrics = loss_fn(params, batch, key, step)
      bad = (step >= 13) & (hparams["member"] == 0)
      return loss + jnp.where(bad, jnp.nan, 0.0), metrics

    return patched

  monkeypatch.setattr(losses, "make_loss_fn", nan_for_member_0)
  configs = [member_config(datasets, MEMBERS[0]),
             member_config(datasets, MEMBERS[1])]
  dirs = [str(tmp_path / "high"), str(tmp_path / "low")]
  with pytest.raises(population.MemberFailed,
                     match=r"high: non-finite .* at step 13; its last good "
                     r"checkpoint is step 10") as e:
    population.train_population(configs, dirs)
  assert list(e.value.failures) == [dirs[0]]
  assert inference.load_model(dirs[1], which="latest").step == 30
  assert inference.load_model(dirs[0], which="latest").step == 10
