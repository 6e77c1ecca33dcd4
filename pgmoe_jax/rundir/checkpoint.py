"""A training run's checkpoints (orbax, no pickle), with checksums.

Layout of a workdir (:func:`pgmoe_jax.training.train_and_evaluate` writes
it, :func:`pgmoe_jax.load_model` and the evaluation read it)::

    <workdir>/config.json              the resolved config (JSON, tuples as
                                       lists); fixes the model and the grid
                                       (:mod:`pgmoe_jax.rundir.workdir`)
    <workdir>/metrics.jsonl            one JSON object per log line
    <workdir>/tensorboard/<split>/     the same as TensorBoard events
                                       (when tensorboardX is installed)
    <workdir>/checkpoints/<step>/      one orbax checkpoint per saved step:
        params/                        the model parameters (a pytree)
        opt_state/                     the optimiser state
        metrics/                       the validation metrics of that step
                                       (when the run has a validation set)
        checksums/                     SHA-256 of every array shard of
                                       params and opt_state, written with
                                       them and verified on restore
    <workdir>/config.sha256            seals config.json (an edit is named)
    <workdir>/.lock                    who is (or last was) training here

``step`` is the number of optimiser updates applied. :class:`Checkpoints`
keeps the ``keep`` latest steps plus the best one by a validation metric
(lower is better), through orbax's preservation policies; which step is best
is read from the metrics stored with each checkpoint, so it survives
restarts. Integrity: :meth:`Checkpoints.save` refuses non-finite arrays and
writes their checksums; :meth:`Checkpoints.restore` verifies them (a
damaged checkpoint raises :class:`CheckpointDamagedError` naming the step
and the array, or the metadata file cut short) and
:meth:`Checkpoints.restore_intact` falls back to the newest intact step.
Checkpoints written before checksums existed restore unverified. Saves are
asynchronous: :meth:`Checkpoints.wait` (or :meth:`Checkpoints.close`) blocks
until they are on disk, and a save in progress when the process dies is
never mistaken for a complete checkpoint (orbax writes to a temporary
directory and renames it). A save that fails for want of space (or another
OS error, however orbax wraps it, whichever call it surfaces at) raises one
:class:`~pgmoe_jax.checks.OutputError` naming the folder, its filesystem and
the last intact step; orbax's own error logs of it, tracebacks from its
save threads, are dropped.

Nothing here runs at import.
"""

from __future__ import annotations

import contextlib
import gc
import logging as py_logging
import math
import os
import sys
import threading
import time
import warnings
from typing import Any, Mapping

from absl import logging
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from pgmoe_jax import checks
from pgmoe_jax import paths
from pgmoe_jax.rundir.integrity import CheckpointDamagedError
from pgmoe_jax.rundir.integrity import all_finite
from pgmoe_jax.rundir.integrity import check_json_files
from pgmoe_jax.rundir.integrity import discard_failed_reads
from pgmoe_jax.rundir.integrity import is_read_error
from pgmoe_jax.rundir.integrity import short_error
from pgmoe_jax.rundir.integrity import tree_checksums
from pgmoe_jax.rundir.integrity import verify
from pgmoe_jax.rundir.workdir import checkpoint_dir  # noqa: F401

DAMAGED_DIR = "damaged_checkpoints"

PyTree = Any


def _metric_value(metrics: Mapping[str, Any] | None, name: str) -> float:
  """The ranking value of a checkpoint: lower is better, NaN/missing worst."""
  value = (metrics or {}).get(name)
  if value is None:
    return math.inf
  value = float(value)
  return value if math.isfinite(value) else math.inf


