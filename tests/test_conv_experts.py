"""Convolutional experts: built by name, trained, saved, restored, sized.

``model.experts = "conv"`` (:mod:`pgmoe_jax.models.conv_experts`) on the
test config: the loss falls, a checkpoint round-trips, and the module's
memory estimate (``activations_per_sample``, as
:func:`pgmoe_jax.memory.training_estimate` counts it) is within 20% of the
peak XLA plans for its forward and backward pass.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import wells_splits

from experiments.configs import test as test_config
from pgmoe_jax import data
from pgmoe_jax import inference
from pgmoe_jax import models
from pgmoe_jax import potentials
from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import training_estimate
from pgmoe_jax.models import conv_experts
from pgmoe_jax.models import tiling
from pgmoe_jax.rundir import workdir as workdir_lib
from pgmoe_jax.training import train_and_evaluate

GRID = Grid((16, 16), 20.0)


def conv_config():
  """The test config with the experts name overridden."""
  config = test_config.get_config()
  config.model.experts = "conv"
  return config


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
  """A short supervised run of the conv experts: (workdir, state, val).

  Supervised (infidelity plus the energy error, both >= 0), so "the loss
  falls by a third" means something: the test config's label-free loss is
  the energy itself, negative for wells. A larger learning rate than the
  test config's, so that 60 steps show it.
  """
  root = tmp_path_factory.mktemp("conv")
  paths = wells_splits(root, GRID)
  config = conv_config()
  config.data.train, config.data.val = paths["train"], paths["val"]
  config.loss.mode = "supervised"
  config.optim.learning_rate = 1e-2
  config.train.num_steps = 60
  config.train.checkpoint_every_steps = 30
  config.train.eval_every_steps = 30
  workdir = str(root / "run")
  state = train_and_evaluate(config, workdir)
  return workdir, state, data.open_dataset(paths["val"])


def test_conv_experts_are_built_by_name_and_keep_their_names():
  model = models.build_model(conv_config().model, GRID)
  assert isinstance(model.experts, conv_experts.ConvExperts)
  v = potentials.gaussian_wells(jax.random.key(0), GRID, (3,))
  variables = model.init(jax.random.key(1), v)
  assert set(variables["params"]) == {"tile_embedding", "conv_expert"}
  assert set(variables["params"]["conv_expert"]) == {"Conv_0", "tile_bias",
                                                     "Conv_1"}
  psi = model.apply(variables, v)
  assert psi.shape == v.shape and bool(jnp.all(psi > 0))
  # An untrained model starts near its gate's envelope.
  gate_only = model.apply(variables, v, use_experts=False)
  assert float(jnp.max(jnp.abs(psi - gate_only))) < 0.05 * float(
      jnp.max(gate_only))
  with pytest.raises(ValueError, match="known experts: mlp, conv"):
    models.build_model(dict(name="pgmoe", experts="attention"), GRID)
  with pytest.raises(ValueError, match="at least one hidden layer"):
    models.build_model(dict(name="pgmoe", experts="conv", expert_hidden=()),
                       GRID)


def test_conv_experts_train(conv_run):
  workdir, state, _ = conv_run
  assert int(state.step) == 60
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [r for r in map(json.loads, f) if r["split"] == "train"]
  first, last = rows[0]["loss"], rows[-1]["loss"]
  print(f"conv experts: loss {first:.4f} at step {rows[0]['step']}, "
        f"{last:.4f} at step {rows[-1]['step']}")
  assert last <= first * 2 / 3, (first, last)


def test_conv_experts_round_trip_through_a_checkpoint(conv_run):
  workdir, state, val = conv_run
  model = inference.load_model(workdir, which="latest")
  assert model.step == 60 and model.config.model.experts == "conv"
  for a, b in zip(jax.tree.leaves(model.params),
                  jax.tree.leaves(state.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  v = np.asarray(val.potentials[:5], np.float32)
  net = models.build_model(conv_config().model, GRID)
  expected = jax.jit(net.apply)({"params": state.params}, v)
  np.testing.assert_allclose(np.asarray(model.predict(v)),
                             np.asarray(expected), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape, tiles, halo, hidden, batch", [
    ((16, 16), 4, 1, (16,), 8),  # the test config's experts
    # Fast tier: the test config's case; the others the same estimate, in
    # the slow tier.
    pytest.param((32, 32), 4, 2, (16, 16), 32, marks=pytest.mark.slow),
    pytest.param((16, 16, 16), 4, 1, (8,), 8, marks=pytest.mark.slow),
])
def test_memory_estimate_is_within_a_fifth_of_the_measured_peak(
    shape, tiles, halo, hidden, batch):
  # The measured peak: what XLA allocates for a gradient step of the
  # experts alone (its temporaries, the parameters and patches in, the
  # gradients out), from the compiled computation's memory analysis.
  tiles = tiling.Tiling(Grid(shape, 20.0), tiles, halo)
  experts = conv_experts.ConvExperts(tiles, hidden, 4)
  input_shape = (tiles.num_tiles,) + tiles.patch_shape + (2,)
  x = jnp.zeros((batch,) + input_shape, jnp.float32)
  params = experts.init(jax.random.key(0), x)["params"]

  def loss(p, x):
    return jnp.sum(experts.apply({"params": p}, x)**2)

  analysis = jax.jit(jax.grad(loss)).lower(params, x).compile(
  ).memory_analysis()
  peak = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
          + analysis.output_size_in_bytes - analysis.alias_size_in_bytes)
  parts = training_estimate(models.count_params(params), 4, batch, 0,
                            experts.activations_per_sample(input_shape))
  # Parameters and their gradients, and the activations.
  estimate = 2 * parts["parameters"] + parts["activations"]
  print(f"conv experts {shape} {hidden} batch {batch}: estimate "
        f"{estimate:,.0f} B, measured peak {peak:,} B "
        f"({estimate / peak:.3f}x)")
  assert 0.8 * peak <= estimate <= 1.2 * peak, (estimate, peak)


def test_an_old_config_json_without_experts_is_the_same_model(tmp_path):
  # Workdirs written before the field existed resume with today's config.
  old = workdir_lib.config_to_dict(test_config.get_config())
  del old["model"]["experts"]
  workdir_lib.save_config(old, str(tmp_path))
  assert workdir_lib.save_config(test_config.get_config(),
                                 str(tmp_path)) == []
  with pytest.raises(ValueError, match=r"model\.experts: 'mlp' -> 'conv'"):
    workdir_lib.save_config(conv_config(), str(tmp_path))
