"""Preemption: on SIGTERM, save a checkpoint at the next step and stop.

Cluster schedulers (Cloud TPU maintenance, SLURM, Kubernetes) announce an
eviction with SIGTERM. :class:`PreemptionWatch` turns it into a step at which
the loop saves a checkpoint and raises :class:`Preempted`;
``experiments.train`` then exits with :data:`EXIT_PREEMPTED` (75,
``EX_TEMPFAIL``: "try again"), and rerunning the same command resumes from
that checkpoint.

* Across processes (``jax.distributed``) JAX's preemption service receives
  the signal on any process, and every process learns, at the same step,
  that it is time to save (``multihost_utils.reached_preemption_sync_point``).
* A single process has no such service; a plain ``SIGTERM`` handler (in the
  main thread, restored afterwards) marks the next step instead.
"""

from __future__ import annotations

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils

EXIT_PREEMPTED = 75  # EX_TEMPFAIL


class Preempted(Exception):
  """Training stopped for a preemption after saving a checkpoint."""

  def __init__(self, step: int, directory: str):
    super().__init__(
        f"preempted (SIGTERM): checkpoint saved at step {step} in "
        f"{directory}; rerun the same command to resume.")
    self.step = step
    self.directory = directory


class PreemptionWatch:
  """Says at which step to save and stop after a SIGTERM (a context)."""

  def __init__(self):
    self._flag = False
    self._previous = None
    self._distributed = jax.process_count() > 1

  def _handler(self, signum, frame):
    del signum, frame
    if not self._flag:
      logging.warning("SIGTERM: saving a checkpoint at the next step, then "
                      "stopping.")
    self._flag = True

  def __enter__(self) -> "PreemptionWatch":
    if (not self._distributed
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def reached(self, step: int) -> bool:
    """Whether to save at ``step`` and stop (call it at every step)."""
    if self._distributed:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._flag
