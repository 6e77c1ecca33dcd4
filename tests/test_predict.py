"""predict: predictions with energy bounds, refinement, and the command.

One tiny label-free model (the test config, 10 steps) serves every test.
Every command line (a .npy file with --refine, a user family
``test_predict:tiny_wells`` defined here, every error case) goes through
``main`` in one driver process (one JAX start, shared compilations); one
real run checks the exit status and that stderr holds one line.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import test as test_config
from pgmoe_jax import inference
from pgmoe_jax import memory
from pgmoe_jax import potentials
from pgmoe_jax import solvers
from pgmoe_jax.grid import Grid
from pgmoe_jax.training import train_and_evaluate
from pgmoe_jax.workflows import predict as predict_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, JAX_PLATFORMS="cpu",
           PYTHONPATH=os.pathsep.join([HERE, ROOT]))
BOUND_KEYS = [f"{field}_{kind}" for field in predict_lib.BOUND_FIELDS
              for kind in ("rigorous", "estimate")]
KEYS = {"states", "energy", "residual", "second_energy", "second_residual",
        "time_predict", "time_bounds", "time_beta", "predictions_per_s",
        *BOUND_KEYS}
REFINE_KEYS = {"refined_energy", "refined_states", "refined_residual",
               "converged", "iterations", "time_refine"}
CLI_KEYS = {"potentials", "model", "source", "grid_shape", "grid_length",
            "grid_boundary"}


def tiny_wells(key, grid, batch_shape=(), *, depth=(1.0, 3.0), dtype=None):
  """A user family: one gaussian well of random depth at a random centre."""
  batch = (batch_shape,) if isinstance(batch_shape, int) else tuple(
      batch_shape)
  dtype = jnp.result_type(float) if dtype is None else dtype
  u = jax.random.uniform(key, batch + (3,), dtype)
  a = depth[0] + (depth[1] - depth[0]) * u[..., 0]
  x, y = (jnp.asarray(c, dtype) for c in grid.mesh())
  shape = batch + (1, 1)
  cx = (u[..., 1] - 0.5).reshape(shape) * 4.0
  cy = (u[..., 2] - 0.5).reshape(shape) * 4.0
  return -a.reshape(shape) * jnp.exp(-((x - cx)**2 + (y - cy)**2) / 2.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(workdir, predictor, potentials .npy path, V, exact E0)."""
  root = tmp_path_factory.mktemp("predict")
  config = test_config.get_config()
  config.train.num_steps = 10
  config.train.checkpoint_every_steps = 10
  config.train.eval_every_steps = 10
  config.train.keep_checkpoints = 1
  workdir = str(root / "run")
  train_and_evaluate(config, workdir)
  model = inference.load_model(workdir)
  v = np.asarray(potentials.gaussian_wells(jax.random.key(7), model.grid,
                                           (6,)))
  path = str(root / "v.npy")
  np.save(path, v)
  e0, _ = solvers.ground_state(v, model.grid)
  return workdir, model, path, v, np.asarray(e0)


