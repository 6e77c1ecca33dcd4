"""A local runner: jobs as subprocesses, a few at once, resumable.

A :class:`Job` is a command with a log file, the trial names it covers and
an ``is_done()`` check; :func:`run_local` runs a list of them with at most
``parallel`` at a time and returns a :class:`RunSummary`. The runner knows
nothing about training: a sweep turns each trial into a job
(:func:`pgmoe_jax.workflows.sweep.trial_jobs`), and a job may cover several
trials (a population trained in one program).

Files, next to each job's log ``<logs>/<job>.log`` (appended, one
:data:`LOG_HEADER` line per attempt), written for the job and for every
trial it covers:

* ``<logs>/<name>.json``: ``{"returncode", "seconds", "finished"}`` of the
  last attempt that ended by itself;
* ``<logs>/<name>.failed``: the same plus ``log`` and ``tail`` (its last
  lines) while the last attempt failed; removed when one succeeds.

Resuming: jobs whose ``is_done()`` holds are skipped; jobs recorded as
failed are skipped and reported unless ``rerun_failed``; every other job
runs (a training run resumes from its own checkpoints).

The children die with the runner. Each starts in a process group of its
own (``setsid``: a terminal's Ctrl-C reaches the runner alone) with the
parent-death signal set to SIGKILL (``prctl(PR_SET_PDEATHSIG)`` through
ctypes, Linux), so a runner killed with SIGKILL leaves no orphan behind.
A few lines of Python set it in the child and then ``exec`` the job,
rather than a ``preexec_fn``: the runner has JAX's threads, and Python
code between ``fork`` and ``exec`` of a threaded parent can deadlock
(JAX warns so on every fork). The parent-death signal follows the thread
that started the child: call :func:`run_local` from the main thread. On
SIGINT or SIGTERM the runner sends SIGTERM to its children (a training
run saves a checkpoint at its next step and exits 75,
:data:`EXIT_RETRY`), waits for them, and raises :class:`Interrupted`.

Nothing here imports JAX.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Collection, Mapping, Sequence, TextIO

from pgmoe_jax.workflows import sweep_slots

LOG_HEADER = "==== sweep runner:"
# experiments.train's exit code after a preemption
# (pgmoe_jax.training.preemption.EXIT_PREEMPTED): rerunning resumes it.
EXIT_RETRY = 75
TAIL_LINES = 20


@dataclasses.dataclass(frozen=True)
class Job:
  """One command for the runner.

  Attributes:
    name: unique among the jobs; names its files in the log folder.
    argv: the command.
    log_path: ``<logs>/<name>.log``; the markers go in the same folder.
    trials: the trial names it covers (progress counts trials).
    is_done: whether its work is complete (checked before it runs and
      after it exits with 0).
  """
  name: str
  argv: tuple[str, ...]
  log_path: str
  trials: tuple[str, ...]
  is_done: Callable[[], bool] = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass
class RunSummary:
  """What :func:`run_local` did, by job name.

  Attributes:
    done: jobs already done, skipped.
    finished: jobs that ran and finished.
    failed: jobs that ran and failed, with their exit codes.
    skipped_failed: jobs recorded as failed before, not rerun.
    retry: jobs that stopped to be resumed (exit :data:`EXIT_RETRY`).
    seconds: wall time of the run.
  """
  done: list[str] = dataclasses.field(default_factory=list)
  finished: list[str] = dataclasses.field(default_factory=list)
  failed: dict[str, int] = dataclasses.field(default_factory=dict)
  skipped_failed: list[str] = dataclasses.field(default_factory=list)
  retry: list[str] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  @property
  def ok(self) -> bool:
    """Whether every job is done."""
    return not (self.failed or self.skipped_failed or self.retry)


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the runner (its children were stopped).

  Attributes:
    signum: the signal.
    exit_code: ``128 + signum``, the shell's convention.
  """

  def __init__(self, signum: int):
    self.signum = signum
    self.exit_code = 128 + signum
    super().__init__(f"{signal.Signals(signum).name}: the sweep stopped; "
                     "rerun the same command to continue it.")


