"""A single run: ``train_and_evaluate(config, workdir)``.

It resolves and checks the whole config first (nothing is written before),
opens the datasets, writes ``config.json``, restores the latest checkpoint
if there is one (resume is the default) and trains data-parallel over the
devices of every process (the mesh of ``config.mesh``) in the one loop
(:func:`pgmoe_jax.training.driver.run_loop`): it logs to ``metrics.jsonl``
(and TensorBoard when available, :mod:`pgmoe_jax.training.summaries`),
evaluates on ``data.val`` with the one scorer
(:mod:`pgmoe_jax.evaluation.scorer`), checkpoints
(:mod:`pgmoe_jax.rundir.checkpoint`, layout there) and returns the final
state. The datasets, batches and restore here serve populations too
(:mod:`pgmoe_jax.training.population`).

Reproducibility: the initial parameters come from ``key(seed)`` split into
``(init_key, step_key)``; step ``s`` (the update that takes ``state.step``
from ``s`` to ``s + 1``) uses the key ``fold_in(step_key, s)`` and batch
``s % steps_per_epoch`` of epoch ``s // steps_per_epoch`` of
``Dataset.batches(seed=seed, epoch=...)``. Everything is a function of the
step, so a run resumed from a checkpoint continues the same stream exactly.
A training set under :data:`RESIDENT_BYTES` (single process) is copied to
the device once and each step gathers the same rows there by index
(:func:`resident_training_set`), instead of reading and transferring them.

The module does no I/O at import and prints nothing: it logs with absl and
reports progress through an optional callback.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Callable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import jax.numpy as jnp
import ml_collections
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import data as data_lib
from pgmoe_jax import locks
from pgmoe_jax import models
from pgmoe_jax import paths
from pgmoe_jax.evaluation import scorer
from pgmoe_jax.grid import Grid
from pgmoe_jax.grid import check_same_grid
from pgmoe_jax.memory import describe
from pgmoe_jax.rundir import checkpoint
from pgmoe_jax.rundir import workdir as workdir_lib
from pgmoe_jax.sharding import BATCH_AXIS
from pgmoe_jax.sharding import SPACE_AXIS
from pgmoe_jax.sharding import spatial_spec
from pgmoe_jax.training import config as config_lib
from pgmoe_jax.training import driver
from pgmoe_jax.training import losses
from pgmoe_jax.training.driver import Progress
from pgmoe_jax.training.step import TrainState
from pgmoe_jax.training.step import create_train_state
from pgmoe_jax.training.step import make_train_step
from pgmoe_jax.training.summaries import MetricsLog


def make_mesh(devices=None, data: int = -1, space: int = 1) -> Mesh:
  """A ``("batch", "space")`` mesh over ``devices`` (default: all).

  ``space`` devices split each grid along its first axis, ``data`` (-1: all
  the others) split the batch; devices stay in order, so each process's
  devices are contiguous along the batch axis.

  Raises:
    ValueError: the device count is not ``data x space``.
  """
  devices = jax.devices() if devices is None else list(devices)
  if len(devices) % space or (data != -1 and data * space != len(devices)):
    raise ValueError(
        f"mesh.data={data} x mesh.space={space} does not fit the "
        f"{len(devices)} device(s); use mesh.data=-1 and a mesh.space that "
        f"divides {len(devices)}.")
  return Mesh(np.asarray(devices).reshape(-1, space),
              (BATCH_AXIS, SPACE_AXIS))


def _open(path: str, grid: Grid, what: str) -> data_lib.Dataset:
  ds = data_lib.open_dataset(path)
  check_same_grid(
      grid, ds.grid, expected_what="the config's grid",
      got_what=f"{what}={path!r}",
      fix=("Set --config.grid.shape / --config.grid.length to the data's "
           "grid, or generate data on the config's grid."))
  return ds


def open_datasets(run: config_lib.Run, num_devices: int):
  """``(train, val)`` datasets (``None`` where unused), checked."""
  data, train = run.data, run.train
  for name, used in (("batch_size", run.uses_labels),
                     ("eval_batch_size", bool(data.val))):
    if used and getattr(train, name) % num_devices:
      raise ValueError(f"train.{name}={getattr(train, name)} must be "
                       f"divisible by the number of devices ({num_devices}).")
  train_ds = val_ds = None
  if run.uses_labels:
    train_ds = _open(data.train, run.grid, "data.train")
    try:
      train_ds = train_ds.head(data.num_train)
    except ValueError:
      raise ValueError(f"data.num_train={data.num_train} but "
                       f"{train_ds.path} holds only {len(train_ds)} "
                       "samples.") from None
  if data.val:
    val_ds = _open(data.val, run.grid, "data.val")
  return train_ds, val_ds


def _from_step(ds: data_lib.Dataset, batch_size: int, start_step: int,
               epoch_stream: Callable[[int], Iterator]) -> Iterator:
  """The items of ``epoch_stream(epoch)``, endless, from ``start_step`` on
  (one item per step, ``len(ds) // batch_size`` per epoch)."""
  steps_per_epoch = len(ds) // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"train.batch_size={batch_size} exceeds the "
                     f"{len(ds)} training samples of {ds.path}.")
  epoch, skip = divmod(start_step, steps_per_epoch)
  for e in itertools.count(epoch):
    stream = epoch_stream(e)
    if e == epoch and skip:
      stream = itertools.islice(stream, skip, None)
    yield from stream


