"""load_model: rebuilds a trained model from its workdir and predicts."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from helpers import wells_splits

from experiments.configs import test as test_config
from pgmoe_jax import data
from pgmoe_jax import inference
from pgmoe_jax import memory
from pgmoe_jax import models
from pgmoe_jax import symmetry
from pgmoe_jax.grid import Grid
from pgmoe_jax.rundir import checkpoint
from pgmoe_jax.rundir import workdir as workdir_lib
from pgmoe_jax.training import summaries
from pgmoe_jax.training import train_and_evaluate

GRID = Grid((16, 16), 20.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A short supervised run with validation: (workdir, final state, val)."""
  root = tmp_path_factory.mktemp("inference")
  paths = wells_splits(root, GRID)
  config = test_config.get_config()
  config.data.train, config.data.val = paths["train"], paths["val"]
  config.loss.mode = "supervised"
  config.train.num_steps = 12
  config.train.checkpoint_every_steps = 4
  config.train.eval_every_steps = 4
  config.train.keep_checkpoints = 1
  workdir = str(root / "run")
  state = train_and_evaluate(config, workdir)
  return workdir, state, data.open_dataset(paths["val"])


# Fast tier: test_conv_experts_round_trip_through_a_checkpoint and
# tests/test_golden.py (shipped checkpoints predict their stored outputs).
@pytest.mark.slow
def test_round_trip_predicts_like_the_trained_params(trained):
  workdir, state, val = trained
  model = inference.load_model(workdir, which="latest")
  assert model.step == 12 and model.grid == GRID
  assert model.num_params == models.count_params(state.params)
  for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(state.params),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert model.config.model.name == "pgmoe"

  v = np.asarray(val.potentials[:5], np.float32)
  psi = np.asarray(model.predict(v))
  net = models.build_model(test_config.get_config().model, GRID)
  expected = jax.jit(net.apply)({"params": state.params}, v)
  np.testing.assert_allclose(psi, np.asarray(expected), rtol=1e-6, atol=1e-7)
  assert psi.shape == v.shape and psi.dtype == np.float32
  norms = (psi.astype(np.float64)**2).sum((1, 2)) * GRID.volume_element
  np.testing.assert_allclose(norms, 1.0, rtol=1e-5)

  one = np.asarray(model.predict(v[0]))
  assert one.shape == GRID.shape
  np.testing.assert_allclose(one, psi[0], rtol=1e-5, atol=1e-7)
  nested = np.asarray(model.predict(v[:4].reshape((2, 2) + GRID.shape)))
  np.testing.assert_allclose(nested.reshape((4,) + GRID.shape), psi[:4],
                             rtol=1e-5, atol=1e-7)


# Fast tier: tests/test_symmetry.py.
@pytest.mark.slow
def test_symmetrized_prediction_averages_and_is_equivariant(trained):
  workdir, _, val = trained
  plain = inference.load_model(workdir, which="latest")
  model = inference.load_model(workdir, which="latest", symmetrize=True)
  assert "symmetrized" in repr(model) and "symmetrized" not in repr(plain)
  v = np.asarray(val.potentials[:3], np.float64)
  # Exact checks in float64: in float32 the gate's rounding in the
  # far tails depends on the batch.
  config = ml_collections.ConfigDict(plain.config.to_dict())
  config.dtype = "float64"
  params = jax.tree.map(lambda x: np.asarray(x, np.float64), plain.params)
  plain64 = inference.Predictor(config, GRID, plain.model, params, 12)
  model64 = inference.Predictor(config, GRID, plain.model, params, 12,
                                symmetrize=True)
  psi = np.asarray(model64.predict(v))
  assert psi.dtype == np.float64 and (psi > 0).all()
  pairs = symmetry.symmetry_pairs(GRID)
  assert len(pairs) == 8  # the square's rotations and reflections
  # The normalised mean of the predictions for the transformed potentials,
  # each mapped back.
  mean = np.mean([np.asarray(inverse(plain64.predict(transform(v))))
                  for transform, inverse in pairs], axis=0)
  expected = mean / np.sqrt((mean**2).sum((1, 2), keepdims=True)
                            * GRID.volume_element)
  np.testing.assert_allclose(psi, expected, rtol=1e-10, atol=1e-14)
  # Exactly equivariant, which the plain model (its tile embedding tells the
  # tiles apart) is not.
  for transform, _ in pairs:
    np.testing.assert_allclose(model64.predict(transform(v)), transform(psi),
                               rtol=1e-10, atol=1e-14)
  flip = pairs[1][0]
  assert np.max(np.abs(np.asarray(plain64.predict(flip(v)))
                       - flip(plain64.predict(v)))) > 1e-6
  # The loaded float32 predictor gives the same states to float32 accuracy,
  # for one potential as for a batch.
  psi32 = np.asarray(model.predict(v.astype(np.float32)))
  assert psi32.dtype == np.float32
  np.testing.assert_allclose(psi32, psi, atol=1e-4 * psi.max())
  np.testing.assert_allclose(model.predict(v[0].astype(np.float32)), psi32[0],
                             atol=1e-4 * psi.max())


