"""Evaluation: exact metrics on known predictors, tables, figures, the CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import data
from pgmoe_jax import evaluation as evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_PNG_BYTES = 5_000


class Oracle:
  """Returns the stored ground state of each potential, times ``scale``."""

  def __init__(self, dataset, scale=1.0):
    self.grid = dataset.grid
    self.num_params = 123
    self.scale = scale
    self._table = {
        np.asarray(v, np.float32).tobytes(): psi
        for v, psi in zip(np.asarray(dataset.potentials),
                          np.asarray(dataset.psi0))}

  def predict(self, V):  # pylint: disable=invalid-name
    return self.scale * np.stack(
        [self._table[np.asarray(v).tobytes()] for v in np.asarray(V)])


def box_state(grid):
  """The V = 0 ground state: a product of sines (exact for the stencil)."""
  modes = [np.sin(np.pi * np.arange(1, n + 1) / (n + 1)) for n in grid.shape]
  psi = modes[0]
  for mode in modes[1:]:
    psi = np.multiply.outer(psi, mode)
  return psi


class Box:
  """Predicts the empty-box ground state whatever the potential."""

  def __init__(self, grid):
    self.grid = grid
    self.num_params = 0

  def predict(self, V):  # pylint: disable=invalid-name
    return np.broadcast_to(box_state(self.grid), np.shape(V))


class Broken:
  """Returns a fixed array for every batch."""

  def __init__(self, grid, make):
    self.grid = grid
    self.num_params = 1
    self._make = make

  def predict(self, V):  # pylint: disable=invalid-name
    return self._make(np.shape(V))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval_data")
  specs = {
      "train": data.DatasetSpec("gaussian_wells", Grid((16, 16), 20.0), 24,
                                shard_size=12),
      "line": data.DatasetSpec("double_well", Grid((32,), 20.0), 8,
                               split="line"),
      "cube": data.DatasetSpec("gaussian_wells", Grid((8, 8, 8), 20.0), 6,
                               split="cube"),
  }
  out = {}
  for name, spec in specs.items():
    data.generate(str(root / name), spec)
    out[name] = data.open_dataset(str(root / name))
  return out


@pytest.fixture(scope="module")
def oracle_result(datasets):
  ds = datasets["train"]
  return evaluate.evaluate_predictor(Oracle(ds), ds, batch_size=10,
                                     num_reference=3, timing_repeats=2)


def test_oracle_is_exact(oracle_result):
  result = oracle_result
  assert len(result) == 24 and result.split == "train"
  np.testing.assert_allclose(result.infidelity, 0.0, atol=1e-12)
  assert np.abs(result.energy_error_mha).max() < 1e-6
  assert result.residual.max() < 1e-7
  summary = result.summary()
  assert summary["frac_chemical_accuracy"] == 1.0
  assert summary["n"] == 24 and summary["num_params"] == 123
  assert summary["infidelity_p90"] < 1e-12
  assert 0 < summary["n_gapped"] <= 24
  assert summary["reference_method"] == "lobpcg"


def test_summary_keys_and_json(oracle_result):
  summary = oracle_result.summary()
  assert set(summary) == {key for key, _ in evaluate.COLUMNS} | {
      "reference_method"}
  json.dumps(summary, allow_nan=False)


def test_speed_figures_are_positive(oracle_result):
  summary = oracle_result.summary()
  assert summary["predictions_per_s"] > 0
  assert summary["reference_solves_per_s"] > 0
  assert summary["speedup"] == pytest.approx(
      summary["predictions_per_s"] / summary["reference_solves_per_s"])
  assert oracle_result.num_reference == 3


def test_eigsh_reference_and_no_reference(datasets):
  ds = datasets["train"]
  result = evaluate.evaluate_predictor(Oracle(ds), ds, reference_method="eigsh",
                                       num_reference=2, timing_repeats=1)
  assert result.reference_solves_per_s > 0
  result = evaluate.evaluate_predictor(Oracle(ds), ds, num_reference=0,
                                       timing_repeats=1)
  summary = result.summary()
  assert summary["reference_solves_per_s"] is None
  assert summary["speedup"] is None


@pytest.mark.parametrize("scale", [-1.0, 3.5, -0.02])
def test_scale_and_sign_invariance(datasets, scale):
  ds = datasets["train"]
  result = evaluate.evaluate_predictor(Oracle(ds, scale), ds, batch_size=7,
                                       num_reference=0, timing_repeats=1)
  np.testing.assert_allclose(result.infidelity, 0.0, atol=1e-12)
  assert np.abs(result.energy_error_mha).max() < 1e-6


def test_box_state_energy_error_is_exact_and_variational(datasets):
  ds = datasets["train"]
  grid = ds.grid
  result = evaluate.evaluate_predictor(Box(grid), ds, num_reference=0,
                                       timing_repeats=1)
  # Independently: the sine product is the exact ground state of the
  # discrete kinetic operator, so E[box] = its eigenvalue + <V>.
  psi = box_state(grid)
  weight = psi**2 / np.sum(psi**2)
  kinetic = sum((1 - np.cos(np.pi / (n + 1))) / h**2
                for n, h in zip(grid.shape, grid.spacing))
  potentials = np.asarray(ds.potentials)
  e_box = kinetic + np.sum(potentials * weight, axis=(1, 2))
  expected = (e_box - np.asarray(ds.E0)) * 1000.0
  np.testing.assert_allclose(result.energy_error_mha, expected, rtol=1e-10,
                             atol=1e-7)
  assert (result.energy_error_mha >= 0).all()
  overlap = np.einsum("bij,ij->b", np.asarray(ds.psi0), psi)
  infidelity = 1 - overlap**2 / (np.sum(psi**2) * np.sum(
      np.asarray(ds.psi0)**2, axis=(1, 2)))
  np.testing.assert_allclose(result.infidelity, infidelity, atol=1e-12)
  assert result.summary()["frac_chemical_accuracy"] < 1.0


def test_gap_restricted_p90(datasets):
  ds = datasets["train"]
  result = evaluate.evaluate_predictor(Box(ds.grid), ds, num_reference=0,
                                       timing_repeats=1)
  gap = np.asarray(ds.E1) - np.asarray(ds.E0)
  gapped = gap >= evaluate.GAP_THRESHOLD_HA
  np.testing.assert_allclose(result.gap, gap)
  summary = result.summary()
  assert summary["n_gapped"] == gapped.sum()
  assert summary["infidelity_p90_gapped"] == pytest.approx(
      np.percentile(result.infidelity[gapped], 90))


def test_grid_mismatch_names_both_grids(datasets):
  ds = datasets["train"]
  other = Grid((12, 12), 20.0)
  with pytest.raises(ValueError) as info:
    evaluate.evaluate_predictor(Box(other), ds)
  assert str(other) in str(info.value) and str(ds.grid) in str(info.value)


def test_bad_predictions_raise(datasets):
  ds = datasets["train"]
  wrong_shape = Broken(ds.grid, lambda shape: np.ones(shape[:1] + (16, 15)))
  with pytest.raises(ValueError, match="must keep the shape"):
    evaluate.evaluate_predictor(wrong_shape, ds, num_reference=0)
  nan = Broken(ds.grid, lambda shape: np.full(shape, np.nan))
  with pytest.raises(ValueError, match="NaN or inf"):
    evaluate.evaluate_predictor(nan, ds, num_reference=0)
  with pytest.raises(ValueError, match="num_reference"):
    evaluate.evaluate_predictor(Box(ds.grid), ds, num_reference=-1)
  with pytest.raises(ValueError, match="Unknown reference_method"):
    evaluate.evaluate_predictor(Box(ds.grid), ds, reference_method="qr")


def test_markdown_table(datasets, oracle_result):
  ds = datasets["train"]
  box = evaluate.evaluate_predictor(Box(ds.grid), ds, num_reference=0,
                                    timing_repeats=1)
  table = evaluate.markdown_table({"val": oracle_result, "test": box},
                                  "my_model")
  lines = table.strip().splitlines()
  assert len(lines) == 4
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  assert header == ["model", "split"] + [t for _, t in evaluate.COLUMNS]
  assert set(lines[1]) <= set("|-:")
  rows = [[c.strip() for c in line.strip("|").split("|")]
          for line in lines[2:]]
  assert [r[:2] for r in rows] == [["my_model", "val"], ["my_model", "test"]]
  assert all(len(r) == len(header) for r in rows)
  val = dict(zip(header, rows[0]))
  assert val["n"] == "24" and val["dE < 1.6 mHa"] == "100.0%"
  assert val["params"] == "123" and val["speed-up"].endswith("x")
  test = dict(zip(header, rows[1]))
  assert test["solves/s"] == "n/a" and test["speed-up"] == "n/a"


@pytest.mark.parametrize("name", ["train", "line", "cube"])
def test_plot_samples_writes_png(datasets, tmp_path, name):
  ds = datasets[name]
  predictor = Box(ds.grid)
  result = evaluate.evaluate_predictor(predictor, ds, num_reference=0,
                                       timing_repeats=1)
  path = tmp_path / "figs" / f"samples_{name}.png"
  evaluate.plot_samples(predictor, ds, result, str(path))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert path.stat().st_size > MIN_PNG_BYTES


def test_plot_samples_grid_mismatch(datasets, oracle_result, tmp_path):
  ds = datasets["train"]
  other = Grid((16, 16), 24.0)
  with pytest.raises(ValueError) as info:
    evaluate.plot_samples(Box(other), ds, oracle_result,
                          str(tmp_path / "x.png"))
  assert str(other) in str(info.value) and str(ds.grid) in str(info.value)


def write_metrics(path):
  lines = []
  for step in range(0, 101, 10):
    lines.append({"step": step, "split": "train", "loss": 5.0 / (1 + step),
                  "lr": 1e-3, "grad_norm": 1.0 + step})
    if step % 50 == 0:
      lines.append({"step": step, "split": "val", "loss": 6.0 / (1 + step),
                    "infidelity": 0.5 / (1 + step),
                    "energy_error_mha": 100.0 / (1 + step), "note": "text",
                    "diverged": False})
  with open(path, "w") as f:
    f.writelines(json.dumps(line) + "\n" for line in lines)
    f.write('{"step": 110, "split": "tr')  # a run still writing


def test_plot_training_curves(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  write_metrics(metrics)
  records = evaluate.read_metrics(str(metrics))
  assert len(records) == 14
  path = tmp_path / "curves.png"
  evaluate.plot_training_curves(str(metrics), str(path))
  assert path.stat().st_size > MIN_PNG_BYTES


def test_plot_training_curves_errors(tmp_path):
  with pytest.raises(ValueError, match="No metrics file"):
    evaluate.plot_training_curves(str(tmp_path / "none.jsonl"),
                                  str(tmp_path / "c.png"))
  empty = tmp_path / "empty.jsonl"
  empty.write_text('{"split": "train"}\n')
  with pytest.raises(ValueError, match="no numeric metrics"):
    evaluate.plot_training_curves(str(empty), str(tmp_path / "c.png"))


def test_figures_without_matplotlib_say_how_to_get_it(tmp_path):
  code = textwrap.dedent(f"""
      import sys
      sys.modules["matplotlib"] = None  # as if not installed
      from pgmoe_jax.evaluation import report
      try:
        report.plot_training_curves({str(tmp_path / 'm.jsonl')!r}, "x.png")
      except ImportError as e:
        print(e)
      """)
  (tmp_path / "m.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       capture_output=True, text=True, check=False,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert "pip install 'pgmoe_jax[plots]'" in out.stdout, out.stderr


def test_import_is_cheap():
  code = ("import sys, pgmoe_jax.evaluation; "
          "assert 'matplotlib' not in sys.modules")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       capture_output=True, text=True, check=False,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------
# The command line.

# Stands in for pgmoe_jax.inference (owned elsewhere) so the CLI can be
# tested on its own: an oracle on the dataset named by $FAKE_DATA, or a
# model on another grid when $FAKE_GRID is set.
FAKE_MAIN = textwrap.dedent("""
    import os, sys, types
    import numpy as np
    from absl import app
    from pgmoe_jax import Grid, data

    class Oracle:
      def __init__(self, path):
        ds = data.open_dataset(path)
        self.grid = (Grid((12, 12), 20.0) if os.environ.get("FAKE_GRID")
                     else ds.grid)
        self.num_params, self.step, self.config = 42, 7, None
        self._table = {np.asarray(v, np.float32).tobytes(): p for v, p in
                       zip(np.asarray(ds.potentials), np.asarray(ds.psi0))}

      def predict(self, V):
        return np.stack([self._table[np.asarray(v).tobytes()]
                         for v in np.asarray(V)])

    def load_model(workdir, which="best", symmetrize=False):
      del symmetrize  # the oracle is exact either way
      if which != "best":
        raise ValueError(f"no {which} checkpoint in {workdir}")
      return Oracle(os.environ["FAKE_DATA"])

    sys.modules["pgmoe_jax.inference"] = types.SimpleNamespace(
        load_model=load_model)
    from experiments import evaluate
    app.run(evaluate.main)
