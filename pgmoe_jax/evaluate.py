r"""Evaluation of a trained model on labelled datasets: metrics, speed, figures.

Contract:

* A model is anything with the :class:`Predictor` protocol (what
  :func:`pgmoe_jax.inference.load_model` returns): ``predict(V)`` maps a batch
  of potentials ``(b, *grid.shape)`` in Hartree to states of the same shape,
  plus ``grid`` and ``num_params``.
* :func:`evaluate_predictor` feeds it every sample of a
  :class:`~pgmoe_jax.data.Dataset` as float32 and scores the predictions in
  float64 against the stored references with the metrics of DESIGN.md:

  - infidelity :math:`1 - (a\cdot b)^2 / ((a\cdot a)(b\cdot b))` against the
    stored ``psi0`` (blind to scale and sign);
  - energy error :math:`dE = E[\psi_{pred}] - E_0` in mHa, with the Rayleigh
    quotient under the exact discrete ``H`` (:func:`pgmoe_jax.energy.energy`);
    :math:`dE \ge 0` by the variational principle, 1.6 mHa is chemical
    accuracy;
  - residual :math:`\|H\psi - E[\psi]\psi\| / \|\psi\|` in Ha;
  - the spectral gap :math:`E_1 - E_0` where the dataset stores ``E1``: a
    near-degenerate pair (symmetric multi-well potentials) makes the ground
    state ill-determined, so the summary also reports the p90 infidelity of
    the samples with a gap of at least :data:`GAP_THRESHOLD_HA`;
  - speed: predictions per second, and the reference solver's solves per
    second on some of the same potentials, measured in the same run.

  It needs float64 (``jax.config.update("jax_enable_x64", True)``): without
  it the "exact" energies would silently be float32.
* :func:`markdown_table` renders summaries; :func:`plot_samples` and
  :func:`plot_training_curves` write PNG figures.

Importing the module does no I/O and does not import matplotlib; the plotting
functions import it when called and draw on a ``Figure`` with the Agg canvas,
so no global backend (pyplot) state is touched.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Protocol

import jax
import numpy as np

from pgmoe_jax import solvers
from pgmoe_jax.energy import energy as energy_fn
from pgmoe_jax.energy import residual as residual_fn
from pgmoe_jax.grid import Grid
from pgmoe_jax.metrics import CHEMICAL_ACCURACY_MHA
from pgmoe_jax.metrics import MHA_PER_HA

__all__ = [
    "COLUMNS", "EvalResult", "GAP_THRESHOLD_HA", "Predictor", "check_grid",
    "evaluate_predictor", "format_value", "markdown_table", "plot_samples",
    "plot_training_curves", "read_metrics", "reference_speed",
]

GAP_THRESHOLD_HA = 0.5
INPUT_DTYPE = np.float32  # what models are trained on and served with

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
)


class Predictor(Protocol):
  """What evaluation needs from a model.

  Attributes:
    grid: the grid the model was trained on.
    num_params: the number of trainable parameters.
  """
  grid: Grid
  num_params: int

  def predict(self, V) -> Any:  # pylint: disable=invalid-name
    """Potentials ``(b, *grid.shape)`` (Ha) -> states of the same shape."""


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Per-sample metrics of one model on one dataset, and its speed.

  Attributes:
    split: the dataset's split name.
    grid: the grid.
    index: ``(n,)`` the samples' numbers within the split.
    infidelity: ``(n,)`` ``1 - F`` against the stored ground state.
    energy: ``(n,)`` ``E[psi_pred]`` under the exact H, Ha.
    E0: ``(n,)`` the stored ground-state energies, Ha.
    energy_error_mha: ``(n,)`` ``E[psi_pred] - E0`` in mHa.
    residual: ``(n,)`` ``||H psi - E psi|| / ||psi||`` of the predictions, Ha.
    gap: ``(n,)`` ``E1 - E0`` in Ha, or ``None`` if the dataset has no E1.
    num_params: the model's trainable parameters.
    batch_size: the batch the model was called with.
    predictions_per_s: model throughput (best of several timed calls).
    reference_method: the reference solver (``"lobpcg"`` or ``"eigsh"``).
    num_reference: how many potentials the reference solved for timing.
    reference_solves_per_s: the reference solver's throughput on CPU, NaN if
      ``num_reference`` was 0.
  """
  split: str
  grid: Grid
  index: np.ndarray
  infidelity: np.ndarray
  energy: np.ndarray
  E0: np.ndarray  # pylint: disable=invalid-name
  energy_error_mha: np.ndarray
  residual: np.ndarray
  gap: np.ndarray | None
  num_params: int
  batch_size: int
  predictions_per_s: float
  reference_method: str
  num_reference: int
  reference_solves_per_s: float

  def __len__(self) -> int:
    return len(self.infidelity)

  @property
  def speedup(self) -> float:
    """Predictions per second over reference solves per second."""
    return self.predictions_per_s / self.reference_solves_per_s

  def summary(self) -> dict[str, Any]:
    """Scalar summary; ``None`` where a value is not available.

    Returns:
      A JSON-serialisable dict with the keys of :data:`COLUMNS` (percentiles
      of infidelity and of ``dE`` in mHa, the fraction with
      ``dE < 1.6 mHa``, the median residual in Ha, the p90 infidelity over
      samples with gap ``>= 0.5 Ha`` and their count ``n_gapped``, the
      parameter count, predictions/s, reference solves/s and their ratio
      ``speedup``) plus ``reference_method``.
    """
    gapped_p90 = n_gapped = None
    if self.gap is not None:
      gapped = self.gap >= GAP_THRESHOLD_HA
      n_gapped = int(gapped.sum())
      if n_gapped:
        gapped_p90 = _scalar(np.percentile(self.infidelity[gapped], 90))
    return {
        "n": len(self),
        "infidelity_median": _scalar(np.median(self.infidelity)),
        "infidelity_p90": _scalar(np.percentile(self.infidelity, 90)),
        "energy_error_mha_median": _scalar(np.median(self.energy_error_mha)),
        "energy_error_mha_p90": _scalar(
            np.percentile(self.energy_error_mha, 90)),
        "frac_chemical_accuracy": _scalar(
            np.mean(self.energy_error_mha < CHEMICAL_ACCURACY_MHA)),
        "residual_median": _scalar(np.median(self.residual)),
        "infidelity_p90_gapped": gapped_p90,
        "n_gapped": n_gapped,
        "num_params": int(self.num_params),
        "predictions_per_s": _scalar(self.predictions_per_s),
        "reference_solves_per_s": _scalar(self.reference_solves_per_s),
        "speedup": _scalar(self.speedup),
        "reference_method": self.reference_method,
    }


