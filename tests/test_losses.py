"""Losses: schedules, modes, augmentation, energy-only training."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments.configs import test as test_config
from helpers import labelled
from pgmoe_jax import Grid
from pgmoe_jax import ground_state
from pgmoe_jax import potentials
from pgmoe_jax import residual
from pgmoe_jax import variational
from pgmoe_jax.models import build_model
from pgmoe_jax.training import config as config_lib
from pgmoe_jax.training import losses


def config(**loss):
  base = dict(mode="supervised", supervised="infidelity",
              supervised_weight=1.0, energy_weight=0.0, schedule="constant",
              anneal_steps=100, unlabelled_batch_size=4, augment=False)
  base.update(loss)
  return ml_collections.ConfigDict(dict(
      dtype="float64", loss=base,
      data=dict(family="gaussian_wells", ranges={})))


GRID = Grid((12, 12), 12.0)


def loss_section(cfg):
  """The typed ``loss`` section of ``cfg``."""
  return config_lib.LossConfig(**cfg.loss.to_dict())


def test_augment_moves_potential_and_label_together():
  batch = labelled(GRID, 2)
  out = losses.augment(jax.random.key(5), batch, GRID)
  assert float(jnp.max(residual(out["psi0"], out["potential"], GRID))) < 1e-8
  np.testing.assert_array_equal(out["E0"], batch["E0"])


def test_anneal_schedule():
  cfg = config(schedule="anneal", energy_weight=2.0, anneal_steps=100)
  w = [float(losses.energy_weight(loss_section(cfg), s))
       for s in (0, 25, 50, 100, 400)]
  assert w[0] == 0 and w[2] == pytest.approx(1.0) and w[3] == w[4] == 2.0
  assert w[1] < w[2]
  assert float(losses.energy_weight(
      loss_section(config(energy_weight=0.5)), 7)) == 0.5


def resolved(grid, **loss):
  """A whole config (the test config on ``grid``, a small dense model)."""
  cfg = test_config.get_config()
  cfg.dtype = "float64"
  cfg.grid.shape = grid.shape
  cfg.grid.length = grid.length[0]
  cfg.model = ml_collections.ConfigDict(dict(name="dense", hidden=(16,)))
  cfg.data.train = "unused"
  cfg.loss.update(config(**loss).loss)
  return config_lib.resolve(cfg)


def test_loss_modes():
  grid = Grid((8, 8), 8.0)
  model = build_model(dict(name="dense", hidden=(16,)), grid)
  batch = labelled(grid, 2)
  params = model.init(jax.random.key(0), batch["potential"])["params"]
  apply = lambda p, v: model.apply({"params": p}, v)
  key = jax.random.key(1)
  sup = losses.make_loss_fn(resolved(grid), apply)
  loss, metrics = sup(params, batch, key, 0)
  assert float(loss) == pytest.approx(float(metrics["infidelity"]))
  mixed = losses.make_loss_fn(resolved(grid, energy_weight=0.5), apply)
  loss, metrics = mixed(params, batch, key, 0)
  assert float(loss) == pytest.approx(
      float(metrics["supervised"]) + 0.5e-3 * float(
          metrics["energy_error_mha"]))
  semi = losses.make_loss_fn(resolved(grid, mode="semi_supervised",
                                      energy_weight=1.0), apply)
  loss, metrics = semi(params, batch, key, 0)
  assert "energy" in metrics
  free_run = resolved(grid, mode="label_free", energy_weight=1.0,
                      schedule="anneal")
  free = losses.make_loss_fn(free_run, apply)
  loss, metrics = free(params, {}, key, 0)
  assert float(loss) == pytest.approx(float(metrics["energy"]))
  assert not free_run.uses_labels
  grads = jax.grad(lambda p: free(p, {}, key, 0)[0])(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def small_dense():
  """An 8x8 grid, a small dense model's parameters and apply, a key."""
  grid = Grid((8, 8), 8.0)
  model = build_model(dict(name="dense", hidden=(16,)), grid)
  v0 = labelled(grid, 2)["potential"]
  params = model.init(jax.random.key(0), v0)["params"]
  return grid, params, lambda p, v: model.apply({"params": p}, v), (
      jax.random.key(1))


def test_the_log_residual_objective_is_each_states_log_squared_residual():
  grid, params, apply, key = small_dense()
  run = resolved(grid, mode="label_free", energy_weight=2.0,
                 unlabelled_objective="log_residual")
  loss, metrics = losses.make_loss_fn(run, apply)(params, {}, key, 0)
  # The streamed batch the loss drew, and its states' residuals by hand.
  v = run.stream(jax.random.split(key)[1])
  psi = apply(params, v)
  expected = np.mean(np.log(np.asarray(residual(psi, v, grid))**2))
  assert float(metrics["log_residual"]) == pytest.approx(expected,
                                                         rel=1e-12)
  assert float(loss) == pytest.approx(2.0 * expected, rel=1e-12)
  assert float(metrics["energy"]) == pytest.approx(
      float(np.mean(variational.energy(psi, v, grid))), rel=1e-12)
  # The default objective is the mean energy (unchanged).
  energy_run = resolved(grid, mode="label_free", energy_weight=2.0)
  assert energy_run.loss.unlabelled_objective == "energy"
  loss, metrics = losses.make_loss_fn(energy_run, apply)(params, {}, key, 0)
  assert float(loss) == pytest.approx(2.0 * float(metrics["energy"]))
  assert "log_residual" not in metrics