# Fast tier: test_command_on_a_file_with_refine.
@pytest.mark.slow
def test_predict_bounds_and_refinement(setup):
  _, model, _, v, e0 = setup
  out = predict_lib.predict(model, v, batch_size=4, refine=True)
  assert set(out) == KEYS | REFINE_KEYS
  assert out["states"].shape == v.shape and out["states"].dtype == np.float32
  for key in (KEYS | REFINE_KEYS) - {"states", "refined_states"}:
    assert out[key].shape == (() if key.startswith(("time", "pred")) else
                              (6,)), key
  # The upper bound holds for every sample; the lower bounds where given.
  assert (out["energy"] >= e0 - 1e-10).all()
  for key in ("lower_rigorous", "lower_estimate"):
    given = ~np.isnan(out[key])
    assert (out[key][given] <= e0[given] + 1e-10).all()
  # The estimate of E1 is the lower end of the second Ritz pair's interval
  # (the Ritz value alone is above E1), never below the rigorous one.
  e1 = np.asarray(solvers.ground_state(v, model.grid, num_states=2)[0])[:, 1]
  assert (out["beta_rigorous"] <= e1).all()
  assert (out["second_energy"] >= e1 - 1e-10).all()
  np.testing.assert_array_equal(out["beta_estimate"], np.maximum(
      out["second_energy"] - out["second_residual"], out["beta_rigorous"]))
  assert (out["beta_estimate"] <= e1).all()
  # A batch of 4, then 2 padded to 4: each row is its own prediction.
  np.testing.assert_allclose(out["states"][:4], model.predict(v[:4]),
                             atol=1e-6)
  np.testing.assert_allclose(out["states"][4:], model.predict(v[2:])[2:],
                             atol=1e-6)
  # Refined: solver-exact, and the prediction saves iterations on average
  # (chunks of 4, as refine runs here: no second compilation).
  cold = solvers.solve(v, model.grid, method="lobpcg", chunk_size=4)
  np.testing.assert_allclose(out["refined_energy"], e0, atol=1e-8)
  np.testing.assert_allclose(out["refined_energy"], cold.energies[:, 0],
                             atol=1e-8)
  assert out["converged"].all() and (out["refined_residual"] <= 1e-8).all()
  assert out["iterations"].mean() < np.asarray(cold.iterations).mean()
  summary = predict_lib.summarize(out)
  assert summary["num"] == 6 and summary["fraction_converged"] == 1.0
  assert summary["median_refine_change_mha"] == pytest.approx(
      1e3 * np.median(out["energy"] - e0), rel=1e-6)
  assert "solver states/s" in predict_lib.format_summary(summary)


def test_refinement_of_constant_potentials_is_the_box_state(setup):
  # Every kinetic mode is an exact eigenvector here: the refinement must
  # still end on the ground state (checked against the exact box energy,
  # not against the refined energy itself).
  _, model, _, _, _ = setup
  grid = model.grid
  box = sum((1 - np.cos(np.pi / (n + 1))) / h**2
            for n, h in zip(grid.shape, grid.spacing))
  v = np.stack([np.full(grid.shape, c) for c in (0.0, -1e6, 0.0, 2.0)])
  out = predict_lib.predict(model, v, batch_size=4, refine=True)
  np.testing.assert_allclose(out["refined_energy"], v[:, 0, 0] + box,
                             rtol=0, atol=1e-8)
  assert out["converged"].all()
  assert (out["refined_states"] > 0).all()


def test_second_state_estimate_approaches_e1(setup):
  _, model, _, v, _ = setup
  v = v[:4]  # the batch shape the model has compiled for
  e, _ = solvers.ground_state(v, model.grid, num_states=2)
  e1 = np.asarray(e)[:, 1]
  psi = np.asarray(model.predict(v.astype(np.float32)), np.float64)
  mu, r = predict_lib.second_state_estimate(v, psi, model.grid, 30)
  # A Ritz value is an upper bound on E1 and converges to it.
  assert (mu >= e1 - 1e-10).all()
  np.testing.assert_allclose(mu, e1, atol=1e-6)
  assert (mu - r <= e1).all()
  with pytest.raises(ValueError, match="beta_iters"):
    predict_lib.second_state_estimate(v, psi, model.grid, -1)


