r"""Evaluate a trained model on one or more datasets: table, JSON, figures.

    python -m experiments.evaluate --workdir=runs/x \
        --data=data/gw32/test_interp,data/gw32/test_extrap

Loads the model with ``pgmoe_jax.inference.load_model(workdir, which)``,
scores it on every sample of each dataset (pgmoe_jax/evaluate.py: infidelity,
energy error in mHa under the exact H in float64, residual, gap-restricted
p90, predictions/s against the reference solver's solves/s measured in the
same run), prints a Markdown table and writes, under ``--out`` (default
``<workdir>/eval``, or ``<workdir>/eval_symmetrized`` with ``--symmetrize``,
which averages every prediction over the grid's exact symmetries):

    results.md              the table, with what was evaluated and where
    results.json            {"model", "workdir", "which", "step", ...,
                             "summaries": {split: summary}}
    samples_<split>.png     best, median and worst sample of each split
    training_curves.png     from <workdir>/metrics.jsonl, when present

The split name is the dataset's own (``spec.split``), or its directory name
if two datasets share one. Float64 is enabled for the reference metrics; the
model predicts in its own dtype from float32 potentials. Errors (a missing
workdir or dataset, a dataset on another grid than the model) end with one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from absl import app
from absl import flags
import jax

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_DATA = flags.DEFINE_list("data", None, "Dataset directories, comma "
                          "separated: data/gw32/test_interp,data/gw32/val.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"],
                           "Which checkpoint to evaluate.")
_OUT = flags.DEFINE_string("out", None, "Output directory; default "
                           "<workdir>/eval, or <workdir>/eval_symmetrized "
                           "with --symmetrize.")
_SYMMETRIZE = flags.DEFINE_bool(
    "symmetrize", False, "Average each prediction over the grid's exact "
    "symmetries (8 for a square 2-D grid): load_model(symmetrize=True).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256,
                                   "Potentials per model call.")
_NUM_REFERENCE = flags.DEFINE_integer(
    "num_reference", 32, "Potentials the reference solver solves (per split) "
    "to measure its speed; 0 skips it.")
_REFERENCE_METHOD = flags.DEFINE_enum(
    "reference_method", "lobpcg", ["lobpcg", "eigsh"],
    "Reference solver timed for the speed-up (on CPU, one at a time).")

flags.mark_flags_as_required(["workdir", "data"])

_LOAD_ERRORS = (ValueError, TypeError, KeyError, OSError)


def _fail(error) -> SystemExit:
  return SystemExit(f"evaluate: error: {error}")


def _open_datasets(paths):
  """Opens every dataset (fails fast, before any model work)."""
  from pgmoe_jax import data  # pylint: disable=g-import-not-at-top
  datasets = {}
  for path in paths:
    try:
      dataset = data.open_dataset(path)
    except ValueError as e:
      raise _fail(e) from None
    name = dataset.spec.split or os.path.basename(os.path.normpath(path))
    if name in datasets:
      name = os.path.basename(os.path.normpath(path))
    base, k = name, 2
    while name in datasets:
      name, k = f"{base}_{k}", k + 1
    datasets[name] = dataset
  return datasets


def _model_name(workdir: str, predictor) -> str:
  name = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
  config = getattr(predictor, "config", None)
  model = getattr(getattr(config, "model", None), "name", None)
  return f"{name} ({model})" if isinstance(model, str) else name


def _file_name(split: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]", "_", split)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  jax.config.update("jax_enable_x64", True)
  from pgmoe_jax import evaluate  # pylint: disable=g-import-not-at-top

  workdir = _WORKDIR.value
  if not os.path.isdir(workdir):
    raise _fail(f"--workdir {workdir} is not a directory; pass a training "
                "run's workdir (it holds config.json and checkpoints/).")
  paths = [p for p in _DATA.value if p]
  if not paths:
    raise _fail("--data names no dataset directory.")
  datasets = _open_datasets(paths)
  try:
    # pylint: disable-next=g-import-not-at-top
    from pgmoe_jax.inference import load_model
    predictor = load_model(workdir, which=_WHICH.value,
                           symmetrize=_SYMMETRIZE.value)
  except ImportError as e:
    raise _fail(f"cannot import pgmoe_jax.inference ({e}).") from None
  except _LOAD_ERRORS as e:
    raise _fail(e) from None
  try:
    for name, dataset in datasets.items():
      evaluate.check_grid(predictor, dataset.grid,
                          f"dataset {dataset.path} ({name})")
  except ValueError as e:
    raise _fail(e) from None

  out = _OUT.value or os.path.join(
      workdir, "eval_symmetrized" if _SYMMETRIZE.value else "eval")
  os.makedirs(out, exist_ok=True)
  model_name = _model_name(workdir, predictor)
  if _SYMMETRIZE.value:
    model_name += " symmetrized"
  step = getattr(predictor, "step", None)
  step = None if step is None else int(step)
  device = jax.devices()[0]
  print(f"evaluating {model_name} ({_WHICH.value} checkpoint, step {step}, "
        f"{predictor.num_params:,} parameters) on {len(datasets)} split(s), "
        f"backend {jax.default_backend()} ({device.device_kind})")

  results = {}
  figures = []
  for name, dataset in datasets.items():
    try:
      result = evaluate.evaluate_predictor(
          predictor, dataset, batch_size=_BATCH_SIZE.value,
          reference_method=_REFERENCE_METHOD.value,
          num_reference=_NUM_REFERENCE.value)
    except ValueError as e:
      raise _fail(e) from None
    results[name] = result = dataclasses.replace(result, split=name)
    shown = {k: evaluate.format_value(k, v)
             for k, v in result.summary().items()}
    print(f"  {name:<18} n={shown['n']:<6} 1-F p90 "
          f"{shown['infidelity_p90']}  dE median "
          f"{shown['energy_error_mha_median']} mHa")
    figure = os.path.join(out, f"samples_{_file_name(name)}.png")
    evaluate.plot_samples(predictor, dataset, result, figure)
    figures.append(figure)

  table = evaluate.markdown_table(results, model_name)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  curves = os.path.join(out, "training_curves.png")
  try:
    evaluate.plot_training_curves(metrics_path, curves)
    figures.append(curves)
  except ValueError as e:
    print(f"no training curves: {e}")

  note = (f"Reference: {_REFERENCE_METHOD.value} on CPU, one potential at a "
          f"time, on (up to) the first {_NUM_REFERENCE.value} potentials of "
          f"each split; the model ran on {jax.default_backend()} "
          f"({device.device_kind}) with batches of up to "
          f"{_BATCH_SIZE.value}. 1-F: infidelity against the stored ground "
          "state; dE = E[psi_pred] - E0 under the exact H (float64); the "
          "gap column restricts the p90 to samples with E1 - E0 >= "
          f"{evaluate.GAP_THRESHOLD_HA} Ha.")
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"# Evaluation of {os.path.abspath(workdir)}\n\n"
            f"Checkpoint: {_WHICH.value} (step {step}).\n\n{table}\n{note}\n")
  record = {
      "model": model_name, "workdir": os.path.abspath(workdir),
      "which": _WHICH.value, "step": step, "symmetrize": _SYMMETRIZE.value,
      "num_params": int(predictor.num_params),
      "backend": jax.default_backend(), "device": device.device_kind,
      "reference_method": _REFERENCE_METHOD.value,
      "datasets": {name: os.path.abspath(d.path)
                   for name, d in datasets.items()},
      "summaries": {name: r.summary() for name, r in results.items()},
  }
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(record, f, indent=1)
    f.write("\n")

  print()
  print(table)
  print(f"wrote {os.path.join(out, 'results.md')} and "
        f"{os.path.join(out, 'results.json')}")
  print("figures:")
  for figure in figures:
    print(f"  {figure}")


if __name__ == "__main__":
  app.run(main)