def _scalar(x) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


# --------------------------------------------------------------------------
# Evaluation.


def check_grid(predictor: Predictor, grid: Grid, what: str = "the dataset"
               ) -> None:
  """Raises ValueError, naming both grids, if the model's grid differs."""
  if predictor.grid != grid:
    raise ValueError(
        f"The model predicts on {predictor.grid} but {what} is on {grid}; "
        "evaluate on data generated on the model's grid.")


def _block(tree) -> None:
  """Waits for every JAX array in ``tree`` (NumPy leaves are already done)."""
  for leaf in jax.tree_util.tree_leaves(tree):
    if hasattr(leaf, "block_until_ready"):
      leaf.block_until_ready()


def _min_time(fn: Callable[[], Any], repeats: int) -> float:
  """Best wall time of ``fn`` over ``repeats`` calls."""
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    _block(fn())
    best = min(best, time.perf_counter() - start)
  return best


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
  """Best wall time of ``fn`` over ``repeats`` calls, after one warm-up."""
  _block(fn())
  return _min_time(fn, repeats)


def _predict(predictor: Predictor, potentials: np.ndarray, batch: int,
             grid: Grid) -> np.ndarray:
  """Predicts ``(m <= batch, *grid.shape)`` potentials, returns float64.

  The batch is padded to ``batch`` (repeating the last potential) so a jitted
  model compiles once for every call.
  """
  m = len(potentials)
  pad = np.repeat(potentials[-1:], batch - m, axis=0)
  inputs = np.concatenate([potentials, pad]).astype(INPUT_DTYPE)
  out = np.asarray(predictor.predict(jax.device_put(inputs)), np.float64)
  if out.shape != inputs.shape:
    raise ValueError(
        f"The model returned states of shape {out.shape} for potentials of "
        f"shape {inputs.shape}; predict must keep the shape (b, "
        f"{', '.join(map(str, grid.shape))}).")
  out = out[:m]
  finite = np.isfinite(out).reshape(m, -1).all(axis=1)
  if not finite.all():
    raise ValueError(
        f"The model predicted NaN or inf for {int((~finite).sum())} of {m} "
        "potentials in a batch; the checkpoint may have diverged.")
  return out