def test_load_potentials_errors(setup, tmp_path):
  _, model, path, v, _ = setup
  grid = model.grid
  np.testing.assert_array_equal(predict_lib.load_potentials(path, grid), v)
  bad = {}
  bad["missing"] = (str(tmp_path / "nope.npy"), "no such file")
  (tmp_path / "v.txt").write_text("1 2 3")
  bad["text"] = (str(tmp_path / "v.txt"), "not a .npy file")
  np.savez(tmp_path / "v.npz", v=v)
  bad["npz"] = (str(tmp_path / "v.npz"), "an .npz archive")
  (tmp_path / "junk.npy").write_bytes(b"not numpy at all" * 10)
  bad["junk"] = (str(tmp_path / "junk.npy"), "not a readable .npy file")
  whole = open(path, "rb").read()
  (tmp_path / "cut.npy").write_bytes(whole[:len(whole) // 2])
  bad["cut"] = (str(tmp_path / "cut.npy"), "corrupt or truncated")
  np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
  bad["object"] = (str(tmp_path / "obj.npy"), "Python objects")
  np.save(tmp_path / "small.npy", v[:, :12, :12])
  bad["shape"] = (str(tmp_path / "small.npy"),
                  "shape (6, 12, 12), but the model works on Grid(16x16")
  np.save(tmp_path / "one.npy", v[0])
  bad["single"] = (str(tmp_path / "one.npy"), "expected (N, 16, 16)")
  nan = v.copy()
  nan[2, 3, 4] = np.nan
  nan[5, 0, 0] = np.inf
  np.save(tmp_path / "nan.npy", nan)
  bad["nan"] = (str(tmp_path / "nan.npy"),
                "holds 2 NaN or inf value(s), the first at index (2, 3, 4)")
  np.save(tmp_path / "empty.npy", v[:0])
  bad["empty"] = (str(tmp_path / "empty.npy"), "holds no potentials")
  np.save(tmp_path / "str.npy", np.array(["a", "b"]))
  bad["strings"] = (str(tmp_path / "str.npy"), "float array")
  bad["folder"] = (str(tmp_path), "is a folder")
  for name, (file, message) in bad.items():
    with pytest.raises(ValueError, match=None) as info:
      predict_lib.load_potentials(file, grid)
    assert message in str(info.value), (name, str(info.value))


def lying_npy(path, shape, payload=1024) -> str:
  """A ``.npy`` file whose header declares float64 ``shape`` but whose data
  is ``payload`` bytes (a header written by hand, or a file cut short)."""
  with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(
        f, {"descr": "<f8", "fortran_order": False, "shape": shape})
    f.write(b"\0" * payload)
  return str(path)


def test_load_potentials_reads_the_header_before_the_data(tmp_path,
                                                          monkeypatch):
  grid = Grid((16, 16), (20.0, 20.0))
  # 1 KB of data under a header declaring 2 PB: refused from the header,
  # before anything is allocated.
  huge = lying_npy(tmp_path / "huge.npy", (10**12, 16, 16))
  with pytest.raises(ValueError) as info:
    predict_lib.load_potentials(huge, grid)
  assert str(info.value) == (
      f"{huge} is corrupt or truncated: its header declares float64 "
      "(1000000000000, 16, 16) (1.86e+03 TiB), but it holds 1 KiB of data.")
  few = lying_npy(tmp_path / "few.npy", (100, 16, 16))
  with pytest.raises(ValueError, match="declares float64 \\(100, 16, 16\\) "
                     "\\(200 KiB\\), but it holds 1 KiB"):
    predict_lib.load_potentials(few, grid)
  # The header's shape is checked before the data is read.
  wrong = lying_npy(tmp_path / "wrong.npy", (4, 8, 8), payload=4 * 64 * 8)
  with pytest.raises(ValueError, match="has shape \\(4, 8, 8\\), but the "
                     "model works on Grid\\(16x16"):
    predict_lib.load_potentials(wrong, grid)
  # A truthful file larger than the memory available: one line too.
  v = np.zeros((6, 16, 16))
  np.save(tmp_path / "v.npy", v)
  monkeypatch.setattr(memory, "host_available_bytes", lambda: 4096)
  with pytest.raises(memory.InsufficientMemoryError) as info:
    predict_lib.load_potentials(str(tmp_path / "v.npy"), grid)
  message = str(info.value)
  assert "\n" not in message and message.startswith(
      f"loading {tmp_path / 'v.npy'} (6 potentials on Grid(16x16") and (
          "needs about 24 KiB, but only 4 KiB of host memory" in message), (
              message)


DRIVER = """
import json, sys
from absl import flags
from experiments import predict
results = []
for argv in json.loads(sys.argv[1]):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["predict"] + argv)
  try:
    predict.main(["predict"])
    results.append([0, ""])
  except SystemExit as e:
    results.append([1 if e.code else 0, str(e.code)])
  except Exception as e:  # A traceback in the real command.
    results.append([2, f"{type(e).__name__}: {e}"])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def commands(setup, tmp_path_factory):
  """Runs every command line once, through ``main`` in one process.

  Returns ``(folder, {name: (exit code, message, stdout)})``; the first two
  succeed (a file with --refine, a user family), the rest are error cases
  whose expected message fragment is ``ERRORS[name]``.
  """
  workdir, _, path, v, _ = setup
  tmp = tmp_path_factory.mktemp("commands")
  model, out = f"--model={workdir}", f"--out={tmp / 'x.npz'}"
  np.save(tmp / "small.npy", v[:, :8])
  nan = v.copy()
  nan[1, 2, 3] = np.nan
  np.save(tmp / "nan.npy", nan)
  np.save(tmp / "obj.npy", np.array([None], dtype=object))
  (tmp / "junk.npy").write_bytes(b"\x93NUMPY junk")
  lying_npy(tmp / "huge.npy", (10**12, 16, 16))
  (tmp / "exists.npz").write_bytes(b"keep")
  (tmp / "fam.npz").write_bytes(b"old")
  cases = {
      "file": [model, f"--potentials={path}", f"--out={tmp / 'file.npz'}",
               "--refine", "--batch_size=4"],
      "family": [model, "--family=test_predict:tiny_wells", "--num=5",
                 "--seed=3", f"--out={tmp / 'fam.npz'}", "--overwrite",
                 "--batch_size=4"],
      "missing": [model, f"--potentials={tmp / 'none.npy'}", out],
      "npz": [model, f"--potentials={tmp / 'exists.npz'}", out],
      "corrupt": [model, f"--potentials={tmp / 'junk.npy'}", out],
      "huge": [model, f"--potentials={tmp / 'huge.npy'}", out],
      "object": [model, f"--potentials={tmp / 'obj.npy'}", out],
      "shape": [model, f"--potentials={tmp / 'small.npy'}", out],
      "nan": [model, f"--potentials={tmp / 'nan.npy'}", out],
      "family_name": [model, "--family=no_such_family", "--num=2", out],
      "num": [model, "--family=gaussian_wells", "--num=0", out],
      "no_num": [model, "--family=gaussian_wells", out],
      "both": [model, f"--potentials={path}", "--family=harmonic",
               "--num=2", out],
      "neither": [model, out],
      "num_with_file": [model, f"--potentials={path}", "--num=3", out],
      "model_name": ["--model=no_such_model", f"--potentials={path}", out],
      "workdir": [f"--model={tmp / 'no_run'}", f"--potentials={path}", out],
      "exists": [model, f"--potentials={path}",
                 f"--out={tmp / 'exists.npz'}"],
      "not_npz": [model, f"--potentials={path}", f"--out={tmp / 'x.txt'}"],
      "batch": [model, f"--potentials={path}", "--batch_size=0", out],
  }
  result = subprocess.run(
      [sys.executable, "-c", DRIVER, json.dumps(list(cases.values()))],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  codes = json.loads(result.stdout.strip().splitlines()[-1])
  return tmp, dict(zip(cases, codes)), result.stdout


ERRORS = {
    "missing": "no such file",
    "npz": "an .npz archive",
    "corrupt": "not a readable .npy file",
    "huge": "corrupt or truncated: its header declares float64 "
            "(1000000000000, 16, 16) (1.86e+03 TiB), but it holds 1 KiB",
    "object": "Python objects",
    "shape": "has shape (6, 8, 16), but the model works on Grid(16x16, "
             "L=20x20 bohr, dirichlet): expected (N, 16, 16)",
    "nan": "holds 1 NaN or inf value(s), the first at index (1, 2, 3)",
    "family_name": "Unknown potential family 'no_such_family'; known "
                   "families: box_well, double_well, gaussian_wells",
    "num": "--num >= 1",
    "no_num": "--family needs --num",
    "both": "exactly one of --potentials",
    "neither": "exactly one of --potentials",
    "num_with_file": "--num and --seed go with --family",
    "model_name": "Unknown pretrained model 'no_such_model'",
    "workdir": "no such workdir",
    "exists": "exists; pass --overwrite",
    "not_npz": "end the name with .npz",
    "batch": "--batch_size must be >= 1",
}


def test_command_on_a_file_with_refine(setup, commands):
  workdir, model, _, v, e0 = setup
  tmp, codes, stdout = commands
  assert codes["file"] == [0, ""]
  assert "6 potentials:" in stdout and "predictions/s" in stdout
  assert "lower bound: rigorous for" in stdout
  assert "|E_pred - E_refined|" in stdout and "solver states/s" in stdout
  with np.load(tmp / "file.npz", allow_pickle=False) as f:
    got = {k: f[k] for k in f.files}
  assert set(got) == KEYS | REFINE_KEYS | CLI_KEYS
  np.testing.assert_array_equal(got["potentials"], v)
  assert got["states"].shape == v.shape and got["energy"].shape == (6,)
  assert tuple(got["grid_shape"]) == (16, 16) and str(got["model"]) == (
      workdir)
  assert (got["energy"] >= e0 - 1e-10).all()
  reference = solvers.solve(v, model.grid, method="lobpcg", chunk_size=4)
  np.testing.assert_allclose(got["refined_energy"],
                             reference.energies[:, 0], atol=1e-8)
  np.testing.assert_allclose(got["refined_energy"], e0, atol=1e-8)
  assert not [p for p in os.listdir(tmp) if p.endswith(".tmp")]


def test_command_on_a_user_family(setup, commands):
  _, model, _, _, _ = setup
  tmp, codes, _ = commands
  assert codes["family"] == [0, ""]
  with np.load(tmp / "fam.npz", allow_pickle=False) as f:
    got = {k: f[k] for k in f.files}
  assert set(got) == KEYS | CLI_KEYS
  expected = np.asarray(tiny_wells(jax.random.key(3), model.grid, (5,),
                                   dtype=jnp.float64))
  np.testing.assert_array_equal(got["potentials"], expected)
  e0, _ = solvers.ground_state(expected, model.grid)
  assert (got["energy"] >= np.asarray(e0) - 1e-10).all()
  assert str(got["source"]) == "test_predict:tiny_wells num=5 seed=3"


def test_command_errors_are_one_line(commands):
  tmp, codes, _ = commands
  assert set(codes) == {"file", "family"} | set(ERRORS)
  for name, fragment in ERRORS.items():
    code, message = codes[name]
    assert code == 1, (name, message)
    assert message.startswith("predict: error: "), (name, message)
    assert "\n" not in message and fragment in message, (name, message)
  assert (tmp / "exists.npz").read_bytes() == b"keep"
  assert not (tmp / "x.npz").exists()


def test_command_refuses_to_replace_its_output(setup, tmp_path):
  workdir, _, path, _, _ = setup
  target = tmp_path / "preds.npz"
  target.write_bytes(b"earlier results")
  out = subprocess.run(
      [sys.executable, "-m", "experiments.predict", f"--model={workdir}",
       f"--potentials={path}", f"--out={target}"], cwd=ROOT, env=ENV,
      capture_output=True, text=True, timeout=300, check=False)
  # A real process: exit status 1, one line on stderr, no traceback.
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      f"predict: error: --out={target} exists; pass --overwrite "
      "(overwrite=True) to replace it.")
  assert target.read_bytes() == b"earlier results"


# Fast tier: test_command_on_a_file_with_refine.
@pytest.mark.slow
def test_bounds_checked_against_labels(setup, tmp_path):
  workdir, model, _, v, e0 = setup
  results = predict_lib.predict(model, v)
  check = predict_lib.check_against_labels(results, e0)
  assert check["num"] == 6 and check["upper_holds"] == 1.0
  np.testing.assert_allclose(check["median_error_mha"],
                             1e3 * np.median(results["energy"] - e0))
  # A lower bound above E0 is counted as failing, not as holding.
  broken = dict(results, lower_estimate=e0 + 0.01)
  assert predict_lib.check_against_labels(broken, e0)["estimate_holds"] == 0
  with pytest.raises(ValueError, match="shape"):
    predict_lib.check_against_labels(results, e0[:3])
  # The command on a labelled split prints one row per split.
  from pgmoe_jax import data  # pylint: disable=g-import-not-at-top
  split = str(tmp_path / "test_wells")
  data.generate(split, data.DatasetSpec("gaussian_wells", model.grid, 4,
                                        split="test_wells"))
  out = subprocess.run(
      [sys.executable, "-m", "experiments.check_bounds",
       f"--model={workdir}", f"--data={split}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-2000:]
  row = [line for line in out.stdout.splitlines()
         if line.startswith("| test_wells |")]
  assert len(row) == 1 and "| 4 | 100% |" in row[0], out.stdout
