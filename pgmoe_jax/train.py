"""Training: optimiser, train state, the train step and the training loop.

Contract:

* :func:`make_optimizer` builds ``clip_by_global_norm -> adamw`` with a
  warmup-cosine learning-rate schedule (:func:`make_schedule`) from the
  ``optim`` section; :func:`create_train_state` initialises a
  :class:`TrainState`; :func:`make_train_step` returns the pure, undecorated
  ``train_step(state, batch, key) -> (state, metrics)`` that callers jit.
* :func:`train_and_evaluate` runs a whole experiment in a workdir (layout in
  :mod:`pgmoe_jax.checkpoint`): writes ``config.json``, restores the latest
  checkpoint if there is one (resume is the default), trains data-parallel
  over all devices of this (single) host, logs to ``metrics.jsonl``,
  evaluates on ``data.val``, checkpoints, and returns the final state.

Reproducibility: the initial parameters come from ``key(seed)`` split into
``(init_key, step_key)``; step ``s`` (the update that takes ``state.step``
from ``s`` to ``s + 1``) uses the key ``fold_in(step_key, s)`` and batch
``s % steps_per_epoch`` of epoch ``s // steps_per_epoch`` of
``Dataset.batches(seed=seed, epoch=...)``. Everything is a function of the
step, so a run resumed from a checkpoint continues the same stream exactly.

Non-finite guard: a step whose loss or gradient norm is not finite applies
no update and records its step in ``TrainState.nonfinite_step``; once set,
every later step leaves the state as it is (the last good parameters). The
loop checks it at every log, evaluation and checkpoint step (one scalar read,
so the step pipeline is not synchronised every step) and raises
:class:`FloatingPointError` naming the step; the bad state is never saved.

The module does no I/O at import and prints nothing: it logs with absl and
reports progress through an optional callback.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any, Callable, Iterator, Mapping

from absl import logging
import flax.struct
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pgmoe_jax import checkpoint
from pgmoe_jax import data as data_lib
from pgmoe_jax import losses
from pgmoe_jax import models
from pgmoe_jax.grid import Grid

DTYPES = ("float32", "float64")
EVAL_STATS = ("mean", "median", "p90")
BATCH_AXIS = "batch"

PyTree = Any
LossFn = Callable[[PyTree, Mapping[str, jax.Array], jax.Array, jax.Array],
                  tuple[jax.Array, Mapping[str, jax.Array]]]
TrainStep = Callable[["TrainState", Mapping[str, jax.Array], jax.Array],
                     tuple["TrainState", dict[str, jax.Array]]]
Progress = Callable[[int, int], None]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: int32 scalar, the number of updates applied to ``params``.
    params: the model parameters.
    opt_state: the optimiser state.
    nonfinite_step: int32 scalar, the first step whose loss or gradients
      were not finite, or -1 while all were (see the module docstring).
  """
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  nonfinite_step: jax.Array


# --------------------------------------------------------------------------
# Config helpers.


def grid_from_config(config: ml_collections.ConfigDict) -> Grid:
  """The :class:`Grid` of ``config.grid``."""
  g = config.grid
  return Grid(tuple(g.shape), g.length, g.boundary)


def config_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """The training dtype; float64 requires ``jax_enable_x64``.

  Raises:
    ValueError: an unknown dtype, or float64 without x64.
  """
  if config.dtype not in DTYPES:
    raise ValueError(f"Unknown dtype {config.dtype!r}; use one of "
                     f"{', '.join(DTYPES)}.")
  if config.dtype == "float64" and not jax.config.jax_enable_x64:
    raise ValueError("dtype='float64' needs float64 support in JAX: pass "
                     "--jax_enable_x64 (or call jax.config.update("
                     "'jax_enable_x64', True)).")
  return jnp.dtype(config.dtype)


