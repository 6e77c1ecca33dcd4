r"""Evaluation reports: Markdown tables, JSON summaries and PNG figures.

* :func:`markdown_table` renders the summaries of
  :class:`~pgmoe_jax.evaluation.scorer.EvalResult` s, one row per split,
  with the columns of :data:`COLUMNS`;
  :func:`write_report` writes ``results.md`` and ``results.json``.
* :func:`plot_samples` draws the best, median and worst sample of a split;
  :func:`plot_training_curves` draws a run's ``metrics.jsonl``.

Importing the module does no I/O and does not import matplotlib; the plotting
functions import it when called and draw on a ``Figure`` with the Agg canvas,
so no global backend (pyplot) state is touched. matplotlib is the optional
``plots`` extra (``pip install 'pgmoe_jax[plots]'``).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import paths
from pgmoe_jax.evaluation.scorer import EvalResult
from pgmoe_jax.evaluation.scorer import check_grid
from pgmoe_jax.models.serving import Predictor
from pgmoe_jax.models.serving import predict_batch
from pgmoe_jax.paths import PathLike
from pgmoe_jax.variational import normalize_unchecked
from pgmoe_jax.variational import rayleigh_quotient

# Summary keys in table order, with the column headers of markdown_table.
COLUMNS = (
    ("n", "n"),
    ("infidelity_median", "1-F median"),
    ("infidelity_p90", "1-F p90"),
    ("energy_error_mha_median", "dE median (mHa)"),
    ("energy_error_mha_p90", "dE p90 (mHa)"),
    ("frac_chemical_accuracy", "dE < 1.6 mHa"),
    ("residual_median", "residual median (Ha)"),
    ("infidelity_p90_gapped", "1-F p90, gap >= 0.5 Ha"),
    ("n_gapped", "n gap >= 0.5 Ha"),
    ("num_params", "params"),
    ("predictions_per_s", "predictions/s"),
    ("reference_solves_per_s", "solves/s"),
    ("speedup", "speed-up"),
    ("speedup_vs_cascade_median", "vs cascade, median dE"),
    ("speedup_vs_cascade_p90", "vs cascade, p90 dE"),
)


# --------------------------------------------------------------------------
# Tables.


def _number(x: float) -> str:
  if x == 0:
    return "0"
  if 1e-2 <= abs(x) < 1e3:
    return f"{x:.3g}"
  if 1e3 <= abs(x) < 1e7:
    return f"{x:,.0f}"
  return f"{x:.1e}"


def format_value(key: str, value) -> str:
  """One summary value as table text (``n/a`` for ``None``)."""
  if value is None:
    return "n/a"
  if isinstance(value, str):
    return value
  if key.startswith("infidelity"):
    return f"{value:.1e}"
  if key == "frac_chemical_accuracy":
    return f"{100 * value:.1f}%"
  if key in ("n", "n_gapped", "num_params"):
    return f"{int(value):,}"
  if key == "speedup":
    return _number(value) + "x"
  return _number(value)


def markdown_table(results: Mapping[str, EvalResult], model_name: str) -> str:
  """A Markdown table with one row per split.

  Args:
    results: split name -> result, in row order.
    model_name: the first column's text.

  Returns:
    The table (header, separator, rows), newline-terminated; columns are
    those of :data:`COLUMNS`.
  """
  header = ["model", "split"] + [title for _, title in COLUMNS]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---", "---"] + ["---:"] * len(COLUMNS)) + "|"]
  for split, result in results.items():
    summary = result.summary()
    cells = [model_name, split] + [format_value(key, summary[key])
                                   for key, _ in COLUMNS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Figures.


def new_figure(**kwargs):
  """A matplotlib Figure on the Agg canvas (no pyplot state)."""
  # The object-oriented API with the Agg canvas: no pyplot, no global
  # backend switch, nothing left open.
  try:
    # pylint: disable-next=g-import-not-at-top
    from matplotlib.backends import backend_agg
    from matplotlib import figure  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("Figures need matplotlib, the optional 'plots' extra: "
                      "pip install 'pgmoe_jax[plots]'.") from None
  fig = figure.Figure(layout="constrained", **kwargs)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def save_figure(fig, path: PathLike) -> None:
  """Saves a figure as PNG, creating parent directories (local or gs://)."""
  path = paths.resolve(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    fig.savefig(f, dpi=100, format="png")


def _picks(result: EvalResult) -> list[tuple[str, int]]:
  order = np.argsort(result.infidelity, kind="stable")
  return [("best", int(order[0])), ("median", int(order[len(order) // 2])),
          ("worst", int(order[-1]))]


def plot_samples(predictor: Predictor, dataset, result: EvalResult,
                 path: str) -> None:
  """Draws the best, median and worst sample by infidelity to a PNG.

  One row per sample: the potential, the stored ground state, the
  (normalised, sign-fixed) prediction and the error ``pred - true``. 2-D
  grids use images with colorbars (true and predicted share a colour
  scale), 1-D grids line plots, 3-D grids the plane ``z = const`` through
  the true state's maximum (a fixed central plane can miss the particle).
  Titles give each sample's number, infidelity and ``dE``.

  Args:
    predictor: the model that produced ``result``.
    dataset: the dataset ``result`` was computed on.
    result: from :func:`evaluate_predictor`.
    path: the PNG to write (parent directories are created).

  Raises:
    ValueError: for a model or result on another grid than the dataset, or
      a result of another length.
  """
  grid = dataset.grid
  where = dataset.path or dataset.name
  check_grid(predictor, grid, f"dataset {where}")
  if result.grid != grid or len(result) != len(dataset):
    raise ValueError(
        f"The result ({len(result)} samples on {result.grid}) is not from "
        f"dataset {where} ({len(dataset)} samples on {grid}).")
  picks = _picks(result)
  rows = np.array([i for _, i in picks])
  potentials = np.asarray(dataset.potentials[rows], np.float64)
  predicted = predict_batch(predictor, potentials, grid,
                            max(result.batch_size, len(rows)))
  true = np.asarray(dataset.psi0[rows], np.float64)
  # Normalise the whole states before any slicing, so a 3-D slice shows
  # amplitude errors too.
  predicted = np.asarray(normalize_unchecked(predicted, grid))
  true = np.asarray(normalize_unchecked(jnp.asarray(true), grid))
  coords = grid.coordinates()
  plane_text = [""] * len(picks)
  if grid.ndim == 3:
    # The plane through each true state's maximum: a fixed central plane
    # can miss an off-centre particle altogether.
    planes = [int(np.unravel_index(np.argmax(t), grid.shape)[2])
              for t in true]
    potentials, predicted, true = (
        np.stack([x[..., k] for x, k in zip(a, planes)])
        for a in (potentials, predicted, true))
    plane_text = [f", z = {coords[2][k]:.2f} bohr" for k in planes]
    coords = coords[:2]

  fig = new_figure(figsize=(15, 10) if grid.ndim > 1 else (14, 8))
  axes = fig.subplots(3, 4 if grid.ndim > 1 else 3, squeeze=False)
  for row, (label, i) in enumerate(picks):
    v, psi_true, psi_pred = potentials[row], true[row], predicted[row]
    error = psi_pred - psi_true
    scores = (f"1-F = {result.infidelity[i]:.2e}, "
              f"dE = {_number(result.energy_error_mha[i])} mHa")
    name = f"{label} (sample {int(result.index[i])}{plane_text[row]})"
    if grid.ndim == 1:
      x = coords[0]
      ax = axes[row, 0]
      ax.plot(x, v, color="k")
      ax.set(title=f"{name}: V (Ha)", xlabel="x (bohr)")
      ax = axes[row, 1]
      ax.plot(x, psi_true, label="true", lw=2)
      ax.plot(x, psi_pred, "--", label="predicted", lw=1.5)
      ax.legend()
      ax.set(title=f"psi: {scores}", xlabel="x (bohr)")
      ax = axes[row, 2]
      ax.plot(x, error, color="C3")
      ax.axhline(0.0, color="0.6", lw=0.8)
      ax.set(title="error: predicted - true", xlabel="x (bohr)")
      continue
    hx, hy = grid.spacing[:2]  # pixel edges, so pixels sit on the points
    extent = (coords[0][0] - hx / 2, coords[0][-1] + hx / 2,
              coords[1][0] - hy / 2, coords[1][-1] + hy / 2)
    top = max(psi_true.max(), psi_pred.max())
    low = min(0.0, psi_true.min(), psi_pred.min())
    bound = np.abs(error).max() or 1.0
    panels = (
        (v, f"{name}\nV (Ha)", dict(cmap="viridis")),
        (psi_true, "true psi0\n", dict(cmap="magma", vmin=low, vmax=top)),
        (psi_pred, f"predicted\n{scores}",
         dict(cmap="magma", vmin=low, vmax=top)),
        (error, "error\npredicted - true",
         dict(cmap="RdBu_r", vmin=-bound, vmax=bound)),
    )
    for ax, (image, title, style) in zip(axes[row], panels):
      # Arrays are indexed (x, y); imshow draws rows as y.
      im = ax.imshow(image.T, origin="lower", extent=extent, **style)
      fig.colorbar(im, ax=ax, shrink=0.85)
      ax.set_title(title, fontsize=9)
      ax.set(xlabel="x (bohr)", ylabel="y (bohr)")
  plane = ("; 3-D states shown in the z-plane through the true maximum"
           if grid.ndim == 3 else "")
  fig.suptitle(f"{result.split}: best, median and worst of {len(result)} "
               f"samples by infidelity, {grid}{plane}")
  save_figure(fig, path)


def plot_comparison(predictors: Mapping[str, Predictor], datasets,
                    path: str, *, seed: int = 0) -> None:
  """One 2-D sample per dataset: V, the exact state and each model's.

  The sample of each dataset is drawn with ``seed`` (the same for every
  model); each model's panel is titled with its energy error in mHa.

  Args:
    predictors: label -> model, all on the datasets' grid.
    datasets: labelled 2-D datasets (one row each).
    path: the PNG to write.
  """
  rng = np.random.default_rng(seed)
  names = list(predictors)
  fig = new_figure(figsize=(3.2 * (2 + len(names)), 3.0 * len(datasets)))
  axes = fig.subplots(len(datasets), 2 + len(names), squeeze=False)
  for row, ds in enumerate(datasets):
    grid = ds.grid
    if grid.ndim != 2:
      raise ValueError(f"plot_comparison draws 2-D grids, not {grid}.")
    i = int(rng.integers(len(ds)))
    v = np.asarray(ds.potentials[i:i + 1], np.float64)
    true = np.asarray(normalize_unchecked(jnp.asarray(ds.psi0[i:i + 1]),
                                          grid))[0]
    e0 = float(ds.E0[i])
    coords = grid.coordinates()
    extent = (coords[0][0], coords[0][-1], coords[1][0], coords[1][-1])
    where = os.path.basename(str(ds.path or ds.name).rstrip("/"))
    panels = [(v[0], f"{where} #{int(ds.index[i])}\nV (Ha)", "viridis"),
              (true, f"exact psi0\nE0 = {e0:.4f} Ha", "magma")]
    for name in names:
      predictor = predictors[name]
      check_grid(predictor, grid, f"dataset {where}")
      psi = np.asarray(normalize_unchecked(
          predict_batch(predictor, v, grid, 1), grid), np.float64)
      de = (float(rayleigh_quotient(psi, v, grid)[0]) - e0) * 1e3
      panels.append((psi[0], f"{name}\ndE = {_number(de)} mHa", "magma"))
    top = max(p[0].max() for p in panels[1:])
    for ax, (image, title, cmap) in zip(axes[row], panels):
      style = dict(cmap=cmap)
      if cmap == "magma":
        style.update(vmin=0.0, vmax=top)
      ax.imshow(image.T, origin="lower", extent=extent, **style)
      ax.set_title(title, fontsize=9)
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle("One sample per split: exact ground state and predictions")
  save_figure(fig, path)


def read_metrics(metrics_jsonl_path: str) -> list[dict[str, Any]]:
  """Reads a ``metrics.jsonl`` written during training.

  Lines that are not JSON objects are skipped (a run still writing may end
  in a partial line).

  Raises:
    ValueError: if the file is missing or holds no records.
  """
  try:
    lines = paths.resolve(metrics_jsonl_path).read_text().splitlines()
  except FileNotFoundError:
    raise ValueError(f"No metrics file at {metrics_jsonl_path}; training "
                     "writes it to <workdir>/metrics.jsonl.") from None
  records = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict):
      records.append(record)
  if not records:
    raise ValueError(f"{metrics_jsonl_path} holds no metric records.")
  return records


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def plot_training_curves(metrics_jsonl_path: str, path: str) -> None:
  """Plots every numeric metric against step, one panel per metric, to a PNG.

  Each panel has one line per split ("train", "val", ...); the y axis is
  logarithmic where all values are positive. "loss" comes first.

  Args:
    metrics_jsonl_path: the training run's ``metrics.jsonl`` (one JSON object
      per line with ``step``, ``split`` and scalar metrics).
    path: the PNG to write.

  Raises:
    ValueError: if the file is missing or holds no numeric metrics.
  """
  records = read_metrics(metrics_jsonl_path)
  series: dict[str, dict[str, list[tuple[float, float]]]] = {}
  for record in records:
    step = record.get("step")
    if not _is_number(step):
      continue
    split = str(record.get("split", "train"))
    for key, value in record.items():
      if key in ("step", "split") or not _is_number(value):
        continue
      series.setdefault(key, {}).setdefault(split, []).append((step, value))
  if not series:
    raise ValueError(f"{metrics_jsonl_path} holds no numeric metrics with a "
                     "step.")
  keys = sorted(series, key=lambda k: (k != "loss", k))
  ncols = min(3, len(keys))
  nrows = math.ceil(len(keys) / ncols)
  fig = new_figure(figsize=(5 * ncols, 3.6 * nrows))
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, key in zip(axes, keys):
    values = []
    for split in sorted(series[key], key=lambda s: (s != "train", s)):
      points = sorted(series[key][split])
      steps, ys = zip(*points)
      values.extend(ys)
      ax.plot(steps, ys, marker="o" if len(points) < 30 else None,
              markersize=3, label=split)
    if min(values) > 0:
      ax.set_yscale("log")
    ax.set(title=key, xlabel="step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  for ax in axes[len(keys):]:
    ax.set_visible(False)
  fig.suptitle(os.fspath(paths.resolve(metrics_jsonl_path)))
  save_figure(fig, path)


# --------------------------------------------------------------------------
# Report files.


def write_report(out: str, results: Mapping[str, EvalResult], *,
                 model_name: str, title: str, note: str,
                 record: Mapping[str, Any]) -> tuple[str, str]:
  """Writes ``results.md`` (title, table, note) and ``results.json``.

  Args:
    out: the output directory (created if missing).
    results: split name -> result, in row order.
    model_name: the table's first column.
    title: the Markdown document's heading and preamble.
    note: what the columns mean and how they were measured.
    record: JSON fields describing the run; ``summaries`` (split ->
      :meth:`EvalResult.summary`) is added.

  Returns:
    The two paths.
  """
  folder = paths.resolve(out)
  folder.mkdir(parents=True, exist_ok=True)
  table = markdown_table(results, model_name)
  md, js = folder / "results.md", folder / "results.json"
  with checks.writing("the evaluation report", os.fspath(folder)):
    md.write_text(f"{title}\n\n{table}\n{note}\n")
    js.write_text(json.dumps(dict(record, summaries={
        name: r.summary() for name, r in results.items()}), indent=1) + "\n")
  return os.fspath(md), os.fspath(js)