def reference_speed(potentials: np.ndarray, grid: Grid, method: str,
                    repeats: int = 1) -> float:
  """Solves per second of the reference solver, one potential at a time, CPU.

  Args:
    potentials: ``(m, *grid.shape)`` float64, Hartree.
    grid: the grid.
    method: a method of :func:`pgmoe_jax.solvers.solve`.
    repeats: timed runs over all ``m`` potentials (the best is kept), after
      one warm-up solve of the first potential (it compiles the JAX solver).

  Returns:
    ``m`` / seconds, or NaN when ``m`` is 0.
  """
  if len(potentials) == 0:
    return math.nan
  # One at a time on the CPU is the fastest way to solve there (a batch
  # iterates until its slowest member converges; DESIGN.md).
  # Each potential is its own call with the same shapes, so the warm-up
  # compiles everything (eager ops around the solver compile per batch
  # shape, and a batch of m would recompile them).
  def run_all():
    return [solvers.solve(v[None], grid, method=method,
                          chunk_size=1).energies for v in potentials]
  with jax.default_device(jax.devices("cpu")[0]):
    _block(solvers.solve(potentials[:1], grid, method=method,
                         chunk_size=1).energies)
    seconds = _min_time(run_all, repeats)
  return len(potentials) / seconds


def evaluate_predictor(predictor: Predictor, dataset, *,
                       batch_size: int = 256,
                       reference_method: str = "lobpcg",
                       num_reference: int = 32,
                       timing_repeats: int = 5) -> EvalResult:
  """Scores a model on every sample of a dataset (see the module docstring).

  Args:
    predictor: the model (:class:`Predictor`).
    dataset: a :class:`pgmoe_jax.data.Dataset` on the model's grid.
    batch_size: potentials per model call (capped at the dataset size; the
      last batch is padded so the model compiles once).
    reference_method: the solver timed for the speed-up
      (:data:`pgmoe_jax.solvers.METHODS`).
    num_reference: how many of the dataset's potentials (the first ones) the
      reference solves for timing; 0 skips it (speed-up NaN).
    timing_repeats: timed model calls (the best counts), after a warm-up.

  Returns:
    An :class:`EvalResult` with per-sample arrays in float64.

  Raises:
    ValueError: without float64 enabled, for a model on another grid (the
      message names both), bad sizes or method, an empty dataset, or a model
      that returns the wrong shape, NaN/inf or a zero state.
  """
  if not jax.config.jax_enable_x64:
    raise ValueError("Evaluation scores predictions under the exact H in "
                     "float64: call jax.config.update('jax_enable_x64', True) "
                     "first.")
  grid = dataset.grid
  check_grid(predictor, grid, f"dataset {dataset.path}")
  for name, value, low in (("batch_size", batch_size, 1),
                           ("num_reference", num_reference, 0),
                           ("timing_repeats", timing_repeats, 1)):
    if not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
  if reference_method not in solvers.METHODS:
    raise ValueError(f"Unknown reference_method {reference_method!r}; known: "
                     f"{', '.join(solvers.METHODS)}.")
  n = len(dataset)
  if n == 0:
    raise ValueError(f"Dataset {dataset.path} holds no samples.")
  batch = min(int(batch_size), n)

  e0 = np.asarray(dataset.E0, np.float64)
  infidelity = np.empty(n)
  energy = np.empty(n)
  residual = np.empty(n)
  for start in range(0, n, batch):
    stop = min(start + batch, n)
    potentials = np.asarray(dataset.potentials[start:stop], np.float64)
    psi = _predict(predictor, potentials, batch, grid)
    psi0 = np.asarray(dataset.psi0[start:stop], np.float64)
    axes = tuple(range(1, grid.ndim + 1))
    overlap = np.sum(psi * psi0, axis=axes)
    infidelity[start:stop] = 1.0 - overlap**2 / (
        np.sum(psi * psi, axis=axes) * np.sum(psi0 * psi0, axis=axes))
    energy[start:stop] = np.asarray(energy_fn(psi, potentials, grid))
    residual[start:stop] = np.asarray(residual_fn(psi, potentials, grid))
  gap = None
  if dataset.E1 is not None:
    gap = np.asarray(dataset.E1, np.float64) - e0

  timing_inputs = jax.device_put(
      np.asarray(dataset.potentials[:batch], INPUT_DTYPE))
  seconds = _best_time(lambda: predictor.predict(timing_inputs),
                       int(timing_repeats))
  reference = np.asarray(
      dataset.potentials[:min(int(num_reference), n)], np.float64)
  return EvalResult(
      split=dataset.spec.split, grid=grid,
      index=np.asarray(dataset.index), infidelity=infidelity, energy=energy,
      E0=e0, energy_error_mha=(energy - e0) * MHA_PER_HA, residual=residual,
      gap=gap, num_params=int(predictor.num_params), batch_size=batch,
      predictions_per_s=batch / seconds, reference_method=reference_method,
      num_reference=len(reference),
      reference_solves_per_s=reference_speed(reference, grid,
                                              reference_method))


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