def _positive_int(value, name: str, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < minimum):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Validates a config before anything is built or written.

  Raises:
    ValueError: naming the offending field, its value and what is allowed.
  """
  config_dtype(config)
  grid_from_config(config)
  losses.check_config(config)
  train, optim, data = config.train, config.optim, config.data
  for name in ("num_steps", "batch_size", "log_every_steps",
               "eval_every_steps", "checkpoint_every_steps",
               "keep_checkpoints", "eval_batch_size"):
    _positive_int(train[name], f"train.{name}")
  if data.num_train != -1:
    _positive_int(data.num_train, "data.num_train (or -1 for all)")
  if losses.needs_labels(config) and not data.train:
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
  metrics = [f"val/{m}_{s}" for m in ("infidelity", "energy_error_mha",
                                      "residual") for s in EVAL_STATS]
  if data.val and train.best_metric not in metrics:
    raise ValueError(f"Unknown train.best_metric {train.best_metric!r}; "
                     f"known: {', '.join(metrics)}.")


# --------------------------------------------------------------------------
# Optimiser, state, step.


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to ``optim.learning_rate``, cosine decay to the end."""
  optim = config.optim
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.learning_rate,
      warmup_steps=optim.warmup_steps, decay_steps=config.train.num_steps,
      end_value=optim.learning_rate * optim.end_learning_rate_factor)


