"""A run's config, checked and resolved once, before anything is written.

Configs are ``ml_collections.ConfigDict`` s (``experiments/configs/
default.py`` documents every field). :func:`resolve` checks every field a
run reads, builds the model (so its shape checks, such as tiles that must
divide the grid, run too) and the unlabelled potential stream, and returns
a :class:`Run` that the training loop uses from then on. The part a trained
model needs (grid, dtype, model) is
:func:`pgmoe_jax.models.resolve.resolve_model`, which is all that
:func:`pgmoe_jax.inference.load_model` reads; it is imported here too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from pgmoe_jax import potentials
from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import InsufficientMemoryError
from pgmoe_jax.memory import check_fits
from pgmoe_jax.memory import describe
from pgmoe_jax.memory import training_estimate
from pgmoe_jax.metrics import SCORE_KEYS
from pgmoe_jax.models import count_params
from pgmoe_jax.models.resolve import ModelSetup
from pgmoe_jax.models.resolve import param_shapes
from pgmoe_jax.models.resolve import resolve_model

MODES = ("supervised", "semi_supervised", "label_free")
SUPERVISED = ("infidelity", "mse")
SCHEDULES = ("constant", "anneal")
EVAL_STATS = ("mean", "median", "p90")


@dataclasses.dataclass(frozen=True)
class Run:
  """A whole config, resolved (see :func:`resolve`).

  Attributes:
    config: the config itself.
    grid: the grid.
    dtype: the training dtype.
    model: the flax module.
    uses_labels: whether the loss reads labelled batches (every mode but
      ``label_free``).
    stream: ``sample(key) -> V (unlabelled_batch_size, *grid.shape)`` for the
      semi-supervised and label-free modes, else ``None``.
  """
  config: ml_collections.ConfigDict
  grid: Grid
  dtype: Any
  model: nn.Module
  uses_labels: bool
  stream: Callable[[jax.Array], jax.Array] | None


def _positive_int(value, name: str, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < minimum):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_loss(config) -> None:
  loss = config.loss
  if loss.mode not in MODES:
    raise ValueError(f"Unknown loss.mode {loss.mode!r}; known: "
                     f"{', '.join(MODES)}.")
  if loss.supervised not in SUPERVISED:
    raise ValueError(f"Unknown loss.supervised {loss.supervised!r}; known: "
                     f"{', '.join(SUPERVISED)}.")
  if loss.schedule not in SCHEDULES:
    raise ValueError(f"Unknown loss.schedule {loss.schedule!r}; known: "
                     f"{', '.join(SCHEDULES)}.")
  if loss.mode != "supervised" and loss.energy_weight <= 0:
    raise ValueError(f"loss.mode={loss.mode!r} trains on the energy, so "
                     "loss.energy_weight must be positive.")
  if loss.mode != "supervised":
    _positive_int(loss.unlabelled_batch_size, "loss.unlabelled_batch_size")


def _check_training(config, uses_labels: bool) -> None:
  train, optim, data = config.train, config.optim, config.data
  for name in ("num_steps", "batch_size", "log_every_steps",
               "eval_every_steps", "checkpoint_every_steps",
               "keep_checkpoints", "eval_batch_size"):
    _positive_int(train[name], f"train.{name}")
  if data.num_train != -1:
    _positive_int(data.num_train, "data.num_train (or -1 for all)")
  if uses_labels and not data.train:
    raise ValueError(f"loss.mode={config.loss.mode!r} trains on labelled "
                     "data: set data.train to a dataset directory, or use "
                     "loss.mode='label_free'.")
  if not optim.learning_rate > 0:
    raise ValueError(f"optim.learning_rate must be positive, got "
                     f"{optim.learning_rate!r}.")
  _positive_int(optim.warmup_steps, "optim.warmup_steps", 0)
  if optim.warmup_steps >= train.num_steps:
    raise ValueError(f"optim.warmup_steps={optim.warmup_steps} must be less "
                     f"than train.num_steps={train.num_steps}.")
  for name in ("end_learning_rate_factor", "weight_decay", "grad_clip"):
    if not optim[name] >= 0:
      raise ValueError(f"optim.{name} must be >= 0, got {optim[name]!r}.")
  _check_mesh(config)
  names = [f"val/{m}_{s}" for m in SCORE_KEYS for s in EVAL_STATS]
  if data.val and train.best_metric not in names:
    raise ValueError(f"Unknown train.best_metric {train.best_metric!r}; "
                     f"known: {', '.join(names)}.")


def mesh_shape(config) -> tuple[int, int]:
  """``(data, space)`` from ``config.mesh`` (``(-1, 1)`` without one: every
  device on the data axis); ``data = -1`` takes the devices left over."""
  mesh = _plain(config.get("mesh", None))
  return int(mesh.get("data", -1)), int(mesh.get("space", 1))


def _check_mesh(config) -> None:
  """``mesh.data`` / ``mesh.space`` against the grid and the model's tiles."""
  mesh = _plain(config.get("mesh", None))
  unknown = sorted(set(mesh) - {"data", "space"})
  if unknown:
    raise ValueError(f"Unknown mesh field(s) {', '.join(unknown)}; valid: "
                     "data, space.")
  data, space = mesh_shape(config)
  _positive_int(space, "mesh.space")
  if data != -1:
    _positive_int(data, "mesh.data (or -1 for the devices left over)")
  n = int(config.grid.shape[0])
  if n % space:
    raise ValueError(f"mesh.space={space} must divide the first grid axis "
                     f"({n} points): the space devices split it evenly.")
  if space > 1 and config.model.name == "pgmoe":
    tiles = config.model.tiles
    first = int(tiles if isinstance(tiles, int) else tiles[0])
    if first % space:
      raise ValueError(
          f"mesh.space={space} must divide model.tiles on the first axis "
          f"({first}): each space device holds whole tiles.")


