"""A run's metric records: ``metrics.jsonl`` always, TensorBoard if available.

Every record is one JSON object per line in ``<workdir>/metrics.jsonl``
(``{"step": ..., "split": "train" | "val", <scalars>}``), the always-on,
machine-readable log that :func:`pgmoe_jax.evaluation.read_metrics` and the
training-curve figure read. When the optional TensorBoard writer is
installed (``pip install 'pgmoe_jax[tensorboard]'``, which brings
``tensorboardX``), the same scalars also go to event files under
``<workdir>/tensorboard/<split>/``, so ``tensorboard --logdir runs/`` shows
every run. Only process 0 writes.

On resume the JSONL file is cut back to the restored step (a killed run's
lines past its last checkpoint), and TensorBoard is told to purge events
after it, so a resumed run reads as one run in both.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Mapping

from absl import logging
import jax

from pgmoe_jax import checks
from pgmoe_jax import paths
from pgmoe_jax.paths import PathLike

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
ADVICE = ("The checkpoints saved before are intact; free the space and rerun "
          "the same command to resume.")


def tensorboard_available() -> bool:
  """Whether the optional TensorBoard writer (tensorboardX) is installed."""
  try:
    # pylint: disable-next=g-import-not-at-top,unused-import
    import tensorboardX  # noqa: F401
  except ImportError:
    return False
  return True


def truncate(path: PathLike, last_step: int) -> None:
  """Drops the records of ``path`` after ``last_step`` (atomically)."""
  path = paths.resolve(path)
  if not path.exists():
    return
  keep = []
  for line in path.read_text().splitlines(keepends=True):
    try:
      if json.loads(line)["step"] <= last_step:
        keep.append(line if line.endswith("\n") else line + "\n")
    except (json.JSONDecodeError, KeyError, TypeError):
      pass  # a partial last line of a killed run
  paths.write_atomic(path, "".join(keep).encode())


class MetricsLog:
  """Writes a run's records (see the module docstring).

  Args:
    workdir: the run directory.
    start_step: the step training (re)starts from; later records of an
      earlier attempt are dropped.
    tensorboard: write TensorBoard event files too; ``None``: when
      tensorboardX is installed.
    advice: what a failed write's message says is safe to do (or a
      function that says it when asked, e.g. naming the last checkpoint).
  """

  def __init__(self, workdir: PathLike, start_step: int,
               tensorboard: bool | None = None,
               advice: str | Callable[[], str] = ADVICE):
    folder = paths.resolve(workdir)
    self._advice = advice
    self.path = folder / METRICS_FILE
    self._primary = jax.process_index() == 0
    self._writers: dict[str, Any] = {}
    self._start = int(start_step)
    if tensorboard is None:
      tensorboard = tensorboard_available()
    self._tb_dir = (os.fspath(folder / TENSORBOARD_DIR) if tensorboard
                    and self._primary else None)
    if self._primary:
      folder.mkdir(parents=True, exist_ok=True)
      truncate(self.path, start_step)

  def _writer(self, split: str):
    if split not in self._writers:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      try:
        self._writers[split] = tensorboardX.SummaryWriter(
            os.path.join(self._tb_dir, split),
            purge_step=self._start or None)
      except Exception as e:  # pylint: disable=broad-except
        # tensorboardX writes to object stores only with extra packages;
        # metrics.jsonl is the record that always works.
        logging.warning("No TensorBoard events in %s (%s); metrics.jsonl "
                        "has every record.", self._tb_dir, e)
        self._tb_dir = None
        return None
    return self._writers[split]

  def write(self, step: int, split: str,
            record: Mapping[str, float]) -> None:
    """Appends one record (scalars) for ``step`` and ``split``."""
    if not self._primary:
      return
    with checks.writing(METRICS_FILE, os.fspath(self.path.parent),
                        self._advice):
      paths.append_line(self.path, json.dumps(
          {"step": int(step), "split": split, **record}) + "\n")
    writer = self._writer(split) if self._tb_dir is not None else None
    if writer is not None:
      for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          writer.add_scalar(key, value, int(step))

  def close(self) -> None:
    """Flushes and closes the TensorBoard writers.

    Raises:
      pgmoe_jax.checks.OutputError: the events could not be written (a
        full disk); every writer is closed all the same.
    """
    writers, self._writers = self._writers, {}
    failed = None
    for writer in writers.values():
      try:
        writer.close()
      except OSError as e:
        _abandon(writer)
        failed = failed or e
    if failed is not None:
      with checks.writing("TensorBoard events",
                          os.fspath(self._tb_dir or self.path.parent),
                          self._advice):
        raise failed


def _abandon(writer) -> None:
  """Stops a tensorboardX writer whose events cannot be flushed.

  Its ``close`` fails at the flush, before stopping its thread and closing
  its file; the exit handler it registered would then fail again (a
  traceback at exit). This does the rest of ``close`` without the flush.
  """
  for file_writer in (getattr(writer, "all_writers", None) or {}).values():
    events = getattr(file_writer, "event_writer", None)
    if events is None or getattr(events, "_closed", True):
      continue
    # pylint: disable=protected-access
    with contextlib.suppress(Exception):
      events._worker.stop()
    with contextlib.suppress(Exception):
      events._ev_writer.close()
    with contextlib.suppress(Exception):
      events._event_queue.close()
    events._closed = True
  writer.file_writer = writer.all_writers = None