def make_optimizer(
    config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """``clip_by_global_norm(grad_clip)`` then AdamW on :func:`make_schedule`.

  ``grad_clip = 0`` clips at infinity rather than dropping the transform, so
  the optimiser state has the same structure either way and a run can be
  resumed with the other setting.
  """
  optim = config.optim
  clip = optim.grad_clip if optim.grad_clip > 0 else float("inf")
  return optax.chain(
      optax.clip_by_global_norm(clip),
      optax.adamw(make_schedule(config), weight_decay=optim.weight_decay))


def create_train_state(key: jax.Array, config: ml_collections.ConfigDict,
                       model, example_v: jax.Array) -> TrainState:
  """Initialises parameters (in ``config.dtype``) and the optimiser state.

  Args:
    key: the initialisation key.
    config: the full config.
    model: the flax module (:func:`pgmoe_jax.models.build_model`).
    example_v: ``(b, *grid.shape)`` potentials fixing the input shape.

  Returns:
    A :class:`TrainState` at step 0.
  """
  dtype = config_dtype(config)
  optimizer = make_optimizer(config)

  # Jitted: op-by-op initialisation of a PG-MoE took 3x longer than
  # compiling it.
  @jax.jit
  def init(key, v):
    params = model.init(key, v)["params"]
    # Flax creates float32 parameters whatever the input; training in
    # float64 needs float64 parameters.
    params = jax.tree.map(lambda x: x.astype(dtype), params)
    return TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      nonfinite_step=jnp.asarray(-1, jnp.int32))

  return init(key, jnp.asarray(example_v, dtype))


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None) -> TrainStep:
  """Returns the pure ``train_step(state, batch, key) -> (state, metrics)``.

  Args:
    loss_fn: ``loss_fn(params, batch, key, step) -> (loss, metrics)``
      (:func:`pgmoe_jax.losses.make_loss_fn`).
    optimizer: the optax transformation the state was created with.
    schedule: the learning-rate schedule, reported as ``lr`` if given.

  Returns:
    An undecorated function: jit it at the call site (with
    ``donate_argnums=0``). Its metrics are scalars: the loss's own plus
    ``grad_norm`` (before clipping), ``lr`` and ``finite`` (1.0 or 0.0). A
    non-finite step returns the state unchanged but for
    ``nonfinite_step``; see the module docstring.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch, key):
    (loss, metrics), grads = grad_fn(state.params, batch, key, state.step)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    healthy = state.nonfinite_step < 0
    apply = finite & healthy

    def pick(new, old):
      return jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)

    new_state = TrainState(
        step=jnp.where(apply, state.step + 1, state.step),
        params=pick(params, state.params),
        opt_state=pick(opt_state, state.opt_state),
        nonfinite_step=jnp.where(healthy & ~finite, state.step,
                                 state.nonfinite_step))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   finite=finite.astype(jnp.float32))
    if schedule is not None:
      metrics["lr"] = schedule(state.step)
    return new_state, metrics

  return train_step


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis ``"batch"`` over ``devices`` (default: all)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (BATCH_AXIS,))


# --------------------------------------------------------------------------
# Data.


class _Head:
  """The first ``n`` rows of a dataset array (indexable like the original)."""

  def __init__(self, array, n: int):
    self._array = array
    self.shape = (n,) + tuple(array.shape[1:])
    self.dtype = array.dtype

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index):
    return self._array[index]


def _first_samples(ds: data_lib.Dataset, n: int) -> data_lib.Dataset:
  """The dataset restricted to its first ``n`` samples (scarce labels)."""
  if n == -1 or n == len(ds):
    return ds
  if n > len(ds):
    raise ValueError(f"data.num_train={n} but {ds.path} holds only "
                     f"{len(ds)} samples.")
  arrays = {"potential": ds.potentials, "psi0": ds.psi0, "E0": ds.E0,
            "E1": ds.E1, "residual": ds.residual, "index": ds.index}
  return data_lib.Dataset(ds.path, ds.meta, {
      k: _Head(v, n) for k, v in arrays.items() if v is not None})


def _open(path: str, grid: Grid, what: str) -> data_lib.Dataset:
  ds = data_lib.open_dataset(path)
  if ds.grid != grid:
    raise ValueError(
        f"{what}={path!r} is on {ds.grid}, but the config's grid is {grid}. "
        "Set --config.grid.shape / --config.grid.length to the data's grid, "
        "or generate data on the config's grid.")
  return ds


def _train_batches(ds: data_lib.Dataset, batch_size: int, seed: int,
                   start_step: int, dtype, sharding) -> Iterator[dict]:
  """The batches of steps ``start_step, start_step + 1, ...`` (endless)."""
  steps_per_epoch = len(ds) // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"train.batch_size={batch_size} exceeds the "
                     f"{len(ds)} training samples of {ds.path}.")
  epoch, skip = divmod(start_step, steps_per_epoch)
  for e in itertools.count(epoch):
    stream = ds.batches(batch_size, seed=seed, epoch=e, dtype=dtype,
                        sharding=sharding)
    if e == epoch and skip:
      stream = itertools.islice(stream, skip, None)
    yield from stream


# --------------------------------------------------------------------------
# Evaluation.


def make_eval_step(apply_fn, grid: Grid):
  """``eval_step(params, batch) -> per-sample metrics`` (pure; jit it)."""
  def eval_step(params, batch):
    return losses.eval_metrics(apply_fn(params, batch["potential"]), batch,
                               grid)
  return eval_step


def evaluate(eval_step, params: PyTree, ds: data_lib.Dataset,
             batch_size: int, dtype, sharding=None) -> dict[str, float]:
  """Summaries of the per-sample metrics over a whole dataset.

  The last batch is padded with copies of its last sample (and the copies
  dropped), so every call has the same shape and compiles once.

  Returns:
    ``<metric>_<mean|median|p90>`` for each metric of
    :func:`pgmoe_jax.losses.eval_metrics`, and ``num_samples``.
  """
  n = len(ds)
  values: dict[str, list[np.ndarray]] = {}
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)
    batch = {"potential": ds.potentials[idx].astype(dtype),
             "psi0": ds.psi0[idx].astype(dtype),
             "E0": ds.E0[idx].astype(dtype)}
    out = jax.device_get(eval_step(params, jax.device_put(batch, sharding)))
    for k, v in out.items():
      values.setdefault(k, []).append(np.asarray(v)[:stop - start])
  summary: dict[str, float] = {"num_samples": n}
  for k, parts in values.items():
    v = np.concatenate(parts).astype(np.float64)
    summary[f"{k}_mean"] = float(np.mean(v))
    summary[f"{k}_median"] = float(np.median(v))
    summary[f"{k}_p90"] = float(np.percentile(v, 90))
  return summary


# --------------------------------------------------------------------------
# Metrics file.


def _truncate_metrics(path: str, last_step: int) -> None:
  """Drops records after ``last_step`` (a killed run's lines past its last
  checkpoint), so a resumed run's file reads as one run."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= last_step:
        keep.append(line if line.endswith("\n") else line + "\n")
    except (json.JSONDecodeError, KeyError, TypeError):
      pass  # a partial last line of a killed run
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
  os.replace(tmp, path)


