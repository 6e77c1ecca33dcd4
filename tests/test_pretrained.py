"""The pretrained models shipped with the package, and how they ship."""

import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from experiments.configs import test as test_config
from pgmoe_jax import energy
from pgmoe_jax import ground_state
from pgmoe_jax import inference
from pgmoe_jax import potentials
from pgmoe_jax import pretrained
from pgmoe_jax.training import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("gaussian3d_32", "learned_cascade3d_32", "learned_cascade_64",
           "universal_32", "universal_64")
# The model cards' median energy errors on gaussian_wells (mHa).
CARD_MEDIAN_MHA = {"universal_32": 0.753, "universal_64": 0.433,
                   "gaussian3d_32": 1.14, "learned_cascade_64": 0.0683,
                   "learned_cascade3d_32": 0.0369}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  config = test_config.get_config()
  config.train.num_steps = 10
  config.train.checkpoint_every_steps = 5
  config.train.eval_every_steps = 5
  workdir = str(tmp_path_factory.mktemp("tiny") / "run")
  train_and_evaluate(config, workdir)
  return workdir


def test_export_writes_a_workdir_that_predicts_the_same(tiny_run, tmp_path):
  destination = str(tmp_path / "tiny_model")
  pretrained.export(tiny_run, destination, "# tiny\n")
  # Parameters and config only: no optimiser state, metrics or logs.
  files = {os.path.relpath(os.path.join(d, f), destination)
           for d, _, names in os.walk(destination) for f in names}
  assert "MODEL_CARD.md" in files and "config.json" in files
  assert not any("opt_state" in f or "metrics.jsonl" in f for f in files)
  original, exported = (inference.load_model(tiny_run),
                        inference.load_model(destination))
  assert exported.step == original.step
  v = potentials.sample("gaussian_wells", jax.random.key(0), original.grid, 3)
  np.testing.assert_array_equal(np.asarray(exported.predict(v)),
                                np.asarray(original.predict(v)))
  with pytest.raises(ValueError, match="exists"):
    pretrained.export(tiny_run, destination, "# tiny\n")
  with pytest.raises(ValueError, match="card is empty"):
    pretrained.export(tiny_run, str(tmp_path / "other"), " \n")
  assert not os.path.exists(tmp_path / "other")


def test_names_and_errors():
  assert set(SHIPPED) <= set(pretrained.available())
  with pytest.raises(ValueError, match="Did you mean 'universal_32'"):
    pretrained.load_pretrained("universal32")
  with pytest.raises(ValueError, match="no such workdir"):
    pretrained.resolve("./no/such/run")
  for name in SHIPPED:
    card = pretrained.model_card(name)
    for section in ("## Training", "## Evaluation", "## Domain",
                    "## Known failure cases"):
      assert section in card, (name, section)


@pytest.mark.parametrize("name, shape, method", [
    ("universal_32", (32, 32), "eigsh"), ("universal_64", (64, 64), "eigsh"),
    ("learned_cascade_64", (64, 64), "eigsh"),
    # eigsh takes ~10 s a state at 32^3: the float64 LOBPCG labelled its data.
    # Fast tier: test_golden::test_shipped_model_matches_golden[gaussian3d_32].
    pytest.param("gaussian3d_32", (32, 32, 32), "lobpcg",
                 marks=pytest.mark.slow),
    pytest.param("learned_cascade3d_32", (32, 32, 32), "lobpcg",
                 marks=pytest.mark.slow)])
def test_shipped_models_predict_ground_states(name, shape, method):
  import pgmoe_jax  # pylint: disable=g-import-not-at-top
  model = pgmoe_jax.load_pretrained(name)
  assert model.grid.shape == shape
  assert model.grid.length == (20.0,) * len(shape)
  v = np.asarray(potentials.sample("gaussian_wells", jax.random.key(11),
                                   model.grid, 8))
  psi = np.asarray(model.predict(v), np.float64)
  assert (psi > 0).all()
  axes = tuple(range(1, psi.ndim))
  np.testing.assert_allclose((psi**2).sum(axes) * model.grid.volume_element,
                             1.0, rtol=1e-5)
  e0, _ = ground_state(v.astype(np.float64), model.grid, method=method)
  error = np.asarray(energy(psi, v, model.grid)) - e0
  assert (error >= -1e-9).all()
  # 8 samples scatter around the card's median, within 3x of it.
  assert 1e3 * np.median(error) < 3 * CARD_MEDIAN_MHA[name]
  if model.model.experts is None:
    # A learned cascade: its trained parts move every state away from the
    # parameter-free cascade of the same shape (its initialisation).
    untrained = np.asarray(inference.Predictor(
        model.config, model.grid, model.model,
        jax.jit(model.model.init)(jax.random.key(0), v[:1])["params"],
        model.step).predict(v), np.float64)
    change = (np.abs(psi - untrained).reshape(len(v), -1).max(1)
              / untrained.reshape(len(v), -1).max(1))
    assert (change > 1e-4).all(), change
    return
  # The experts correct every state (by 0.1-8% of its peak): zeroed
  # experts leave the gate's state, whose energy alone is as close to the
  # card for universal_32 and gaussian3d_32.
  gate = np.asarray(model.replace(apply_kwargs={"use_experts": False})
                    .predict(v), np.float64)
  change = (np.abs(psi - gate).reshape(len(v), -1).max(1)
            / gate.reshape(len(v), -1).max(1))
  assert (change > 1e-4).all(), change


@pytest.mark.slow  # builds and installs a wheel; no fast equivalent
def test_wheel_ships_the_models_and_they_load_after_install(tmp_path):
  wheels = tmp_path / "wheels"
  build = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps",
       "--no-build-isolation", "--quiet", "-w", str(wheels), ROOT],
      capture_output=True, text=True, timeout=300, check=False)
  assert build.returncode == 0, build.stderr[-3000:]
  (wheel,) = wheels.glob("pgmoe_jax-*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  for model in pretrained.available():
    source = os.path.join(os.path.dirname(pretrained.__file__), model)
    for d, _, files in os.walk(source):
      for f in files:
        rel = os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
        assert rel in names, f"{rel} is not in {wheel.name}"
  target = tmp_path / "site"
  install = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
       "--target", str(target), str(wheel)],
      capture_output=True, text=True, timeout=300, check=False)
  assert install.returncode == 0, install.stderr[-3000:]
  code = ("import pgmoe_jax, numpy as np\n"
          "assert pgmoe_jax.__file__.startswith(%r), pgmoe_jax.__file__\n"
          "m = pgmoe_jax.load_pretrained('universal_32')\n"
          "psi = m.predict(np.zeros((1, 32, 32), np.float32))\n"
          "print(pgmoe_jax.pretrained.available(), psi.shape)\n"
          % str(target))
  run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       check=False,
                       env=dict(os.environ, PYTHONPATH=str(target),
                                JAX_PLATFORMS="cpu"))
  assert run.returncode == 0, run.stderr[-3000:]
  assert "'universal_32'" in run.stdout and "(1, 32, 32)" in run.stdout
