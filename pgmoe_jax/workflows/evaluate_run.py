"""Evaluate a training run on datasets: table, JSON, figures (one call).

:func:`evaluate_run` is what ``python -m experiments.evaluate`` does, as a
function: it loads the model of a workdir (:func:`pgmoe_jax.load_model`),
scores it on every sample of each dataset
(:func:`pgmoe_jax.evaluation.evaluate_predictor`: infidelity, energy error in
mHa under the exact H in float64, residual, gap-restricted p90,
predictions/s against the reference solver's solves/s measured in the same
run, each the best of ``timing_repeats`` timed runs after a warm-up) and
writes, under ``out`` (default ``<workdir>/eval``, or
``<workdir>/eval_symmetrized`` with ``symmetrize``)::

    results.md              the table, with what was evaluated and where
    results.json            {"model", "workdir", "which", "step", ...,
                             "summaries": {split: summary}}
    samples_<split>.png     best, median and worst sample of each split
    training_curves.png     from <workdir>/metrics.jsonl, when present

A split is named after its dataset (``spec.split``), or its directory name
if two datasets share one.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Sequence

import jax
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import data
from pgmoe_jax import paths
from pgmoe_jax.evaluation import report
from pgmoe_jax.evaluation import scorer
from pgmoe_jax.inference import load_model
from pgmoe_jax.training.summaries import METRICS_FILE
from pgmoe_jax.workflows import front


@dataclasses.dataclass
class RunEvaluation:
  """What :func:`evaluate_run` produced.

  Attributes:
    results: split name -> :class:`~pgmoe_jax.evaluation.EvalResult`.
    table: the Markdown table.
    markdown: path of ``results.md``.
    json: path of ``results.json``.
    figures: paths of the PNG figures written.
  """
  results: dict[str, scorer.EvalResult]
  table: str
  markdown: str
  json: str
  figures: list[str]


def open_datasets(dataset_paths: Sequence[str]) -> dict[str, data.Dataset]:
  """Opens every dataset (failing fast), named by split, made unique."""
  datasets: dict[str, data.Dataset] = {}
  for path in dataset_paths:
    dataset = data.open_dataset(path)
    name = dataset.name or os.path.basename(os.path.normpath(path))
    if name in datasets:
      name = os.path.basename(os.path.normpath(path))
    base, k = name, 2
    while name in datasets:
      name, k = f"{base}_{k}", k + 1
    datasets[name] = dataset
  return datasets


def _model_name(workdir: str, predictor) -> str:
  name = paths.resolve(workdir).name
  config = getattr(predictor, "config", None)
  model = getattr(getattr(config, "model", None), "name", None)
  return f"{name} ({model})" if isinstance(model, str) else name


def _file_name(split: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]", "_", split)


def evaluate_run(workdir: str, data_paths: Sequence[str], *,
                 out: str | None = None, which: str = "best",
                 symmetrize: bool = False, batch_size: int = 256,
                 num_reference: int = 32, reference_method: str = "lobpcg",
                 timing_repeats: int = 5, cascade_front: bool = True,
                 figures: bool = True,
                 echo: Callable[[str], None] = print) -> RunEvaluation:
  """Evaluates a workdir's model on datasets and writes the report.

  Args:
    workdir: a training run's directory.
    data_paths: dataset directories on the model's grid.
    out: output directory (see the module docstring for the default).
    which: ``"best"`` or ``"latest"`` checkpoint.
    symmetrize: average every prediction over the grid's exact symmetries.
    batch_size: potentials per model call.
    num_reference: potentials per split the reference solver solves for
      its speed; 0 skips it.
    reference_method: the reference solver timed (``"lobpcg"``,
      ``"eigsh"``).
    timing_repeats: timed model calls and timed reference passes (the best
      of each counts, after a warm-up on each side).
    cascade_front: also measure the cascade's front on each split and
      report the model's matched-accuracy speed-ups against it (median and
      p90 dE; :mod:`pgmoe_jax.workflows.front`, on up to the first 1,024
      potentials, timed on one batch of ``batch_size``; single-process
      runs only).
    figures: draw the PNG figures (needs matplotlib, the ``plots`` extra).
    echo: where progress lines go.

  Returns:
    A :class:`RunEvaluation`.

  Raises:
    ValueError: float64 is off, a missing workdir or dataset, no dataset, a
      dataset on another grid than the model, or a model that predicts
      NaN/inf (the message names what).
  """
  checks.require_x64("Evaluation scores predictions under the exact H in "
                     "float64")
  if not paths.resolve(workdir).is_dir():
    raise ValueError(f"--workdir {workdir} is not a directory; pass a "
                     "training run's workdir (it holds config.json and "
                     "checkpoints/).")
  dataset_paths = [p for p in data_paths if p]
  if not dataset_paths:
    raise ValueError("--data names no dataset directory.")
  datasets = open_datasets(dataset_paths)
  predictor = load_model(workdir, which=which, symmetrize=symmetrize)
  for name, dataset in datasets.items():
    scorer.check_grid(predictor, dataset.grid,
                      f"dataset {dataset.path} ({name})")

  out = out or os.fspath(paths.resolve(workdir) / (
      "eval_symmetrized" if symmetrize else "eval"))
  primary = jax.process_index() == 0
  if primary:
    out = checks.prepare_output_dir(out, "--out")
  model_name = _model_name(workdir, predictor)
  if symmetrize:
    model_name += " symmetrized"
  device = jax.local_devices()[0]
  step = getattr(predictor, "step", None)
  step = None if step is None else int(step)
  echo = echo if primary else (lambda line: None)
  echo(f"evaluating {model_name} ({which} checkpoint, step "
       f"{step}, {predictor.num_params:,} parameters) on "
       f"{len(datasets)} split(s), backend {jax.default_backend()} "
       f"({device.device_kind})")

  results: dict[str, scorer.EvalResult] = {}
  drawn = []
  for name, dataset in datasets.items():
    result = scorer.evaluate_predictor(
        predictor, dataset, batch_size=batch_size,
        reference_method=reference_method, num_reference=num_reference,
        timing_repeats=timing_repeats)
    results[name] = result = dataclasses.replace(result, split=name)
    if cascade_front and jax.process_count() == 1:
      n = min(len(dataset), 1024)
      measured = front.measure_split(
          name, np.asarray(dataset.potentials[:n]),
          np.asarray(dataset.E0[:n]), dataset.grid, {"model": predictor},
          batch=min(batch_size, n))
      row = measured.rows[0]
      results[name] = result = dataclasses.replace(
          result, cascade_speedups=(row.speedup_median, row.speedup_p90))
    shown = {k: report.format_value(k, v)
             for k, v in result.summary().items()}
    echo(f"  {name:<18} n={shown['n']:<6} 1-F p90 "
         f"{shown['infidelity_p90']}  dE median "
         f"{shown['energy_error_mha_median']} mHa")
    if figures and primary:
      figure = os.fspath(paths.resolve(out)
                         / f"samples_{_file_name(name)}.png")
      report.plot_samples(predictor, dataset, result, figure)
      drawn.append(figure)
  if figures and primary:
    curves = os.fspath(paths.resolve(out) / "training_curves.png")
    try:
      report.plot_training_curves(paths.resolve(workdir) / METRICS_FILE,
                                  curves)
      drawn.append(curves)
    except ValueError as e:
      echo(f"no training curves: {e}")

  note = (f"Reference: {reference_method} on CPU, one potential at a "
          f"time, on (up to) the first {num_reference} potentials of "
          f"each split; the model ran on {jax.default_backend()} "
          f"({device.device_kind}) with batches of up to {batch_size}. "
          f"Both speeds are the best of {timing_repeats} timed runs after "
          "an untimed warm-up (compilation excluded). "
          "1-F: infidelity against the stored ground state; dE = "
          "E[psi_pred] - E0 under the exact H (float64); the gap column "
          "restricts the p90 to samples with E1 - E0 >= "
          f"{scorer.GAP_THRESHOLD_HA} Ha.")
  record = {
      "model": model_name, "workdir": os.fspath(paths.resolve(workdir)),
      "which": which, "step": step, "symmetrize": symmetrize,
      "num_params": int(predictor.num_params),
      "backend": jax.default_backend(), "device": device.device_kind,
      "reference_method": reference_method,
      "datasets": {name: os.path.abspath(d.path)
                   for name, d in datasets.items()},
  }
  if not primary:  # in a multi-process run, process 0 writes the report
    return RunEvaluation(results, report.markdown_table(results, model_name),
                         "", "", [])
  md, js = report.write_report(
      out, results, model_name=model_name,
      title=(f"# Evaluation of {paths.resolve(workdir)}\n\n"
             f"Checkpoint: {which} (step {step})."),
      note=note, record=record)
  return RunEvaluation(results, report.markdown_table(results, model_name),
                       md, js, drawn)