def _append_metrics(path: str, record: Mapping[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def _format(metrics: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in metrics.items())


# --------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       progress: Progress | None = None) -> TrainState:
  """Trains (or resumes training) a model in ``workdir``.

  Args:
    config: the full config (``experiments/configs/default.py`` documents
      every field).
    workdir: the run directory; created if missing. If it already holds a
      run of the same model (same ``model``, ``grid`` and ``dtype``), the
      latest checkpoint is restored and training continues to
      ``train.num_steps``.
    progress: called as ``progress(step, num_steps)`` after every step
      (e.g. a progress bar).

  Returns:
    The final :class:`TrainState` (replicated over the devices).

  Raises:
    ValueError: an invalid config, a workdir of another model, datasets on
      another grid, or batch sizes not divisible by the device count.
    FloatingPointError: a non-finite loss or gradient; the message names the
      step, and the checkpoints saved before it are kept.
  """
  check_config(config)
  dtype = config_dtype(config)
  grid = grid_from_config(config)
  workdir = os.path.abspath(workdir)
  num_steps = config.train.num_steps
  use_labels = losses.needs_labels(config)

  mesh = make_mesh()
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
  train_ds, val_ds = _open_datasets(config, grid, mesh.size)

  if jax.process_index() == 0:
    changed = checkpoint.save_config(config, workdir)
    if changed:
      logging.info("Continuing %s with a changed config: %s", workdir,
                   "; ".join(changed))

  model = models.build_model(config.model, grid)

  def apply_fn(params, v):
    return model.apply({"params": params}, v)

  schedule = make_schedule(config)
  optimizer = make_optimizer(config)
  train_step = make_train_step(losses.make_loss_fn(config, grid, apply_fn),
                               optimizer, schedule)
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(init_key, config, model,
                             jnp.zeros((1,) + grid.shape, dtype))
  logging.info("Model %s on %s: %d parameters; %d device(s): %s",
               config.model.name, grid, models.count_params(state.params),
               mesh.size, jax.devices())

  ckpts = checkpoint.Checkpoints(
      checkpoint.checkpoint_dir(workdir),
      keep=config.train.keep_checkpoints,
      best_metric=config.train.best_metric if val_ds is not None else None)
  try:
    state, start = _restore_or_keep(ckpts, jax.device_put(state, replicated))
    metrics_path = os.path.join(workdir, checkpoint.METRICS_FILE)
    if jax.process_index() == 0:
      _truncate_metrics(metrics_path, start)
    if start >= num_steps:
      logging.info("Nothing to do: step %d >= train.num_steps=%d.", start,
                   num_steps)
      return state

    def keyed_step(state, batch, key):
      return train_step(state, batch, jax.random.fold_in(key, state.step))

    step_fn = jax.jit(keyed_step, donate_argnums=0,
                      out_shardings=(replicated, replicated))
    eval_fn = jax.jit(make_eval_step(apply_fn, grid))
    np_dtype = np.dtype(config.dtype)
    batches = (_train_batches(train_ds, config.train.batch_size, config.seed,
                              start, np_dtype, batch_sharding)
               if use_labels else itertools.repeat({}))

    pending: list[dict] = []
    clock = time.perf_counter()
    last_log = start
    other_seconds = 0.0  # evaluation and saving, not counted as training
    for step in range(start, num_steps):
      state, metrics = step_fn(state, next(batches), step_key)
      pending.append(metrics)
      done = step + 1
      is_last = done == num_steps
      is_log = done % config.train.log_every_steps == 0 or is_last
      is_ckpt = done % config.train.checkpoint_every_steps == 0 or is_last
      is_eval = val_ds is not None and (
          done % config.train.eval_every_steps == 0 or is_ckpt)
      if is_log or is_ckpt or is_eval:
        _check_finite(state, pending, done, ckpts)
      if is_log:
        now = time.perf_counter()
        record = _summarise(pending, (done - last_log) / max(
            now - clock - other_seconds, 1e-9))
        _append_metrics(metrics_path, {"step": done, "split": "train",
                                       **record})
        logging.info("step %d/%d train: %s", done, num_steps,
                     _format(record))
        pending, clock, last_log, other_seconds = [], now, done, 0.0
      val = None
      tic = time.perf_counter()
      if is_eval:
        val = evaluate(eval_fn, state.params, val_ds,
                       config.train.eval_batch_size, np_dtype,
                       batch_sharding)
        _append_metrics(metrics_path, {"step": done, "split": "val", **val})
        logging.info("step %d/%d val: %s", done, num_steps, _format(val))
      if is_ckpt:
        ckpts.save(done, state.params, state.opt_state,
                   None if val is None else {
                       f"val/{k}": v for k, v in val.items()})
      other_seconds += time.perf_counter() - tic
      if progress is not None:
        progress(done, num_steps)
    ckpts.wait()
    logging.info("Finished at step %d; checkpoints %s in %s", num_steps,
                 ckpts.steps(), ckpts.directory)
    return state
  finally:
    ckpts.close()


def _open_datasets(config: ml_collections.ConfigDict, grid: Grid,
                   num_devices: int):
  """``(train, val)`` datasets (``None`` where unused), checked."""
  use_labels = losses.needs_labels(config)
  for name, used in (("batch_size", use_labels),
                     ("eval_batch_size", bool(config.data.val))):
    if used and config.train[name] % num_devices:
      raise ValueError(f"train.{name}={config.train[name]} must be divisible "
                       f"by the number of devices ({num_devices}).")
  train_ds = val_ds = None
  if use_labels:
    train_ds = _first_samples(_open(config.data.train, grid, "data.train"),
                              config.data.num_train)
  if config.data.val:
    val_ds = _open(config.data.val, grid, "data.val")
  return train_ds, val_ds


def _restore_or_keep(ckpts: checkpoint.Checkpoints,
                     state: TrainState) -> tuple[TrainState, int]:
  """The latest checkpoint restored onto ``state``'s placement, or
  ``state`` itself if there is none; and the step."""
  start = ckpts.latest_step()
  if start is None:
    return state, 0
  _, params, opt_state = ckpts.restore_latest(state.params, state.opt_state)
  step = jax.device_put(jnp.asarray(start, jnp.int32), state.step.sharding)
  logging.info("Resumed from checkpoint step %d in %s", start,
               ckpts.directory)
  return state.replace(step=step, params=params, opt_state=opt_state), start


def _summarise(pending: list[dict], steps_per_sec: float) -> dict[str, float]:
  """Means of the steps' metrics since the last log; ``lr`` of the last."""
  values = jax.device_get(pending)
  record = {k: float(np.mean([m[k] for m in values]))
            for k in values[0] if k != "finite"}
  record["lr"] = float(values[-1]["lr"])
  record["steps_per_sec"] = steps_per_sec
  return record


def _check_finite(state: TrainState, pending: list[dict], done: int,
                  ckpts: checkpoint.Checkpoints) -> None:
  """Raises FloatingPointError if a step since the last check was bad."""
  bad = int(jax.device_get(state.nonfinite_step))
  if bad < 0:
    return
  first = done - len(pending)
  loss = (float(jax.device_get(pending[bad - first]["loss"]))
          if 0 <= bad - first < len(pending) else float("nan"))
  ckpts.wait()
  last_good = ckpts.latest_step()
  kept = (f"the last good checkpoint is step {last_good} in "
          f"{ckpts.directory}" if last_good is not None else
          "no checkpoint had been saved yet")
  raise FloatingPointError(
      f"Non-finite loss or gradients at step {bad} (loss {loss}); training "
      f"stopped and that state was not saved; {kept}. Try a lower "
      "optim.learning_rate or optim.grad_clip, or check the data.")