class _SaveFailureEchoes:
  """Keeps the echoes of a failed save off stderr (it is reported once).

  A save that fails with an OS error (a full disk) reaches the caller as
  one :class:`~pgmoe_jax.checks.OutputError`. Around it, orbax logs the
  failure with a traceback from each of its save threads; and the writes it
  abandoned go on failing in the background: TensorStore completes them
  into event loops orbax has closed ("Event loop is closed", unraisable),
  asyncio reports their futures as never retrieved when they are
  collected, and Python warns at exit of coroutines never awaited.

  While a :class:`Checkpoints` is open (:meth:`acquire`, :meth:`release`),
  orbax's error logs and unraisable exceptions that carry an OS error, and
  TensorStore's "Event loop is closed", are dropped. Once a save has failed
  (:meth:`failed`), orbax's remaining save threads are waited for, and for
  the rest of the process asyncio's logs of the abandoned futures and the
  warnings of never-awaited coroutines are dropped too. Any other error
  still goes where it did.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._users = 0
    self._failed = False
    self._hook = None

  def _unraisable(self, previous):
    def hook(unraisable):
      error = unraisable.exc_value
      if (self._users or self._failed) and (
          checks.os_error(error) is not None
          or (isinstance(error, RuntimeError)
              and "Event loop is closed" in str(error))):
        return
      previous(unraisable)
    return hook

  @staticmethod
  def filter(record) -> bool:
    """False for an orbax or asyncio error log that carries an OS error."""
    if record.levelno < py_logging.ERROR or not (
        "/orbax/" in record.pathname or record.name == "asyncio"):
      return True
    error = record.exc_info[1] if record.exc_info else None
    return checks.os_error(error or Exception(record.getMessage())) is None

  def acquire(self) -> None:
    with self._lock:
      if not self._users:
        logging.get_absl_logger().addFilter(self)
      if sys.unraisablehook is not self._hook:
        # Left in place: it passes everything on while no Checkpoints is
        # open and none has failed.
        self._hook = self._unraisable(sys.unraisablehook)
        sys.unraisablehook = self._hook
      self._users += 1

  def release(self) -> None:
    with self._lock:
      self._users -= 1
      if not self._users:
        logging.get_absl_logger().removeFilter(self)

  def failed(self, timeout: float = 60.0) -> None:
    """A save failed: waits for orbax's threads, then drops the echoes."""
    with self._lock:
      if not self._failed:
        self._failed = True
        self._users += 1  # never released: orbax's threads may log later
        logging.get_absl_logger().addFilter(self)
        py_logging.getLogger("asyncio").addFilter(self)
        warnings.filterwarnings(
            "ignore", message=r"coroutine '.*' was never awaited",
            category=RuntimeWarning)
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
      target = getattr(thread, "_target", None)
      if thread is not threading.current_thread() and any(
          (getattr(x, "__module__", None) or "").startswith("orbax")
          for x in (type(thread), target)):
        thread.join(max(0.0, deadline - time.monotonic()))
    gc.collect()


_ECHOES = _SaveFailureEchoes()


@contextlib.contextmanager
def _without_read_only_notice():
  """Drops orbax's "Given directory is read only" warning (we asked)."""
  def keep(record) -> bool:
    return "Given directory is read only" not in record.getMessage()
  logger = logging.get_absl_logger()
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