""")


def run_cli(tmp_path, *args, env=None, module=False):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **(env or {}))
  if module:
    command = [sys.executable, "-m", "experiments.evaluate", *args]
  else:
    script = tmp_path / "fake_evaluate.py"
    script.write_text(FAKE_MAIN)
    command = [sys.executable, str(script), *args]
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def assert_one_line_error(out, *fragments):
  assert out.returncode != 0
  assert "Traceback" not in out.stderr, out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("evaluate: error: "), out.stderr
  for fragment in fragments:
    assert fragment in last, last


# Fast tier: test_cli_errors_are_one_line (the CLI), test_front's measure_split
# (the cascade's front) and test_oracle_is_exact.
@pytest.mark.slow
def test_cli_writes_table_json_and_figures(datasets, tmp_path):
  ds = datasets["train"]
  workdir = tmp_path / "run"
  workdir.mkdir()
  write_metrics(workdir / "metrics.jsonl")
  # Batches of 8 on 16x16, as in test_front's measure_split: the cascade's
  # front compiles once for both (the shared compilation cache).
  out = run_cli(tmp_path, f"--workdir={workdir}", f"--data={ds.path}",
                "--num_reference=2", "--batch_size=8", "--timing_repeats=2",
                env={"FAKE_DATA": ds.path})
  assert out.returncode == 0, out.stderr
  eval_dir = workdir / "eval"
  assert "| run | train | 24 |" in out.stdout
  assert str(eval_dir / "samples_train.png") in out.stdout
  record = json.loads((eval_dir / "results.json").read_text())
  assert record["step"] == 7 and record["num_params"] == 42
  summary = record["summaries"]["train"]
  assert summary["n"] == 24 and summary["frac_chemical_accuracy"] == 1.0
  assert "| run | train | 24 |" in (eval_dir / "results.md").read_text()
  # The oracle's states are exact: more accurate than every cascade
  # setting, so its speed-up against the front is a lower bound.
  assert summary["speedup_vs_cascade_median"].startswith(">=")
  assert summary["speedup_vs_cascade_p90"].startswith(">=")
  assert "vs cascade, median dE" in (eval_dir / "results.md").read_text()
  assert "best of 2 timed runs after an untimed warm-up" in (
      eval_dir / "results.md").read_text()
  for name in ("samples_train.png", "training_curves.png"):
    assert (eval_dir / name).stat().st_size > MIN_PNG_BYTES


def test_cli_errors_are_one_line(datasets, tmp_path):
  ds = datasets["train"]
  out = run_cli(tmp_path, f"--workdir={tmp_path / 'missing'}",
                f"--data={ds.path}", module=True)
  assert_one_line_error(out, "missing", "is not a directory")
  out = run_cli(tmp_path, f"--workdir={tmp_path}",
                f"--data={tmp_path / 'nodata'}", module=True)
  assert_one_line_error(out, "nodata", "is not a dataset")
  out = run_cli(tmp_path, f"--workdir={tmp_path}", f"--data={ds.path}",
                env={"FAKE_DATA": ds.path, "FAKE_GRID": "1"})
  assert_one_line_error(out, str(ds.grid), str(Grid((12, 12), 20.0)))
  out = run_cli(tmp_path, f"--workdir={tmp_path}", f"--data={ds.path}",
                "--which=latest", env={"FAKE_DATA": ds.path})
  assert_one_line_error(out, "no latest checkpoint")


# Fast tier: test_training's train CLI run and the evaluate CLI tests above.
@pytest.mark.slow
def test_cli_train_then_evaluate(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")

  def run(*args):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return out

  workdir = tmp_path / "run"
  run("-m", "experiments.train", "--config=experiments/configs/test.py",
      f"--workdir={workdir}")
  # Data on whatever grid the test config trains on.
  code = textwrap.dedent(f"""
      import jax
      jax.config.update("jax_enable_x64", True)
      from pgmoe_jax import data
      from pgmoe_jax.inference import load_model
      grid = load_model({str(workdir)!r}, which="latest").grid
      data.generate({str(tmp_path / 'test')!r}, data.DatasetSpec(
          "gaussian_wells", grid, 8, split="test"))
  """)
  run("-c", code)
  run("-m", "experiments.evaluate", f"--workdir={workdir}",
      f"--data={tmp_path / 'test'}", "--which=latest", "--num_reference=2")
  record = json.loads((workdir / "eval" / "results.json").read_text())
  assert record["summaries"]["test"]["n"] == 8
  assert record["summaries"]["test"]["speedup_vs_cascade_median"].endswith(
      "x")
  assert (workdir / "eval" / "samples_test.png").exists()
  assert not record["symmetrize"]
  # Symmetry-averaged predictions go to their own folder by default.
  out = run("-m", "experiments.evaluate", f"--workdir={workdir}",
            f"--data={tmp_path / 'test'}", "--which=latest",
            "--num_reference=0", "--symmetrize", "--nocascade_front")
  assert "symmetrized" in out.stdout
  record = json.loads(
      (workdir / "eval_symmetrized" / "results.json").read_text())
  assert record["symmetrize"] and record["summaries"]["test"]["n"] == 8
  assert record["summaries"]["test"]["speedup_vs_cascade_median"] is None