def train_batches(ds: data_lib.Dataset, batch_size: int, seed: int,
                  start_step: int, dtype, sharding) -> Iterator[dict]:
  """The batches of steps ``start_step, start_step + 1, ...`` (endless)."""
  return _from_step(ds, batch_size, start_step, lambda e: ds.batches(
      batch_size, seed=seed, epoch=e, dtype=dtype, sharding=sharding))


# A training set this small (after the dtype cast) is copied to the devices
# once and each step gathers its batch there: no per-step host indexing and
# transfer.
RESIDENT_BYTES = 256 * 2**20


def resident_training_set(ds: data_lib.Dataset, dtype, sharding):
  """The training set as device arrays, or ``None`` (too big, or several
  processes: each then reads only its own rows, :func:`train_batches`)."""
  if jax.process_count() > 1:
    return None
  fields = {"potential": ds.potentials, "psi0": ds.psi0, "E0": ds.E0,
            "index": ds.index}
  if ds.E1 is not None:
    fields["E1"] = ds.E1
  size = len(ds) * sum(
      np.dtype(dtype).itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
      for a in fields.values())
  if size > RESIDENT_BYTES:
    return None
  rows = {k: (a[:] if k == "index" else a[:].astype(dtype))
          for k, a in fields.items()}
  return jax.device_put(rows, sharding)


def resident_batch_indices(ds: data_lib.Dataset, batch_size: int, seed: int,
                           start_step: int) -> Iterator[np.ndarray]:
  """The indices of :func:`train_batches`' batches, in the same order."""
  return _from_step(ds, batch_size, start_step, lambda e: (
      idx for idx, _ in ds.batch_indices(batch_size, seed=seed, epoch=e)))


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
    The final :class:`~pgmoe_jax.training.step.TrainState` (replicated over
    the devices).

  Raises:
    ValueError: an invalid config (nothing is written then), a workdir of
      another model, datasets on another grid, or batch sizes not divisible
      by the device count.
    FloatingPointError: a non-finite loss or gradient; the message names the
      step, and the checkpoints saved before it are kept.
    pgmoe_jax.training.preemption.Preempted: a SIGTERM (to any process)
      stopped training after saving a checkpoint at the next step.
  """
  run = config_lib.resolve(config)
  space_devices = run.mesh.space
  mesh = make_mesh(data=run.mesh.data, space=space_devices)
  train_ds, val_ds = open_datasets(run, mesh.shape[BATCH_AXIS])
  # Everything is checked: from here on the workdir is written, by this
  # run alone (process 0 holds the lock and writes the files).
  primary = jax.process_index() == 0
  if primary:
    workdir = checks.prepare_output_dir(workdir, "workdir")
  workdir = os.fspath(paths.resolve(workdir))
  # flock needs a local filesystem; an object store has no lock to take.
  with (locks.exclusive(workdir, "workdir")
        if primary and not paths.is_remote(workdir)
        else contextlib.nullcontext()):
    _sync("pgmoe_jax: workdir ready")
    # A spatially sharded mesh is the ambient one while the steps are
    # traced: the model's kernels lay out their fields on it
    # (pgmoe_jax.sharding).
    with (jax.set_mesh(mesh) if space_devices > 1
          else contextlib.nullcontext()):
      return _train(run, workdir, mesh, train_ds, val_ds, progress)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the run's ``config.json`` (and its seal), logging what changed
  when a run continues with an edited config."""
  changed = workdir_lib.save_config(config, workdir)
  if changed:
    logging.info("Continuing %s with a changed config: %s", workdir,
                 "; ".join(changed))


def make_apply_fn(model):
  """``apply_fn(params, V) -> psi`` of a flax model."""
  def apply_fn(params, v):
    return model.apply({"params": params}, v)
  return apply_fn


