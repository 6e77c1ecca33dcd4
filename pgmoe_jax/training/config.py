"""A run's config, checked and resolved once, before anything is written.

Configs are ``ml_collections.ConfigDict`` s (``experiments/configs/
default.py`` documents every field). :func:`resolve` checks every field a
run reads and turns each section into a frozen, typed value
(:class:`DataConfig`, :class:`LossConfig`, :class:`OptimConfig`,
:class:`TrainConfig`, :class:`MeshConfig`); it builds the model (so its
shape checks, such as tiles that must divide the grid, run too), the
optimiser and the unlabelled potential stream, estimates the memory once,
and returns a :class:`Run`: training reads the run, never the ConfigDict
(which it only writes to ``config.json``). The part a trained
model needs (grid, dtype, model) is
:func:`pgmoe_jax.models.resolve.resolve_model`, which is all that
:func:`pgmoe_jax.inference.load_model` reads; it is imported here too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from pgmoe_jax import potentials
from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import InsufficientMemoryError
from pgmoe_jax.memory import check_fits
from pgmoe_jax.memory import describe
from pgmoe_jax.memory import training_estimate
from pgmoe_jax.metrics import SCORE_KEYS
from pgmoe_jax.models import count_params
from pgmoe_jax.models.resolve import param_shapes
from pgmoe_jax.models.resolve import resolve_model
from pgmoe_jax.training.step import make_optimizer
from pgmoe_jax.training.step import make_schedule

MODES = ("supervised", "semi_supervised", "label_free")
SUPERVISED = ("infidelity", "mse")
SCHEDULES = ("constant", "anneal")
UNLABELLED_OBJECTIVES = ("energy", "log_residual")
EVAL_STATS = ("mean", "median", "p90")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The ``data`` section (experiments/configs/default.py documents each
  field).

  Attributes:
    train: the labelled training set's directory, ``""`` for none.
    val: the validation set's directory, ``""`` for none.
    num_train: labelled samples used, ``-1`` for all.
    family: the stream's potential family.
    stream_kwargs: the family's keyword arguments (:func:`stream_ranges`).
  """
  train: str
  val: str
  num_train: int
  family: str
  stream_kwargs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The ``loss`` section (:mod:`pgmoe_jax.training.losses`)."""
  mode: str
  supervised: str
  supervised_weight: float
  energy_weight: float
  schedule: str
  anneal_steps: int
  unlabelled_batch_size: int
  augment: bool
  # (a default: config.json files written before the field mean "energy")
  unlabelled_objective: str = "energy"
  # (a default: config.json files written before the field mean 0)
  unlabelled_energy_weight: float = 0.0
  # (a default: config.json files written before the field mean 0)
  residual_power: float = 0.0


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """The ``optim`` section (:func:`pgmoe_jax.training.step.make_optimizer`)."""
  learning_rate: float
  warmup_steps: int
  end_learning_rate_factor: float
  weight_decay: float
  grad_clip: float


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The ``train`` section (the loop's cadence, batch sizes, checkpoints)."""
  num_steps: int
  batch_size: int
  log_every_steps: int
  eval_every_steps: int
  checkpoint_every_steps: int
  keep_checkpoints: int
  eval_batch_size: int
  best_metric: str


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The ``mesh`` section: ``data`` devices split the batch (``-1``: every
  device left over), ``space`` devices split each grid's first axis."""
  data: int = -1
  space: int = 1


@dataclasses.dataclass(frozen=True)
class Run:
  """A whole config, resolved (see :func:`resolve`).

  Attributes:
    config: the config itself, as given (what ``config.json`` records and
      a population compares).
    seed: the root PRNG seed.
    grid: the grid.
    dtype: the training dtype.
    model: the flax module.
    data, loss, optim, train, mesh: the typed sections.
    schedule: the learning-rate schedule (of ``optim`` and
      ``train.num_steps``).
    optimizer: the optimiser on ``schedule``.
    uses_labels: whether the loss reads labelled batches (every mode but
      ``label_free``).
    stream: ``sample(key) -> V (unlabelled_batch_size, *grid.shape)`` for the
      semi-supervised and label-free modes, else ``None``.
    memory: the estimated bytes per device of one step, by part
      (:func:`memory_estimate`), on the mesh with the devices present.
  """
  config: ml_collections.ConfigDict
  seed: int
  grid: Grid
  dtype: Any
  model: nn.Module
  data: DataConfig
  loss: LossConfig
  optim: OptimConfig
  train: TrainConfig
  mesh: MeshConfig
  schedule: optax.Schedule
  optimizer: optax.GradientTransformation
  uses_labels: bool
  stream: Callable[[jax.Array], jax.Array] | None
  memory: dict[str, float]