def _plain(section) -> dict[str, Any]:
  """A config section (ConfigDict, or a dict from config.json) as a dict."""
  section = section or {}
  return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def stream_ranges(config) -> dict[str, Any]:
  """The stream family's keyword arguments.

  ``config.data.ranges`` for a single family; for a composite family
  (``data.family = "mixture"``) the fields of ``config.data.mixture``
  (``components``, ``sum_probability``, ``offset``). Lists (config.json)
  become tuples and mappings :class:`~pgmoe_jax.potentials.FrozenMapping` s.

  Raises:
    ValueError: ``data.ranges`` set for a mixture (its ranges live in
      ``data.mixture``), or a ``data.mixture`` field the mixture does not
      take.
  """
  data = config.data
  ranges = _plain(data.get("ranges", None))
  if data.family not in potentials.COMPOSITE_FAMILIES:
    return {k: potentials.freeze(v) for k, v in ranges.items()}
  if ranges:
    raise ValueError(
        f"data.ranges={ranges} does not apply to data.family="
        f"{data.family!r}: set the components' ranges, their weights, "
        "sum_probability and offset in data.mixture.")
  kwargs = _plain(data.get("mixture", None))
  valid = potentials.range_names(potentials.get_family(data.family))
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"Unknown data.mixture field(s) {', '.join(unknown)}; "
                     f"valid: {', '.join(valid)}.")
  return {k: potentials.freeze(v) for k, v in kwargs.items()}


def resolve(config: ml_collections.ConfigDict) -> Run:
  """Checks a whole config and builds what a run needs from it.

  Raises:
    ValueError: naming the offending field, its value and what is allowed
      (an unknown mode or dtype, a bad count, a model whose tiles do not
      divide the grid, an unknown potential family or range, ...).
  """
  setup = resolve_model(config)
  _check_loss(config)
  uses_labels = config.loss.mode != "label_free"
  _check_training(config, uses_labels)
  stream = None
  if config.loss.mode != "supervised":
    try:
      stream = potentials.make_potential_stream(
          config.data.family, setup.grid,
          int(config.loss.unlabelled_batch_size), dtype=setup.dtype,
          **stream_ranges(config))
    except (TypeError, ValueError) as e:
      if config.data.family in potentials.COMPOSITE_FAMILIES:
        section = "data.mixture"
      else:
        section = f"data.ranges={_plain(config.data.get('ranges', None))}"
      raise ValueError(f"data.family={config.data.family!r} with {section}: "
                       f"{e}") from None
  _check_memory(config, setup)
  return Run(config, setup.grid, setup.dtype, setup.model, uses_labels,
             stream)


def activations_per_sample(model: nn.Module) -> int:
  """Values per sample of the network's own activations (features and
  hidden layers; the grid-sized arrays are counted separately), as the
  model says (its ``activations_per_sample()``, which asks its parts)."""
  return int(model.activations_per_sample())


def _largest_batch(config) -> int:
  """The largest batch a step or an evaluation holds (global)."""
  return max(int(config.train.batch_size),
             int(config.loss.unlabelled_batch_size),
             int(config.train.eval_batch_size))


def memory_estimate(config, setup) -> dict[str, float]:
  """Bytes per device of one training step, by part
  (:func:`pgmoe_jax.memory.training_estimate`), on the mesh the config
  asks for with the devices present; ``setup`` is a :class:`ModelSetup` or
  a :class:`Run` (its model, grid and dtype)."""
  num_params = count_params(param_shapes(setup))
  batch = _largest_batch(config)
  data, space = mesh_shape(config)
  if data == -1:
    data = max(1, jax.device_count() // space)
  return training_estimate(
      num_params, np.dtype(setup.dtype).itemsize, batch, setup.grid.size,
      activations_per_sample(setup.model), batch_devices=data,
      space_devices=space)


def _check_memory(config, setup: ModelSetup) -> None:
  """Refuses a run that cannot fit on its devices (a coarse estimate)."""
  parts = memory_estimate(config, setup)
  batch = _largest_batch(config)
  try:
    check_fits(sum(parts.values()),
               f"training {config.model.name} on {setup.grid} with batches "
               f"of {batch}, per device", "use smaller batches (train."
               "batch_size, loss.unlabelled_batch_size, train."
               "eval_batch_size), more devices (mesh.data splits the batch, "
               "mesh.space each grid) or a smaller grid")
  except InsufficientMemoryError as e:
    raise InsufficientMemoryError(
        f"{e} Estimate per device: {describe(parts)}.") from None
