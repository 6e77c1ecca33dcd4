"""Evaluation: the one scorer (training's validation uses it too) and reports.

* :mod:`~pgmoe_jax.evaluation.scorer`: :func:`score_dataset`,
  :func:`summarize`, :func:`evaluate_predictor` (accuracy in float64 and
  speed against the reference solver), :class:`EvalResult`; a model is
  anything with the :class:`~pgmoe_jax.models.serving.Predictor` protocol,
  called through :func:`pgmoe_jax.models.serving.predict_batch`.
* :mod:`~pgmoe_jax.evaluation.report`: :func:`markdown_table`,
  :func:`write_report`, :func:`plot_samples`, :func:`plot_training_curves`,
  :func:`read_metrics` (matplotlib only when a figure is drawn).
"""

from pgmoe_jax.evaluation.report import COLUMNS
from pgmoe_jax.evaluation.report import format_value
from pgmoe_jax.evaluation.report import markdown_table
from pgmoe_jax.evaluation.report import plot_samples
from pgmoe_jax.evaluation.report import plot_training_curves
from pgmoe_jax.evaluation.report import read_metrics
from pgmoe_jax.evaluation.report import write_report
from pgmoe_jax.evaluation.scorer import EvalResult
from pgmoe_jax.evaluation.scorer import GAP_THRESHOLD_HA
from pgmoe_jax.evaluation.scorer import check_grid
from pgmoe_jax.evaluation.scorer import evaluate_predictor
from pgmoe_jax.evaluation.scorer import make_score_batch
from pgmoe_jax.evaluation.scorer import reference_speed
from pgmoe_jax.evaluation.scorer import score_dataset
from pgmoe_jax.evaluation.scorer import summarize
from pgmoe_jax.models.serving import Predictor

__all__ = [
    "COLUMNS", "EvalResult", "GAP_THRESHOLD_HA", "Predictor", "check_grid",
    "evaluate_predictor", "format_value", "make_score_batch",
    "markdown_table", "plot_samples", "plot_training_curves",
    "read_metrics", "reference_speed", "score_dataset",
    "summarize", "write_report",
]