def _value(value, kind: str, name: str):
  """A config value as the field's ``kind``, or a ValueError naming it."""
  if kind == "str":
    if not isinstance(value, str):
      raise ValueError(f"{name} must be a string, got {value!r}.")
    return value
  if kind == "bool":
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)
  if kind == "int":
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, np.integer)):
      raise ValueError(f"{name} must be an integer, got {value!r}.")
    return int(value)
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.integer, np.floating)):
    raise ValueError(f"{name} must be a number, got {value!r}.")
  return float(value)


# Fields of a section that resolve reads into another attribute.
_SUBSECTIONS = {"data": {"ranges", "mixture"}}


def _section(cls, config, name: str, **computed):
  """The config's section ``name`` as a ``cls``: every field of ``cls``
  (those in ``computed`` given), typed; a missing or unknown field raises
  a ValueError that names it. A field with a default may be missing (the
  ``mesh`` section may be absent)."""
  section = _plain(config.get(name, None))
  fields = {f.name: f for f in dataclasses.fields(cls)}
  valid = [f for f in fields if f not in computed] + sorted(
      _SUBSECTIONS.get(name, ()))
  unknown = sorted(set(section) - set(valid))
  if unknown:
    raise ValueError(f"Unknown {name} field(s) {', '.join(unknown)}; valid: "
                     f"{', '.join(valid)}.")
  values = dict(computed)
  for field in fields.values():
    if field.name in computed:
      continue
    if field.name not in section:
      if field.default is not dataclasses.MISSING:
        continue
      raise ValueError(f"The config has no {name}.{field.name} (experiments/"
                       "configs/default.py defines every field).")
    values[field.name] = _value(section[field.name], field.type,
                                f"{name}.{field.name}")
  return cls(**values)


def _positive_int(value, name: str, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < minimum):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_loss(loss: LossConfig) -> None:
  if loss.mode not in MODES:
    raise ValueError(f"Unknown loss.mode {loss.mode!r}; known: "
                     f"{', '.join(MODES)}.")
  if loss.supervised not in SUPERVISED:
    raise ValueError(f"Unknown loss.supervised {loss.supervised!r}; known: "
                     f"{', '.join(SUPERVISED)}.")
  if loss.schedule not in SCHEDULES:
    raise ValueError(f"Unknown loss.schedule {loss.schedule!r}; known: "
                     f"{', '.join(SCHEDULES)}.")
  if loss.unlabelled_objective not in UNLABELLED_OBJECTIVES:
    raise ValueError(
        f"Unknown loss.unlabelled_objective {loss.unlabelled_objective!r}; "
        f"known: {', '.join(UNLABELLED_OBJECTIVES)}.")
  if not loss.unlabelled_energy_weight >= 0:  # (NaN too)
    raise ValueError(
        "loss.unlabelled_energy_weight must be >= 0 (1/Ha), got "
        f"{loss.unlabelled_energy_weight!r}.")
  if not loss.residual_power >= 0:  # (NaN too)
    raise ValueError(
        f"loss.residual_power must be >= 0, got {loss.residual_power!r}.")
  if loss.residual_power and loss.unlabelled_objective != "log_residual":
    raise ValueError(
        "loss.residual_power is the power mean of the log residual "
        "objective; with loss.unlabelled_objective="
        f"{loss.unlabelled_objective!r} set it to 0.")
  if loss.unlabelled_energy_weight and (
      loss.unlabelled_objective != "log_residual"):
    raise ValueError(
        "loss.unlabelled_energy_weight adds the mean energy to the log "
        "residual objective; with loss.unlabelled_objective="
        f"{loss.unlabelled_objective!r} set it to 0 (the energy is already "
        "the objective).")
  if loss.mode != "supervised" and loss.energy_weight <= 0:
    raise ValueError(f"loss.mode={loss.mode!r} trains on the energy, so "
                     "loss.energy_weight must be positive.")
  if loss.mode != "supervised":
    _positive_int(loss.unlabelled_batch_size, "loss.unlabelled_batch_size")