def _sync(name: str) -> None:
  """A barrier across processes (nothing to wait for in a single one)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def validation(score_fn, val_ds: data_lib.Dataset | None,
               run: config_lib.Run, sharding=None):
  """``evaluate(params) -> metrics`` on ``val_ds`` with the one scorer
  (``score_fn(params, batch)``, jitted), or ``None`` without ``val_ds``."""
  if val_ds is None:
    return None

  def evaluate(params):
    return scorer.summarize(scorer.score_dataset(
        lambda batch: score_fn(params, batch), val_ds,
        batch_size=run.train.eval_batch_size, dtype=np.dtype(run.dtype),
        sharding=sharding))

  return evaluate


def _train(run: config_lib.Run, workdir: str, mesh: Mesh, train_ds, val_ds,
           progress: Progress | None) -> TrainState:
  """:func:`train_and_evaluate` in a checked, locked workdir."""
  dtype, grid, model, train = run.dtype, run.grid, run.model, run.train
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))

  if jax.process_index() == 0:
    save_config(run.config, workdir)
  apply_fn = make_apply_fn(model)
  # Streamed potentials are drawn where they are used: split along the
  # batch, and along the first grid axis on a spatially sharded mesh.
  stream_sharding = (NamedSharding(mesh, spatial_spec(1 + grid.ndim,
                                                      grid.ndim))
                     if mesh.shape[SPACE_AXIS] > 1 else batch_sharding)
  train_step = make_train_step(
      losses.make_loss_fn(run, apply_fn, stream_sharding),
      run.optimizer, run.schedule)
  init_key, step_key = jax.random.split(jax.random.key(run.seed))
  state = create_train_state(init_key, model, run.optimizer,
                             np.zeros((1,) + grid.shape, dtype),
                             sharding=replicated)
  logging.info("Model %s on %s: %d parameters; %d device(s) (mesh %s): %s; "
               "memory per device, estimated: %s", run.config.model.name, grid,
               models.count_params(state.params), mesh.size,
               dict(mesh.shape), jax.devices(),
               describe(run.memory))

  with driver.closing() as closers:
    ckpts = checkpoint.Checkpoints(
        checkpoint.checkpoint_dir(workdir),
        keep=train.keep_checkpoints,
        best_metric=train.best_metric if val_ds is not None else None)
    closers.append(ckpts.close)
    state, start = restore_or_keep(ckpts, state, workdir)
    log = MetricsLog(workdir, start, advice=ckpts.resume_advice)
    closers.append(log.close)
    if start >= train.num_steps:  # nothing to build or copy
      logging.info("Nothing to do: step %d >= train.num_steps=%d.", start,
                   train.num_steps)
      return state
    np_dtype = np.dtype(dtype)
    resident = (resident_training_set(train_ds, np_dtype, replicated)
                if run.uses_labels else None)

    def keyed_step(state, batch, key, rows):
      if rows is not None:  # batch: the indices of the batch's rows
        batch = jax.lax.with_sharding_constraint(
            {k: v[batch] for k, v in rows.items()}, batch_sharding)
      return train_step(state, batch, jax.random.fold_in(key, state.step))

    step_fn = jax.jit(keyed_step, donate_argnums=0,
                      out_shardings=(replicated, replicated))
    if resident is not None:
      batches = resident_batch_indices(train_ds, train.batch_size, run.seed,
                                       start)
    elif run.uses_labels:
      batches = train_batches(train_ds, train.batch_size, run.seed, start,
                              np_dtype, batch_sharding)
    else:
      batches = itertools.repeat({})
    # Scores come back replicated: every process reads whole metrics.
    score_fn = jax.jit(scorer.make_score_batch(apply_fn, grid),
                       out_shardings=replicated)
    outputs = driver.RunOutputs(
        log, ckpts, validation(score_fn, val_ds, run, batch_sharding),
        num_steps=train.num_steps)
    state = driver.run_loop(
        state, lambda state, batch: step_fn(state, batch, step_key,
                                            resident), batches,
        outputs, train, start=start, evaluate=val_ds is not None,
        progress=progress)
    logging.info("Finished at step %d; checkpoints %s in %s",
                 train.num_steps, ckpts.steps(), ckpts.directory)
    return state


def restore_or_keep(ckpts: checkpoint.Checkpoints, state: TrainState,
                    workdir: str) -> tuple[TrainState, int]:
  """The newest intact checkpoint restored onto ``state``'s placement, or
  ``state`` itself if there is none; and the step.

  Damaged newer steps are moved to ``<workdir>/damaged_checkpoints`` (with
  a warning), so training continues from the newest intact step and can
  save those steps again.
  """
  if ckpts.latest_step() is None:
    return state, 0
  start, params, opt_state, damaged = ckpts.restore_intact(state.params,
                                                           state.opt_state)
  if damaged:
    if jax.process_index() == 0:
      for step, reason in damaged:
        target = ckpts.set_aside(step, workdir)
        logging.warning("Checkpoint step %d was damaged (%s); moved it to %s "
                        "and resumed from step %d.", step, reason, target,
                        start)
    _sync("pgmoe_jax: damaged checkpoints set aside")
    ckpts.reload()
  # A global (replicated) scalar, made in place on every process.
  step = jax.jit(lambda s: jnp.full_like(s, start),
                 out_shardings=state.step.sharding)(state.step)
  logging.info("Resumed from checkpoint step %d in %s", start,
               ckpts.directory)
  return state.replace(step=step, params=params, opt_state=opt_state), start
