r"""Scoring models on labelled data: the one scorer, and model evaluation.

* :func:`score_dataset` runs a per-batch scorer over every sample of a
  dataset (the last batch padded, so a jitted scorer compiles once) and
  returns per-sample arrays; the per-sample metrics are
  :func:`pgmoe_jax.metrics.score` (infidelity, energy, ``dE`` in mHa,
  residual). Training's validation (:func:`summarize`: mean, median, p90) and
  the evaluation tables are both computed this way.
* :func:`evaluate_predictor` scores a model (anything with the
  :class:`~pgmoe_jax.models.serving.Predictor` protocol, such as what
  :func:`pgmoe_jax.inference.load_model` returns) in float64 against the
  stored references, and measures its speed: predictions per second, and
  the reference solver's solves per second on some of the same potentials,
  in the same run, each the best of the same number of timed calls after
  an untimed warm-up (compilation excluded). The result is an
  :class:`EvalResult`. A near-degenerate pair (symmetric multi-well
  potentials) makes the ground state ill-determined, so the summary also
  reports the p90 infidelity of samples with a gap ``E1 - E0`` of at least
  :data:`GAP_THRESHOLD_HA`.

Tables and figures are in :mod:`pgmoe_jax.evaluation.report`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import metrics
from pgmoe_jax import solvers
from pgmoe_jax import timing
from pgmoe_jax.batching import pad_batch
from pgmoe_jax.grid import Grid
from pgmoe_jax.grid import check_same_grid
from pgmoe_jax.metrics import CHEMICAL_ACCURACY_MHA
from pgmoe_jax.models.serving import INPUT_DTYPE
from pgmoe_jax.models.serving import Predictor
from pgmoe_jax.models.serving import predict_batch
from pgmoe_jax.sharding import fetch
from pgmoe_jax.sharding import local_rows
from pgmoe_jax.sharding import put_batch

GAP_THRESHOLD_HA = 0.5
SUMMARY_STATS = ("mean", "median", "p90")

ScoreBatch = Callable[[dict[str, Any]], Mapping[str, Any]]


# --------------------------------------------------------------------------
# The scorer.


def score_dataset(score_batch: ScoreBatch, dataset, *, batch_size: int,
                  dtype, sharding=None) -> dict[str, np.ndarray]:
  """Per-sample scores over a whole dataset.

  Args:
    score_batch: ``score_batch({"potential", "psi0", "E0"}) -> {name: (b,)}``
      (usually jitted, around :func:`pgmoe_jax.metrics.score`).
    dataset: a :class:`~pgmoe_jax.data.Dataset`.
    batch_size: samples per call; the last batch is padded with copies of
      its last sample (dropped again), so every call has the same shape.
    dtype: dtype of the arrays handed to ``score_batch``.
    sharding: optional placement of each batch (e.g. split across devices,
      also across processes: then ``score_batch`` must return replicated
      arrays).

  Returns:
    ``{name: (n,) float64}`` in dataset order.
  """
  n = len(dataset)
  values: dict[str, list[np.ndarray]] = {}
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    idx = pad_batch(np.arange(start, stop), batch_size)
    # Across processes each reads only its rows; the scores come back whole
    # (score_batch returns them replicated).
    idx = idx[local_rows(sharding, batch_size)]
    batch = {"potential": dataset.potentials[idx].astype(dtype),
             "psi0": dataset.psi0[idx].astype(dtype),
             "E0": dataset.E0[idx].astype(dtype)}
    out = fetch(score_batch(put_batch(batch, sharding, batch_size)))
    for k, v in out.items():
      values.setdefault(k, []).append(np.asarray(v)[:stop - start])
  return {k: np.concatenate(parts).astype(np.float64)
          for k, parts in values.items()}


def summarize(scores: Mapping[str, np.ndarray]) -> dict[str, float]:
  """``<name>_<mean|median|p90>`` of each score, and ``num_samples``."""
  summary: dict[str, float] = {}
  for k, v in scores.items():
    summary["num_samples"] = len(v)
    summary[f"{k}_mean"] = float(np.mean(v))
    summary[f"{k}_median"] = float(np.median(v))
    summary[f"{k}_p90"] = float(np.percentile(v, 90))
  return summary


def make_score_batch(apply_fn: Callable[[Any, jax.Array], jax.Array],
                     grid: Grid) -> Callable[[Any, dict], dict]:
  """``score(params, batch)``: a model's per-sample metrics (pure; jit it).

  The model runs and is scored in the batch's dtype (training's).
  """
  def score(params, batch):
    psi = apply_fn(params, batch["potential"])
    return metrics.score(psi, batch["potential"], batch["psi0"], batch["E0"],
                         grid)
  return score


# --------------------------------------------------------------------------
# Evaluating a trained model.


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
    predictions_per_s: model throughput (best of ``timing_repeats`` timed
      calls after a warm-up).
    reference_method: the reference solver (``"lobpcg"`` or ``"eigsh"``).
    num_reference: how many potentials the reference solved for timing.
    reference_solves_per_s: the reference solver's throughput on CPU (best
      of the same number of timed passes after a warm-up), NaN if
      ``num_reference`` was 0.
    cascade_speedups: the matched-accuracy speed-ups against the cascade's
      front (:mod:`pgmoe_jax.evaluation.front`), for the median and the
      p90 dE, or ``None`` where the front was not measured.
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
  cascade_speedups: tuple[Any, Any] | None = None

  def __len__(self) -> int:
    return len(self.infidelity)

  @property
  def speedup(self) -> float:
    """Predictions per second over reference solves per second."""
    return self.predictions_per_s / self.reference_solves_per_s

  def summary(self) -> dict[str, Any]:
    """Scalar summary; ``None`` where a value is not available.

    Returns:
      A JSON-serialisable dict with the keys of
      :data:`pgmoe_jax.evaluation.report.COLUMNS` (percentiles
      of infidelity and of ``dE`` in mHa, the fraction with
      ``dE < 1.6 mHa``, the median residual in Ha, the p90 infidelity over
      samples with gap ``>= 0.5 Ha`` and their count ``n_gapped``, the
      parameter count, predictions/s, reference solves/s and their ratio
      ``speedup``), the matched-accuracy speed-ups against the cascade
      (text such as ``"0.62x"`` or ``">=1.30x"``, or ``None``), plus
      ``reference_method``.
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
        "speedup_vs_cascade_median": (
            None if self.cascade_speedups is None
            else str(self.cascade_speedups[0])),
        "speedup_vs_cascade_p90": (
            None if self.cascade_speedups is None
            else str(self.cascade_speedups[1])),
        "reference_method": self.reference_method,
    }