def _check_training(train: TrainConfig, optim: OptimConfig, data: DataConfig,
                    loss: LossConfig) -> None:
  for name in ("num_steps", "batch_size", "log_every_steps",
               "eval_every_steps", "checkpoint_every_steps",
               "keep_checkpoints", "eval_batch_size"):
    _positive_int(getattr(train, name), f"train.{name}")
  if data.num_train != -1:
    _positive_int(data.num_train, "data.num_train (or -1 for all)")
  if loss.mode != "label_free" and not data.train:
    raise ValueError(f"loss.mode={loss.mode!r} trains on labelled "
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
    if not getattr(optim, name) >= 0:
      raise ValueError(f"optim.{name} must be >= 0, got "
                       f"{getattr(optim, name)!r}.")
  names = [f"val/{m}_{s}" for m in SCORE_KEYS for s in EVAL_STATS]
  if data.val and train.best_metric not in names:
    raise ValueError(f"Unknown train.best_metric {train.best_metric!r}; "
                     f"known: {', '.join(names)}.")


def resolve_mesh(config) -> MeshConfig:
  """``config.mesh`` (``MeshConfig()`` without one: every device on the
  data axis), checked against the grid and the model's tiles."""
  mesh = _section(MeshConfig, config, "mesh")
  _positive_int(mesh.space, "mesh.space")
  if mesh.data != -1:
    _positive_int(mesh.data, "mesh.data (or -1 for the devices left over)")
  n = int(config.grid.shape[0])
  if n % mesh.space:
    raise ValueError(f"mesh.space={mesh.space} must divide the first grid "
                     f"axis ({n} points): the space devices split it "
                     "evenly.")
  if mesh.space > 1 and config.model.name == "pgmoe":
    tiles = config.model.tiles
    first = int(tiles if isinstance(tiles, int) else tiles[0])
    if first % mesh.space:
      raise ValueError(
          f"mesh.space={mesh.space} must divide model.tiles on the first "
          f"axis ({first}): each space device holds whole tiles.")
  return mesh


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
      (an unknown mode or dtype, a bad count, a missing or unknown field, a
      model whose tiles do not divide the grid, an unknown potential family
      or range, ...).
    InsufficientMemoryError: the run cannot fit on its devices (the
      estimate is named by part).
  """
  setup = resolve_model(config)
  seed = _value(config.seed, "int", "seed")
  loss = _section(LossConfig, config, "loss")
  _check_loss(loss)
  data = _section(DataConfig, config, "data",
                  stream_kwargs=potentials.freeze(stream_ranges(config)))
  train = _section(TrainConfig, config, "train")
  optim = _section(OptimConfig, config, "optim")
  _check_training(train, optim, data, loss)
  mesh = resolve_mesh(config)
  stream = None
  if loss.mode != "supervised":
    try:
      stream = potentials.make_potential_stream(
          data.family, setup.grid, loss.unlabelled_batch_size,
          dtype=setup.dtype, **data.stream_kwargs)
    except (TypeError, ValueError) as e:
      if data.family in potentials.COMPOSITE_FAMILIES:
        section = "data.mixture"
      else:
        section = f"data.ranges={_plain(config.data.get('ranges', None))}"
      raise ValueError(f"data.family={data.family!r} with {section}: "
                       f"{e}") from None
  memory = memory_estimate(setup, train, loss, mesh)
  _check_memory(memory, config.model.name, setup.grid,
                _largest_batch(train, loss))
  schedule = make_schedule(optim, train.num_steps)
  return Run(config, seed, setup.grid, setup.dtype, setup.model, data, loss,
             optim, train, mesh, schedule, make_optimizer(optim, schedule),
             loss.mode != "label_free", stream, memory)


def activations_per_sample(model: nn.Module) -> int:
  """Values per sample of the network's own activations (features and
  hidden layers; the grid-sized arrays are counted separately), as the
  model says (its ``activations_per_sample()``, which asks its parts)."""
  return int(model.activations_per_sample())


def _largest_batch(train: TrainConfig, loss: LossConfig) -> int:
  """The largest batch a step or an evaluation holds (global)."""
  return max(train.batch_size, loss.unlabelled_batch_size,
             train.eval_batch_size)


def memory_estimate(setup, train: TrainConfig, loss: LossConfig,
                    mesh: MeshConfig) -> dict[str, float]:
  """Bytes per device of one training step, by part
  (:func:`pgmoe_jax.memory.training_estimate`), on ``mesh`` with the
  devices present; ``setup`` is a
  :class:`~pgmoe_jax.models.resolve.ModelSetup` or a :class:`Run`
  (its model, grid and dtype)."""
  num_params = count_params(param_shapes(setup))
  data = mesh.data
  if data == -1:
    data = max(1, jax.device_count() // mesh.space)
  return training_estimate(
      num_params, np.dtype(setup.dtype).itemsize, _largest_batch(train, loss),
      setup.grid.size, activations_per_sample(setup.model),
      batch_devices=data, space_devices=mesh.space)


def _check_memory(parts: dict[str, float], model_name: str, grid: Grid,
                  batch: int) -> None:
  """Refuses a run that cannot fit on its devices (a coarse estimate)."""
  try:
    check_fits(sum(parts.values()),
               f"training {model_name} on {grid} with batches "
               f"of {batch}, per device", "use smaller batches (train."
               "batch_size, loss.unlabelled_batch_size, train."
               "eval_batch_size), more devices (mesh.data splits the batch, "
               "mesh.space each grid) or a smaller grid")
  except InsufficientMemoryError as e:
    raise InsufficientMemoryError(
        f"{e} Estimate per device: {describe(parts)}.") from None