def test_the_energy_term_beside_the_log_residual_is_weighted_mean_energy():
  grid, params, apply, key = small_dense()
  run = resolved(grid, mode="label_free", energy_weight=2.0,
                 unlabelled_objective="log_residual",
                 unlabelled_energy_weight=30.0)
  loss, metrics = losses.make_loss_fn(run, apply)(params, {}, key, 0)
  v = run.stream(jax.random.split(key)[1])
  psi = apply(params, v)
  log_r2 = np.mean(np.log(np.asarray(residual(psi, v, grid))**2))
  mean_e = float(np.mean(variational.energy(psi, v, grid)))
  assert float(metrics["log_residual"]) == pytest.approx(log_r2, rel=1e-12)
  assert float(loss) == pytest.approx(2.0 * (log_r2 + 30.0 * mean_e),
                                      rel=1e-12)
  # Its gradient is the log residual's plus the weight times the energy's.

  def part(weight):
    r = resolved(grid, mode="label_free", energy_weight=1.0,
                 unlabelled_objective="log_residual",
                 unlabelled_energy_weight=weight)
    return jax.grad(lambda p: losses.make_loss_fn(r, apply)(
        p, {}, key, 0)[0])(params)
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  plain, weighted = part(0.0), part(30.0)
  energy_grad = jax.grad(lambda p: jnp.mean(variational.energy(
      apply(p, v), v, grid)))(params)
  for a, b, c in zip(jax.tree.leaves(plain), jax.tree.leaves(weighted),
                     jax.tree.leaves(energy_grad)):
    np.testing.assert_allclose(b, a + 30.0 * c, rtol=1e-9, atol=1e-12)


def test_the_residual_power_mean_weighs_the_worst_states_more():
  # residual_power p > 0: log of the p-th power mean of the squared
  # residuals over p, (1/p) log mean(r2^p): the mean log at p -> 0, the
  # log of the mean at p = 1.
  grid, params, apply, key = small_dense()

  def term(power):
    run = resolved(grid, mode="label_free", energy_weight=1.0,
                   unlabelled_objective="log_residual",
                   unlabelled_batch_size=8, residual_power=power)
    return float(losses.make_loss_fn(run, apply)(params, {}, key, 0)[0]), run
  _, run = term(0.0)
  v = run.stream(jax.random.split(key)[1])
  r2 = np.asarray(residual(apply(params, v), v, grid))**2
  assert np.ptp(np.log(r2)) > 1.0  # states that differ
  assert term(0.0)[0] == pytest.approx(np.mean(np.log(r2)), rel=1e-12)
  for power in (0.25, 1.0):
    assert term(power)[0] == pytest.approx(
        np.log(np.mean(r2**power)) / power, rel=1e-12)
  assert term(1e-6)[0] == pytest.approx(term(0.0)[0], rel=1e-5)
  assert term(0.0)[0] < term(0.25)[0] < term(1.0)[0]


@pytest.mark.parametrize("bad, message", [
    (dict(mode="unsupervised"), "known: supervised, semi_supervised"),
    (dict(supervised="l1"), "known: infidelity, mse"),
    (dict(schedule="cyclic"), "known: constant, anneal"),
    (dict(mode="label_free"), "energy_weight must be positive"),
    (dict(mode="label_free", energy_weight=1.0,
          unlabelled_objective="residual"),
     "unlabelled_objective 'residual'; known: energy, log_residual"),
    (dict(mode="label_free", energy_weight=1.0,
          unlabelled_objective="log_residual", unlabelled_energy_weight=-1.0),
     "unlabelled_energy_weight must be >= 0"),
    (dict(mode="label_free", energy_weight=1.0, unlabelled_energy_weight=1.0),
     "unlabelled_energy_weight adds the mean energy to the log residual"),
    (dict(mode="label_free", energy_weight=1.0,
          unlabelled_objective="log_residual", residual_power=-0.5),
     "residual_power must be >= 0"),
    (dict(mode="label_free", energy_weight=1.0, residual_power=0.5),
     "residual_power is the power mean of the log residual"),
])
def test_bad_loss_configs(bad, message):
  with pytest.raises(ValueError, match=message):
    resolved(GRID, **bad)


def test_energy_only_training_reaches_ground_state():
  # One fixed potential, no labels: minimising the Rayleigh quotient alone
  # must find E0 (the variational principle).
  grid = Grid((16, 16), 12.0)
  v = potentials.gaussian_wells(jax.random.key(7), grid, (1,))
  e0, _ = ground_state(np.asarray(v), grid)
  model = build_model(dict(name="pgmoe", tiles=4, coarse=8,
                           expert_hidden=(16,)), grid)
  params = model.init(jax.random.key(0), v)["params"]

  def loss(p):
    return variational.rayleigh_quotient(model.apply({"params": p}, v), v,
                                         grid)[0]

  optimizer = optax.adam(1e-2)
  state = optimizer.init(params)

  @jax.jit
  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state, value

  # 300 steps reach ~0.02 mHa (1500 reached ~0.001): 50x inside the bound.
  for _ in range(300):
    params, state, value = step(params, state)
  error_mha = (float(loss(params)) - float(e0[0])) * 1000
  assert 0 <= error_mha < 1.0