def _scalar(x) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def check_grid(predictor: Predictor, grid: Grid,
               what: str = "the dataset") -> None:
  """Raises ValueError, naming both grids, if the model's grid differs."""
  check_same_grid(predictor.grid, grid, expected_what="the model",
                  got_what=what,
                  fix="Evaluate on data generated on the model's grid.")


def reference_speed(potentials: np.ndarray, grid: Grid, method: str,
                    repeats: int = 5) -> float:
  """Solves per second of the reference solver, one potential at a time, CPU.

  Timed like the model in :func:`evaluate_predictor`: one untimed warm-up
  pass over all ``m`` potentials (it compiles the JAX solver), then the best
  of ``repeats`` timed passes (:func:`pgmoe_jax.timing.timed_best`).

  Args:
    potentials: ``(m, *grid.shape)`` float64, Hartree.
    grid: the grid.
    method: a method of :func:`pgmoe_jax.solvers.solve`.
    repeats: timed passes over all ``m`` potentials (the best is kept); pass
      the model's number of timed calls, so that the speed-up compares like
      with like.

  Returns:
    ``m`` / seconds, or NaN when ``m`` is 0.
  """
  if len(potentials) == 0:
    return math.nan
  # One at a time on the CPU is the fastest way to solve there (a batch
  # iterates until its slowest member converges). Each potential is its own
  # call with the same shapes.

  def run_all():
    return [solvers.solve(v[None], grid, method=method,
                          chunk_size=1).energies for v in potentials]
  with jax.default_device(jax.devices("cpu")[0]):
    _, seconds = timing.timed_best(run_all, repeats)
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
    timing_repeats: timed model calls, and timed passes of the reference
      over its potentials (the best of each counts), each side after one
      untimed warm-up call on the same inputs.

  Returns:
    An :class:`EvalResult` with per-sample arrays in float64.

  Raises:
    ValueError: without float64 enabled, for a model on another grid (the
      message names both), bad sizes or method, an empty dataset, or a model
      that returns the wrong shape, NaN/inf or a zero state.
  """
  checks.require_x64("Evaluation scores predictions under the exact H in "
                     "float64")
  grid = dataset.grid
  check_grid(predictor, grid, f"dataset {dataset.path or dataset.name}")
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
    raise ValueError(f"Dataset {dataset.path or dataset.name} holds no "
                     "samples.")
  batch = min(int(batch_size), n)
  where = dataset.path or dataset.name
  for start in range(0, n, 4096):  # in blocks: datasets are memory-mapped
    block = np.asarray(dataset.potentials[start:start + 4096])
    bad = ~np.isfinite(block).reshape(len(block), -1).all(axis=1)
    if bad.any():
      raise ValueError(
          f"Dataset {where}: the potential of sample "
          f"{int(np.asarray(dataset.index)[start + np.argmax(bad)])} holds "
          "NaN or inf, so nothing can be scored on it; the data are broken, "
          "not the model. Regenerate the dataset or drop the sample.")
  score = jax.jit(lambda psi, v, psi0, e0: metrics.score(psi, v, psi0, e0,
                                                         grid))

  def score_batch(b):
    psi = predict_batch(predictor, b["potential"], grid)
    return score(psi, b["potential"], b["psi0"], b["E0"])

  scores = score_dataset(score_batch, dataset, batch_size=batch,
                         dtype=np.float64)
  e0 = np.asarray(dataset.E0, np.float64)
  gap = None
  if dataset.E1 is not None:
    gap = np.asarray(dataset.E1, np.float64) - e0

  timing_inputs = jax.device_put(
      np.asarray(dataset.potentials[:batch], INPUT_DTYPE))
  seconds = timing.best_time(lambda: predictor.predict(timing_inputs),
                             int(timing_repeats))
  reference = np.asarray(
      dataset.potentials[:min(int(num_reference), n)], np.float64)
  return EvalResult(
      split=dataset.name, grid=grid,
      index=np.asarray(dataset.index), infidelity=scores["infidelity"],
      energy=scores["energy"], E0=e0,
      energy_error_mha=scores["energy_error_mha"],
      residual=scores["residual"], gap=gap,
      num_params=int(predictor.num_params), batch_size=batch,
      predictions_per_s=batch / seconds, reference_method=reference_method,
      num_reference=len(reference),
      reference_solves_per_s=reference_speed(reference, grid,
                                             reference_method,
                                             int(timing_repeats)))
