"""Losses: metric identities, exact symmetries, schedules, energy training."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import energy
from pgmoe_jax import ground_state
from pgmoe_jax import losses
from pgmoe_jax import potentials
from pgmoe_jax import residual
from pgmoe_jax.models import build_model


def config(**loss):
  base = dict(mode="supervised", supervised="infidelity",
              supervised_weight=1.0, energy_weight=0.0, schedule="constant",
              anneal_steps=100, unlabelled_batch_size=4, augment=False)
  base.update(loss)
  return ml_collections.ConfigDict(dict(
      dtype="float64", loss=base,
      data=dict(family="gaussian_wells", ranges={})))


def labelled(grid, count=3, seed=0):
  v = np.asarray(potentials.gaussian_wells(jax.random.key(seed), grid,
                                           (count,)))
  e0, psi0 = ground_state(v, grid)
  return {"potential": jnp.asarray(v), "psi0": jnp.asarray(psi0),
          "E0": jnp.asarray(e0)}


GRID = Grid((12, 12), 12.0)


def test_metric_identities():
  batch = labelled(GRID)
  psi0 = batch["psi0"]
  np.testing.assert_allclose(losses.infidelity(-3 * psi0, psi0, GRID), 0,
                             atol=1e-14)
  np.testing.assert_allclose(losses.normalized_mse(-3 * psi0, psi0, GRID), 0,
                             atol=1e-20)
  noisy = psi0 + 0.05 * jax.random.normal(jax.random.key(0), psi0.shape)
  np.testing.assert_allclose(losses.rayleigh_quotient(noisy,
                                                      batch["potential"],
                                                      GRID),
                             energy(noisy, batch["potential"], GRID),
                             rtol=1e-13)
  np.testing.assert_allclose(losses.residual_norm(noisy, batch["potential"],
                                                  GRID),
                             residual(noisy, batch["potential"], GRID),
                             rtol=1e-12)
  metrics = losses.eval_metrics(noisy, batch, GRID)
  assert (np.asarray(metrics["energy_error_mha"]) > 0).all()  # variational
  metrics = losses.eval_metrics(psi0, batch, GRID)
  np.testing.assert_allclose(metrics["energy_error_mha"], 0, atol=1e-8)


@pytest.mark.parametrize("grid, count", [
    (Grid((10, 10), 8.0), 8), (Grid((10, 12), (8.0, 9.0)), 4),
    (Grid((6, 6, 6), 6.0), 48), (Grid((9,), 5.0), 2)])
def test_symmetries_are_exact(grid, count):
  transforms = losses.symmetry_transforms(grid)
  assert len(transforms) == count
  batch = labelled(grid, 1, seed=3)
  v, psi0, e0 = batch["potential"], batch["psi0"], batch["E0"]
  images = set()
  for transform in transforms:
    tv, tpsi = transform(v), transform(psi0)
    # The transformed state is the ground state of the transformed potential.
    assert float(residual(tpsi, tv, grid)[0]) < 1e-8
    np.testing.assert_allclose(energy(tpsi, tv, grid), e0, atol=1e-10)
    images.add(np.asarray(tv).tobytes())
  assert len(images) == count  # all distinct for a generic potential


@pytest.mark.parametrize("grid", [
    Grid((10, 10), 8.0), Grid((10, 12), (8.0, 9.0)), Grid((6, 6, 6), 6.0)])
def test_symmetry_pairs_invert(grid):
  pairs = losses.symmetry_pairs(grid)
  assert len(pairs) == len(losses.symmetry_transforms(grid))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2,) + grid.shape))
  for transform, inverse in pairs:
    np.testing.assert_array_equal(inverse(transform(x)), x)
    np.testing.assert_array_equal(transform(inverse(x)), x)


def test_augment_moves_potential_and_label_together():
  batch = labelled(GRID, 2)
  out = losses.augment(jax.random.key(5), batch, GRID)
  assert float(jnp.max(residual(out["psi0"], out["potential"], GRID))) < 1e-8
  np.testing.assert_array_equal(out["E0"], batch["E0"])


def test_anneal_schedule():
  cfg = config(schedule="anneal", energy_weight=2.0, anneal_steps=100)
  w = [float(losses.energy_weight(cfg, s)) for s in (0, 25, 50, 100, 400)]
  assert w[0] == 0 and w[2] == pytest.approx(1.0) and w[3] == w[4] == 2.0
  assert w[1] < w[2]
  assert float(losses.energy_weight(config(energy_weight=0.5), 7)) == 0.5


def test_loss_modes():
  grid = Grid((8, 8), 8.0)
  model = build_model(dict(name="dense", hidden=(16,)), grid)
  batch = labelled(grid, 2)
  params = model.init(jax.random.key(0), batch["potential"])["params"]
  apply = lambda p, v: model.apply({"params": p}, v)
  key = jax.random.key(1)
  sup = losses.make_loss_fn(config(), grid, apply)
  loss, metrics = sup(params, batch, key, 0)
  assert float(loss) == pytest.approx(float(metrics["infidelity"]))
  mixed = losses.make_loss_fn(config(energy_weight=0.5), grid, apply)
  loss, metrics = mixed(params, batch, key, 0)
  assert float(loss) == pytest.approx(
      float(metrics["supervised"]) + 0.5e-3 * float(
          metrics["energy_error_mha"]))
  semi = losses.make_loss_fn(config(mode="semi_supervised",
                                    energy_weight=1.0), grid, apply)
  loss, metrics = semi(params, batch, key, 0)
  assert "energy" in metrics
  free = losses.make_loss_fn(config(mode="label_free", energy_weight=1.0,
                                    schedule="anneal"), grid, apply)
  loss, metrics = free(params, {}, key, 0)
  assert float(loss) == pytest.approx(float(metrics["energy"]))
  assert not losses.needs_labels(config(mode="label_free", energy_weight=1.0))
  grads = jax.grad(lambda p: free(p, {}, key, 0)[0])(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("bad, message", [
    (dict(mode="unsupervised"), "known: supervised, semi_supervised"),
    (dict(supervised="l1"), "known: infidelity, mse"),
    (dict(schedule="cyclic"), "known: constant, anneal"),
    (dict(mode="label_free"), "energy_weight must be positive"),
])
def test_bad_loss_configs(bad, message):
  with pytest.raises(ValueError, match=message):
    losses.make_loss_fn(config(**bad), GRID, lambda p, v: v)


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
    return losses.rayleigh_quotient(model.apply({"params": p}, v), v,
                                    grid)[0]

  optimizer = optax.adam(1e-2)
  state = optimizer.init(params)

  @jax.jit
  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state, value

  for _ in range(1500):
    params, state, value = step(params, state)
  error_mha = (float(loss(params)) - float(e0[0])) * 1000
  assert 0 <= error_mha < 1.0