class Checkpoints:
  """Saves and restores ``(params, opt_state)`` by step with orbax.

  Args:
    directory: where the step directories live (made absolute).
    keep: how many of the latest steps to keep.
    best_metric: a key of the ``metrics`` passed to :meth:`save`; the
      checkpoint with its lowest value is kept as well, whatever its age.
      ``None``: keep the latest only (and :meth:`best_step` is ``None``).
    read_only: open existing checkpoints without writing or deleting any.
  """

  def __init__(self, directory: str, *, keep: int = 3,
               best_metric: str | None = None, read_only: bool = False):
    if not isinstance(keep, int) or keep < 1:
      raise ValueError(f"keep must be a positive integer, got {keep!r}.")
    self.directory = os.fspath(paths.resolve(directory))
    self.best_metric = best_metric
    best_fn = None
    policies = [checkpoint_managers.LatestN(n=keep)]
    if best_metric:
      best_fn = lambda metrics: _metric_value(metrics, best_metric)
      # Orbax ranks with sorted(..., reverse=True) for "min" and keeps the
      # last n: the lowest value.
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=best_fn, reverse=True, n=1,
          keep_checkpoints_without_metrics=False))
    options = checkpoint_managers.CheckpointManagerOptions(
        best_fn=best_fn, best_mode="min", read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        create=not read_only,
        # A save cut short by a kill leaves a temporary directory; the step
        # is saved again on resume, so clear it first.
        cleanup_tmp_directories=not read_only,
        preservation_policy=None if read_only else (
            checkpoint_managers.AnyPreservationPolicy(policies)))
    with _without_read_only_notice():
      self._manager = checkpoint_managers.CheckpointManager(
          self.directory, item_names=("params", "opt_state", "checksums"),
          options=options)
    self._closed = False
    _ECHOES.acquire()

  def __enter__(self) -> "Checkpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def steps(self) -> list[int]:
    """The saved steps, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest saved step, or ``None`` if there is none."""
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the lowest ``best_metric``; ``None`` if none has it."""
    if not self.best_metric:
      return None
    scored = [(_metric_value(self.metrics(s), self.best_metric), s)
              for s in self.steps()]
    scored = [(v, s) for v, s in scored if math.isfinite(v)]
    # Ties go to the later step.
    return min(scored, key=lambda vs: (vs[0], -vs[1]))[1] if scored else None

  def metrics(self, step: int) -> dict[str, float] | None:
    """The metrics saved with ``step`` (``None`` if none were)."""
    metrics = self._manager.metrics(step)
    return None if metrics is None else dict(metrics)

  def save(self, step: int, params: PyTree, opt_state: PyTree,
           metrics: Mapping[str, float] | None = None) -> None:
    """Starts saving a step (asynchronously; see :meth:`wait`).

    Args:
      step: the number of updates applied to ``params``.
      params: the model parameters.
      opt_state: the optimiser state.
      metrics: validation scalars to rank checkpoints by (JSON numbers).

    Raises:
      ValueError: the step is already saved.
      FloatingPointError: a parameter or optimiser value is NaN or inf
        (nothing is saved).
      pgmoe_jax.checks.OutputError: this or the previous save failed (a
        full disk); the message names the last intact step.
    """
    if step in self._manager.all_steps():
      raise ValueError(f"Checkpoint step {step} already exists in "
                       f"{self.directory}.")
    for name, tree in (("parameters", params),
                       ("optimiser state", opt_state)):
      if not all_finite(tree):
        raise FloatingPointError(
            f"Refusing to save checkpoint step {step}: its {name} hold NaN "
            f"or inf. The checkpoints in {self.directory} are unchanged.")
    metrics = None if metrics is None else {
        k: float(v) for k, v in metrics.items()}
    sums = {"params": tree_checksums(params),
            "opt_state": tree_checksums(opt_state)}
    with self._writing():
      self._manager.save(
          int(step), args=ocp.args.Composite(
              params=ocp.args.StandardSave(params),
              opt_state=ocp.args.StandardSave(opt_state),
              checksums=ocp.args.JsonSave(sums)),
          metrics=metrics, force=True)

  @contextlib.contextmanager
  def _writing(self):
    """Reports a failed write as one OutputError (see the module doc)."""
    with checks.writing("checkpoints", self.directory, self.resume_advice):
      try:
        yield
      except Exception as e:  # pylint: disable=broad-except
        if checks.os_error(e) is not None:
          _ECHOES.failed()
        raise

  def resume_advice(self) -> str:
    """What is left and what to do after a write failed (for messages)."""
    try:
      self.reload()  # a failed save may still be listed
    except Exception:  # pylint: disable=broad-except
      pass
    step = self.latest_step()
    if step is None:
      return ("No checkpoint was saved before; free the space and rerun the "
              "same command to start again.")
    return (f"The last intact checkpoint is step {step}; free the space and "
            "rerun the same command to resume from it.")

  def restore(self, step: int, params: PyTree,
              opt_state: PyTree | None = None) -> tuple[PyTree, PyTree | None]:
    """Restores a step onto the given structures, verifying its checksums.

    Args:
      step: a saved step.
      params: a pytree of arrays or ``jax.ShapeDtypeStruct`` s (with
        shardings) giving the structure, shapes, dtypes and placement.
      opt_state: likewise for the optimiser state; ``None`` restores the
        parameters only.

    Returns:
      ``(params, opt_state)``; ``opt_state`` is ``None`` if not requested.

    Raises:
      ValueError: the step does not exist, or its arrays do not match the
        given structure (a checkpoint of another model).
      CheckpointDamagedError: its files cannot be read, or an array does
        not match the checksum written with it.
    """
    if step not in self._manager.all_steps():
      raise ValueError(f"No checkpoint step {step} in {self.directory}; "
                       f"saved steps: {self.steps()}.")
    where = paths.resolve(self.directory) / str(step)
    items = {"params": ocp.args.StandardRestore(_abstract(params))}
    if opt_state is not None:
      items["opt_state"] = ocp.args.StandardRestore(_abstract(opt_state))
    has_sums = (where / "checksums").is_dir()
    if has_sums:
      items["checksums"] = ocp.args.JsonRestore()
    check_json_files(step, where, items)
    try:
      restored = self._manager.restore(int(step),
                                       args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      if is_read_error(e):
        raise CheckpointDamagedError(
            step, f"its files cannot be read ({short_error(e)})") from None
      raise ValueError(
          f"Checkpoint step {step} in {self.directory} does not match the "
          f"model built from its config ({type(e).__name__}: {e}).") from e
    except Exception as e:  # pylint: disable=broad-except
      # TensorStore reports a truncated or unreadable chunk as a bare
      # Exception with its internal state attached; orbax's other reads of
      # the same step are left as coroutines that would print the same dump
      # when collected. They are collected here, quietly.
      reason = short_error(e)
      discard_failed_reads()
      raise CheckpointDamagedError(
          step, f"its files cannot be read ({reason})") from None
    if has_sums:
      for item in items:
        if item != "checksums":
          verify(step, item, restored[item], restored["checksums"][item])
    else:
      logging.info("Checkpoint step %d in %s has no checksums (written "
                   "before they existed): restored unverified.", step,
                   self.directory)
    return restored["params"], (restored["opt_state"] if opt_state is not None
                                else None)

  def restore_intact(self, params: PyTree, opt_state: PyTree | None = None,
                     *, prefer: int | None = None):
    """Restores ``prefer`` (default: the latest step) or, if it is damaged,
    the newest intact step, with a warning naming what was skipped.

    Returns:
      ``(step, params, opt_state, damaged)``, ``damaged`` the skipped
      ``(step, reason)`` pairs, newest first.

    Raises:
      ValueError: there is no checkpoint, or none is intact (every step is
        named with its reason), or they belong to another model.
    """
    steps = sorted(self.steps(), reverse=True)
    if not steps:
      raise ValueError(f"No checkpoint in {self.directory}.")
    if prefer is not None and prefer in steps:
      steps.remove(prefer)
      steps.insert(0, prefer)
    damaged = []
    for step in steps:
      try:
        restored = self.restore(step, params, opt_state)
      except CheckpointDamagedError as e:
        damaged.append((step, e.reason))
        logging.warning("%s", e)
        continue
      if damaged:
        logging.warning(
            "Using checkpoint step %d in %s instead: the newer or preferred "
            "one(s) %s are damaged.", step, self.directory,
            ", ".join(str(s) for s, _ in damaged))
      return (step,) + restored + (damaged,)
    raise ValueError(
        f"No intact checkpoint in {self.directory}: "
        + "; ".join(f"step {s}: {r}" for s, r in damaged)
        + ". Delete the folder to train from scratch.")

  def set_aside(self, step: int, workdir: str) -> str:
    """Moves a damaged step out of the checkpoint folder (nothing deleted).

    Returns:
      Where it now lies: ``<workdir>/damaged_checkpoints/<step>-<time>``.
    """
    target = (paths.resolve(workdir) / DAMAGED_DIR
              / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    target.parent.mkdir(parents=True, exist_ok=True)
    (paths.resolve(self.directory) / str(step)).rename(target)
    self.reload()
    return os.fspath(target)

  def reload(self) -> None:
    """Rereads the saved steps from disk (after another process moved some).
    """
    self._manager.reload()

  def restore_latest(self, params: PyTree, opt_state: PyTree | None = None):
    """:meth:`restore` of :meth:`latest_step`; returns ``(step, params,
    opt_state)``. Raises ValueError if there is no checkpoint."""
    step = self.latest_step()
    if step is None:
      raise ValueError(f"No checkpoint in {self.directory}.")
    return (step,) + self.restore(step, params, opt_state)

  def restore_best(self, params: PyTree, opt_state: PyTree | None = None):
    """:meth:`restore` of :meth:`best_step`; returns ``(step, params,
    opt_state)``. Raises ValueError if no checkpoint has the metric."""
    step = self.best_step()
    if step is None:
      raise ValueError(f"No checkpoint in {self.directory} has the metric "
                       f"{self.best_metric!r}.")
    return (step,) + self.restore(step, params, opt_state)

  def wait(self) -> None:
    """Blocks until every started save is on disk.

    Raises:
      pgmoe_jax.checks.OutputError: a save failed (a full disk); the
        message names the last intact step.
    """
    with self._writing():
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's resources (also when a
    save failed: then raises its OutputError, as :meth:`wait`)."""
    if self._closed:
      return
    try:
      self.wait()
    finally:
      self._closed = True
      try:
        self._manager.close()
      finally:
        _ECHOES.release()


def _abstract(tree: PyTree) -> PyTree:
  """Arrays -> ShapeDtypeStructs with their shardings (structs pass through)."""
  def leaf(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=getattr(x, "sharding", None))
  return jax.tree.map(leaf, tree)
