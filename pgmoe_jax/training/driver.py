"""The one training loop: the steps, and the periodic work hung on them.

:func:`run_loop` owns what every kind of training shares, as the flax
examples' loop owns its periodic actions and netket's driver its callbacks:
the step counter, the log, evaluation and checkpoint cadence, the
steps-per-second clock (evaluation and saving not counted), preemption
(:mod:`pgmoe_jax.training.preemption`) and the final wait. The step is a
parameter (a single run's jitted step, :mod:`pgmoe_jax.training.loop`, or a
population's vmapped one, :mod:`pgmoe_jax.training.population`), and so is
the work at the cadence's steps (:class:`Hooks`). :class:`RunOutputs`
writes one run's ``metrics.jsonl`` and checkpoints: it is a single run's
hooks, and each population member's writer. :func:`closing` closes the
outputs however training ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Iterator, Protocol

from absl import logging
import ml_collections
import numpy as np

from pgmoe_jax.rundir import checkpoint
from pgmoe_jax.sharding import fetch
from pgmoe_jax.training.preemption import Preempted
from pgmoe_jax.training.preemption import PreemptionWatch
from pgmoe_jax.training.summaries import MetricsLog

PyTree = Any
Progress = Callable[[int, int], None]


class Hooks(Protocol):
  """What a kind of training does at the steps :func:`run_loop` names.

  ``pending`` is the list of the steps' metrics since the last log.
  """

  directory: str  # the checkpoints, as Preempted names them

  def check(self, state: PyTree, pending: list[dict], step: int) -> None:
    """Before any record or save: looks for non-finite steps (may raise)."""

  def write_train(self, step: int, pending: list[dict],
                  steps_per_sec: float) -> None:
    """Records the ``train`` metrics of the steps since the last log."""

  def evaluate_and_save(self, step: int, state: PyTree, *, evaluate: bool,
                        save: bool) -> None:
    """Records the ``val`` metrics, saves a checkpoint, or both."""

  def wait(self) -> None:
    """Returns once the asynchronous saves are written."""


def run_loop(state: PyTree, step_fn: Callable[[PyTree, Any], tuple],
             batches: Iterator, hooks: Hooks,
             train: ml_collections.ConfigDict, *, start: int, evaluate: bool,
             progress: Progress | None = None) -> PyTree:
  """Trains from step ``start`` to ``train.num_steps``.

  Step ``done`` (the count after the update) records ``train`` metrics
  every ``train.log_every_steps``, saves every
  ``train.checkpoint_every_steps`` and evaluates every
  ``train.eval_every_steps`` and at every checkpoint (a checkpoint keeps its
  step's validation metrics); the last step does all three. A SIGTERM saves
  at the next step.

  Args:
    state: the state at step ``start``.
    step_fn: ``step_fn(state, batch) -> (state, metrics)``.
    batches: the batches of steps ``start``, ``start + 1``, ...
    hooks: the work at the cadence's steps (:class:`Hooks`).
    train: ``config.train`` (``num_steps`` and the ``*_every_steps``).
    start: the first step.
    evaluate: whether there is a validation set.
    progress: called as ``progress(step, num_steps)`` after every step.

  Returns:
    The final state.

  Raises:
    Preempted: a SIGTERM (to any process) stopped training after the
      checkpoint of the next step.
  """
  num_steps = train.num_steps
  if start >= num_steps:
    logging.info("Nothing to do: step %d >= train.num_steps=%d.", start,
                 num_steps)
    return state
  pending: list[dict] = []
  with PreemptionWatch() as watch:
    clock, last_log, other = time.perf_counter(), start, 0.0
    for step in range(start, num_steps):
      state, metrics = step_fn(state, next(batches))
      pending.append(metrics)
      done = step + 1
      is_last = done == num_steps
      # Every process asks at every step; all get the same answer.
      preempted = watch.reached(done)
      on_ckpt = done % train.checkpoint_every_steps == 0 or is_last
      is_log = done % train.log_every_steps == 0 or is_last
      is_eval = evaluate and (on_ckpt or done % train.eval_every_steps == 0)
      is_save = on_ckpt or preempted
      if is_log or is_eval or is_save:
        hooks.check(state, pending, done)
      if is_log:
        now = time.perf_counter()
        hooks.write_train(done, pending, (done - last_log) / max(
            now - clock - other, 1e-9))
        pending, clock, last_log, other = [], now, done, 0.0
      tic = time.perf_counter()
      if is_eval or is_save:
        hooks.evaluate_and_save(done, state, evaluate=is_eval, save=is_save)
      other += time.perf_counter() - tic
      if progress is not None:
        progress(done, num_steps)
      if preempted and not is_last:
        hooks.wait()
        raise Preempted(done, hooks.directory)
  hooks.wait()
  return state


@dataclasses.dataclass
class RunOutputs:
  """One run's records and checkpoints; the :class:`Hooks` of a single run.

  Attributes:
    log: the run's ``metrics.jsonl``.
    ckpts: its checkpoints.
    evaluate: ``evaluate(params) -> metrics`` on the validation set, or
      ``None`` without one.
    num_steps: the run's ``train.num_steps``, named by the log lines; ``None``
      writes no log lines (a population member: the population logs).
  """
  log: MetricsLog
  ckpts: checkpoint.Checkpoints
  evaluate: Callable[[PyTree], dict[str, float]] | None
  num_steps: int | None = None

  @property
  def directory(self) -> str:
    return self.ckpts.directory

  def check(self, state, pending: list[dict], step: int) -> None:
    """Raises FloatingPointError if a step since the last check was bad."""
    bad = int(fetch(state.nonfinite_step))
    if bad < 0:
      return
    first = step - len(pending)
    loss = (float(fetch(pending[bad - first]["loss"]))
            if 0 <= bad - first < len(pending) else float("nan"))
    self.ckpts.wait()
    last_good = self.ckpts.latest_step()
    kept = (f"the last good checkpoint is step {last_good} in "
            f"{self.ckpts.directory}" if last_good is not None else
            "no checkpoint had been saved yet")
    raise FloatingPointError(
        f"Non-finite loss or gradients at step {bad} (loss {loss}); training "
        f"stopped and that state was not saved; {kept}. Try a lower "
        "optim.learning_rate or optim.grad_clip, or check the data.")

  def write_train(self, step: int, pending: list[dict],
                  steps_per_sec: float) -> None:
    record = summarise(pending, steps_per_sec)
    self.log.write(step, "train", record)
    self._info(step, "train", record)

  def evaluate_and_save(self, step: int, state, *, evaluate: bool,
                        save: bool) -> None:
    val = None
    if evaluate:
      val = self.evaluate(state.params)
      self.log.write(step, "val", val)
      self._info(step, "val", val)
    if save:
      self.ckpts.save(step, state.params, state.opt_state,
                      None if val is None else {
                          f"val/{k}": v for k, v in val.items()})

  def wait(self) -> None:
    self.ckpts.wait()

  def _info(self, step: int, split: str, record: dict) -> None:
    if self.num_steps is not None:
      logging.info("step %d/%d %s: %s", step, self.num_steps, split,
                   ", ".join(f"{k}={v:.4g}" if isinstance(v, float)
                             else f"{k}={v}" for k, v in record.items()))


def summarise(pending: list[dict], steps_per_sec: float) -> dict[str, float]:
  """Means of the steps' metrics since the last log; ``lr`` of the last."""
  values = fetch(pending)
  record = {k: float(np.mean([m[k] for m in values]))
            for k in values[0] if k != "finite"}
  record["lr"] = float(values[-1]["lr"])
  record["steps_per_sec"] = steps_per_sec
  return record


@contextlib.contextmanager
def closing() -> Iterator[list[Callable[[], None]]]:
  """Yields a list of closers; calls them all, last added first, on exit.

  Every closer runs even after one fails. After an error in the block, a
  closer's own failure (often the same full disk) is logged, not raised
  over it; otherwise the first failure is raised once all have run.
  """
  closers: list[Callable[[], None]] = []
  quietly = True
  try:
    yield closers
    quietly = False
  finally:
    first = None
    for close in reversed(closers):
      try:
        close()
      except Exception as e:  # pylint: disable=broad-except
        if quietly:
          logging.info("After the error, closing also failed: %s",
                       str(e).splitlines()[0] if str(e) else type(e).__name__)
        elif first is None:
          first = e
    if first is not None:
      raise first