def marker_path(log_dir: str, name: str) -> str:
  """``<log_dir>/<name>.json``: the last finished attempt."""
  return os.path.join(log_dir, f"{name}.json")


def failure_path(log_dir: str, name: str) -> str:
  """``<log_dir>/<name>.failed``: the last attempt's failure."""
  return os.path.join(log_dir, f"{name}.failed")


def read_json(path: str) -> dict | None:
  """A marker's contents, or ``None`` when missing or unreadable."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def log_tail(path: str, lines: int = TAIL_LINES) -> list[str]:
  """The last ``lines`` lines of a log (progress redraws split at ``\\r``)."""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(f.tell() - 65536, 0))
      text = f.read().decode("utf-8", "replace")
  except OSError:
    return []
  out = [part.split("\r")[-1].rstrip() for part in text.splitlines()]
  return [line for line in out if line][-lines:]


def _write_json(path: str, value: Mapping) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1)
    f.write("\n")
  os.replace(tmp, path)


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _now() -> str:
  return datetime.datetime.now().isoformat(timespec="seconds")


def _names(job: Job) -> list[str]:
  return list(dict.fromkeys((job.name,) + tuple(job.trials)))


# Runs in the child before the job's own program: set the parent-death
# signal through libc's prctl (Linux), give up if the runner already died,
# keep to the slot's CPUs, then become the job (execvp keeps the signal).
_LAUNCHER = """\
import ctypes, os, sys
parent, cpus, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
if sys.platform.startswith("linux"):
  ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
  if os.getppid() != parent:
    os._exit(137)
if cpus:
  os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])