def test_best_is_the_lowest_validation_error(trained):
  workdir, _, _ = trained
  with open(os.path.join(workdir, summaries.METRICS_FILE)) as f:
    val = {r["step"]: r["energy_error_mha_median"]
           for r in map(json.loads, f) if r["split"] == "val"}
  best = min(val, key=lambda s: (val[s], -s))
  model = inference.load_model(workdir)  # which="best"
  assert model.step == best
  ckpts = checkpoint.Checkpoints(checkpoint.checkpoint_dir(workdir),
                                 read_only=True)
  assert ckpts.steps() == sorted({12, best})  # 1 latest + the best
  ckpts.close()


def test_wrong_shapes_are_refused(trained):
  model = inference.load_model(trained[0], which="latest")
  with pytest.raises(ValueError, match=r"shape \(16, 16\) or \(batch, 16, "
                     r"16\).*got \(3, 16, 15\)"):
    model.predict(np.zeros((3, 16, 15), np.float32))
  with pytest.raises(ValueError, match="got \\(16,\\)"):
    model.predict(np.zeros(16, np.float32))


# Fast tier: test_predict's runs of Predictor.predict.
@pytest.mark.slow
def test_memory_is_read_once_per_batch_size(trained, monkeypatch):
  model = inference.load_model(trained[0], which="latest")
  reads = []

  def available(device=None):
    reads.append(device)
    return 1 << 40
  monkeypatch.setattr(memory, "device_available_bytes", available)
  v = np.zeros((3,) + GRID.shape, np.float32)
  for _ in range(3):
    model.predict(v)
  assert len(reads) == 1
  model.predict(v[:2])
  model.predict(v[:2])
  assert len(reads) == 2
  # A batch that does not fit is refused every time it is asked for.
  monkeypatch.setattr(memory, "device_available_bytes", lambda device=None: 1)
  for _ in range(2):
    with pytest.raises(memory.InsufficientMemoryError, match="predict"):
      model.predict(v[:1])
  model.predict(v)  # checked before: not read again


def test_missing_workdir_config_or_checkpoint(trained, tmp_path):
  with pytest.raises(ValueError, match="No such workdir"):
    inference.load_model(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="has no config.json"):
    inference.load_model(str(tmp_path))
  with open(os.path.join(trained[0], workdir_lib.CONFIG_FILE)) as f:
    config = f.read()
  with open(tmp_path / workdir_lib.CONFIG_FILE, "w") as f:
    f.write(config)
  with pytest.raises(ValueError, match="has no checkpoint"):
    inference.load_model(str(tmp_path))
  with pytest.raises(ValueError, match="Unknown which='first'"):
    inference.load_model(trained[0], which="first")