def _figure(**kwargs):
  # The object-oriented API with the Agg canvas: no pyplot, no global
  # backend switch, nothing left open.
  # pylint: disable-next=g-import-not-at-top
  from matplotlib.backends import backend_agg
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(layout="constrained", **kwargs)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=100)


def _normalise(psi: np.ndarray, grid: Grid) -> np.ndarray:
  psi = psi * (1.0 if psi.sum() >= 0 else -1.0)
  return psi / np.sqrt(np.sum(psi**2) * grid.volume_element)


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
  check_grid(predictor, grid, f"dataset {dataset.path}")
  if result.grid != grid or len(result) != len(dataset):
    raise ValueError(
        f"The result ({len(result)} samples on {result.grid}) is not from "
        f"dataset {dataset.path} ({len(dataset)} samples on {grid}).")
  picks = _picks(result)
  rows = np.array([i for _, i in picks])
  potentials = np.asarray(dataset.potentials[rows], np.float64)
  predicted = _predict(predictor, potentials,
                       max(result.batch_size, len(rows)), grid)
  true = np.asarray(dataset.psi0[rows], np.float64)
  # Normalise the whole states before any slicing, so a 3-D slice shows
  # amplitude errors too.
  predicted = np.stack([_normalise(p, grid) for p in predicted])
  true = np.stack([_normalise(p, grid) for p in true])
  coords = grid.coordinates()
  where = [""] * len(picks)
  if grid.ndim == 3:
    # The plane through each true state's maximum: a fixed central plane
    # can miss an off-centre particle altogether.
    planes = [int(np.unravel_index(np.argmax(t), grid.shape)[2])
              for t in true]
    potentials, predicted, true = (
        np.stack([x[..., k] for x, k in zip(a, planes)])
        for a in (potentials, predicted, true))
    where = [f", z = {coords[2][k]:.2f} bohr" for k in planes]
    coords = coords[:2]

  fig = _figure(figsize=(15, 10) if grid.ndim > 1 else (14, 8))
  axes = fig.subplots(3, 4 if grid.ndim > 1 else 3, squeeze=False)
  for row, (label, i) in enumerate(picks):
    v, psi_true, psi_pred = potentials[row], true[row], predicted[row]
    error = psi_pred - psi_true
    scores = (f"1-F = {result.infidelity[i]:.2e}, "
              f"dE = {_number(result.energy_error_mha[i])} mHa")
    name = f"{label} (sample {int(result.index[i])}{where[row]})"
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
  _save(fig, path)


def read_metrics(metrics_jsonl_path: str) -> list[dict[str, Any]]:
  """Reads a ``metrics.jsonl`` written during training.

  Lines that are not JSON objects are skipped (a run still writing may end
  in a partial line).

  Raises:
    ValueError: if the file is missing or holds no records.
  """
  try:
    with open(metrics_jsonl_path) as f:
      lines = f.readlines()
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
  fig = _figure(figsize=(5 * ncols, 3.6 * nrows))
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
  fig.suptitle(os.path.abspath(metrics_jsonl_path))
  _save(fig, path)