os.execvp(argv[0], argv)
"""


def _launch_argv(argv: Sequence[str],
                 cpus: Collection[int] | None) -> list[str]:
  """``argv`` behind :data:`_LAUNCHER` (see the module docstring)."""
  return [sys.executable, "-c", _LAUNCHER, str(os.getpid()),
          ",".join(str(c) for c in sorted(cpus or ()))] + list(argv)


class _Progress:
  """One status line: redrawn in place on a TTY, every ``every`` s else."""

  def __init__(self, total: int, stream: TextIO, every: float = 10.0):
    self._total, self._stream, self._every = total, stream, every
    self._tty = hasattr(stream, "isatty") and stream.isatty()
    self._start = time.monotonic()
    self._last = -float("inf")
    self._drawn = False

  def line(self, done: int, running: int, failed: int) -> str:
    s = int(time.monotonic() - self._start)
    return (f"sweep: {done}/{self._total} done, {running} running, "
            f"{failed} failed, {s // 3600}:{s % 3600 // 60:02d}:"
            f"{s % 60:02d} elapsed")

  def update(self, done: int, running: int, failed: int,
             final: bool = False) -> None:
    now = time.monotonic()
    if not (self._tty or final or now - self._last >= self._every):
      return
    self._last = now
    text = self.line(done, running, failed)
    if self._tty:
      self._stream.write("\r" + text + "\033[K" + ("\n" if final else ""))
      self._drawn = not final
    else:
      self._stream.write(text + "\n")
    self._stream.flush()

  def clear(self) -> None:
    """Erases a drawn line before other output."""
    if self._tty and self._drawn:
      self._stream.write("\r\033[K")
      self._stream.flush()
      self._drawn = False


@dataclasses.dataclass
class _Running:
  job: Job
  proc: subprocess.Popen
  log: object
  start: float


def run_local(jobs: Sequence[Job], parallel: int, *,
              rerun_failed: bool = False,
              echo: Callable[[str], None] = print,
              env_for_slot: Callable[[int], Mapping[str, str]] | None = None,
              cpus_for_slot: Callable[[int], Collection[int] | None]
              | None = None,
              stream: TextIO | None = None,
              grace_seconds: float = 60.0) -> RunSummary:
  """Runs the jobs that are not done, ``parallel`` at a time.

  Each child writes stdout and stderr to its job's log; one progress line
  (``sweep: 3/8 done, 2 running, 1 failed, 0:01:23 elapsed``, counting
  trials) goes to ``stream``. Failures are recorded and printed with the
  log's last lines (see the module docstring for the files).

  Args:
    jobs: the jobs (unique names).
    parallel: children at once (>= 1).
    rerun_failed: also run jobs whose last attempt failed.
    echo: where messages go (skips, failures).
    env_for_slot: ``slot -> environment updates``; default
      :func:`~pgmoe_jax.workflows.sweep_slots.slot_env`.
    cpus_for_slot: ``slot -> CPUs to pin the child to`` (``None``: all);
      default :func:`~pgmoe_jax.workflows.sweep_slots.slot_cpus`.
    stream: the progress line's stream (default ``sys.stderr``).
    grace_seconds: how long children may take to stop after SIGTERM.

  Returns:
    A :class:`RunSummary`.

  Raises:
    ValueError: ``parallel < 1`` or two jobs with one name.
    Interrupted: SIGINT or SIGTERM (the children were stopped first).
  """
  if isinstance(parallel, bool) or not isinstance(parallel, int) or (
      parallel < 1):
    raise ValueError(f"parallel={parallel!r}: expected an integer >= 1.")
  counts = collections.Counter(job.name for job in jobs)
  twice = sorted(name for name, n in counts.items() if n > 1)
  if twice:
    raise ValueError(f"Job names must be unique; repeated: {twice}.")
  if env_for_slot is None:
    env_for_slot = functools.partial(sweep_slots.slot_env,
                                     parallel=parallel)
  if cpus_for_slot is None:
    cpus_for_slot = functools.partial(sweep_slots.slot_cpus,
                                      parallel=parallel)
  progress = _Progress(sum(len(job.trials) for job in jobs),
                       sys.stderr if stream is None else stream)

  def say(text: str) -> None:
    progress.clear()
    echo(text)

  summary = RunSummary()
  start = time.monotonic()
  queue = []
  for job in jobs:
    failed = failure_path(os.path.dirname(job.log_path), job.name)
    if job.is_done():
      summary.done.append(job.name)
    elif os.path.exists(failed) and not rerun_failed:
      summary.skipped_failed.append(job.name)
      say(f"{job.name}: skipped, failed before (exit code "
          f"{(read_json(failed) or {}).get('returncode')}, log "
          f"{job.log_path}); rerun it with rerun_failed (--rerun_failed).")
    else:
      queue.append(job)
  queue.reverse()  # pop() takes them in order
  running: dict[int, _Running] = {}
  stop: list[int] = []
  old_handlers = _install_handlers(stop)
  by_name = {job.name: job for job in jobs}

  def trials_of(names) -> int:
    return sum(len(by_name[name].trials) for name in names)

  def update(final: bool = False) -> None:
    progress.update(
        trials_of(summary.done + summary.finished),
        trials_of(r.job.name for r in running.values()),
        trials_of(list(summary.failed) + summary.skipped_failed), final)

  try:
    while queue or running:
      if stop:
        _stop(running, stop, grace_seconds, say)
        raise Interrupted(stop[0])
      for slot in range(parallel):
        if slot not in running and queue:
          job = queue.pop()
          started = _start(job, slot, env_for_slot(slot), cpus_for_slot(slot),
                           rerun_failed)
          if isinstance(started, _Running):
            running[slot] = started
          else:
            _finished(job, started, 0.0, summary, say)
      for slot, item in list(running.items()):
        if item.proc.poll() is not None:
          del running[slot]
          item.log.close()
          _finished(item.job, item.proc.returncode,
                    time.monotonic() - item.start, summary, say)
      update()
      time.sleep(0.2)
  finally:
    for item in running.values():  # only after an unexpected error
      _signal_group(item.proc, signal.SIGKILL)
      item.log.close()
    _restore_handlers(old_handlers)
  update(final=True)
  summary.seconds = time.monotonic() - start
  return summary


def _install_handlers(stop: list[int]) -> dict:
  if threading.current_thread() is not threading.main_thread():
    return {}
  old = {}
  for signum in (signal.SIGINT, signal.SIGTERM):
    old[signum] = signal.signal(signum,
                                lambda s, _: stop.append(s))
  return old


def _restore_handlers(old: dict) -> None:
  for signum, handler in old.items():
    signal.signal(signum, handler)


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
  try:
    os.killpg(proc.pid, signum)
  except (ProcessLookupError, PermissionError):
    pass


def _stop(running: dict[int, _Running], stop: list[int], grace: float,
          say: Callable[[str], None]) -> None:
  """SIGTERM to every child; SIGKILL after ``grace`` s or a 2nd signal."""
  if running:
    say(f"sweep: {signal.Signals(stop[0]).name}: stopping "
        f"{len(running)} running job(s); rerun the same command to continue "
        "(a second signal kills them at once).")
  for item in running.values():
    _signal_group(item.proc, signal.SIGTERM)
  deadline = time.monotonic() + grace
  while running and time.monotonic() < deadline and len(stop) < 2:
    for slot, item in list(running.items()):
      if item.proc.poll() is not None:
        item.log.close()
        del running[slot]
    time.sleep(0.1)
  for slot, item in list(running.items()):
    _signal_group(item.proc, signal.SIGKILL)
    item.proc.wait()
    item.log.close()
    del running[slot]


def _start(job: Job, slot: int, env: Mapping[str, str],
           cpus: Collection[int] | None, rerun_failed: bool):
  """Starts ``job``: a :class:`_Running`, or an exit code if it could not."""
  log_dir = os.path.dirname(job.log_path)
  os.makedirs(log_dir, exist_ok=True)
  if rerun_failed:
    for name in _names(job):
      _remove(failure_path(log_dir, name))
  log = open(job.log_path, "ab")  # pylint: disable=consider-using-with
  log.write(f"{LOG_HEADER} attempt started {_now()} in slot {slot}: "
            f"{shlex.join(job.argv)}\n".encode())
  log.flush()
  try:
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        _launch_argv(job.argv, cpus), stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, env={**os.environ, **env},
        start_new_session=True)
  except (OSError, subprocess.SubprocessError) as e:
    log.write(f"{LOG_HEADER} could not start: {e}\n".encode())
    log.close()
    return 127
  return _Running(job, proc, log, time.monotonic())


def _finished(job: Job, returncode: int, seconds: float,
              summary: RunSummary, say: Callable[[str], None]) -> None:
  """Records an attempt that ended by itself."""
  log_dir = os.path.dirname(job.log_path)
  marker = {"returncode": returncode, "seconds": round(seconds, 3),
            "finished": _now()}
  for name in _names(job):
    _write_json(marker_path(log_dir, name), marker)
  if returncode == EXIT_RETRY:
    summary.retry.append(job.name)
    say(f"{job.name}: stopped to be resumed (exit {EXIT_RETRY}); rerun the "
        "sweep to continue it.")
    return
  problem = None
  if returncode != 0:
    problem = f"failed with exit code {returncode}"
  elif not job.is_done():
    problem = "exited with 0 but is not done"
  if problem is None:
    summary.finished.append(job.name)
    for name in _names(job):
      _remove(failure_path(log_dir, name))
    return
  tail = log_tail(job.log_path)
  for name in _names(job):
    _write_json(failure_path(log_dir, name),
                {**marker, "log": job.log_path, "tail": tail})
  summary.failed[job.name] = returncode
  say(f"{job.name}: {problem} after {seconds:.0f} s; last lines of "
      f"{job.log_path}:\n" + "\n".join("    " + line for line in tail))
