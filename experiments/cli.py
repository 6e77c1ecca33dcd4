"""Shared by the entry points: flag parsing, progress bars, quiet logs."""

from __future__ import annotations

from pgmoe_jax import Grid


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
  """Parses ``"32"`` or ``"32,48"`` into a tuple of ints, naming the flag."""
  try:
    values = tuple(int(part) for part in str(text).split(","))
  except ValueError:
    raise ValueError(f"--{flag}={text!r}: expected integers separated by "
                     "commas, e.g. --grid=32 or --grid=32,48.") from None
  return values


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
  """Parses ``"20"`` or ``"20,24"`` into a tuple of floats, naming the flag."""
  try:
    return tuple(float(part) for part in str(text).split(","))
  except ValueError:
    raise ValueError(f"--{flag}={text!r}: expected numbers separated by "
                     "commas, e.g. --length=20 or --length=20,24.") from None


def grid_from_flags(grid: str, length: str, boundary: str = "dirichlet",
                    ndim: int | None = None) -> Grid:
  """Builds a Grid from ``--grid`` / ``--length`` flag values.

  Args:
    grid: points per axis, ``"32"`` or ``"32,48"``.
    length: box length(s) in bohr, ``"20"`` or ``"20,24"``.
    boundary: ``"dirichlet"`` or ``"periodic"``.
    ndim: the dimension when ``grid`` holds a single number (``"32"`` with
      ``ndim=2`` is 32x32); ``None`` takes the number of entries.
  """
  shape = parse_ints(grid, "grid")
  if len(shape) == 1 and ndim is not None:
    shape = shape * ndim
  return Grid(shape, parse_floats(length, "length"), boundary)


class ProgressBar:
  """A one-line progress bar with rate and ETA on stderr.

  On a terminal it redraws in place; elsewhere (logs, CI) it prints a line
  at most every ``log_every`` seconds and at the end. Call it as
  ``bar(done, total)``.
  """

  def __init__(self, label: str, unit: str = "samples",
               log_every: float = 10.0):
    import sys  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    self._stream = sys.stderr
    self._clock = time.perf_counter
    self._label = label
    self._unit = unit
    self._log_every = log_every
    self._start = None
    self._first = 0
    self._last_print = -float("inf")
    self._tty = self._stream.isatty()

  def __call__(self, done: int, total: int) -> None:
    now = self._clock()
    if self._start is None:
      self._start, self._first = now, done
    elapsed = now - self._start
    rate = (done - self._first) / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    finished = done >= total
    if not self._tty and not finished and (
        done == self._first or now - self._last_print < self._log_every):
      return
    self._last_print = now
    width = 30
    filled = int(width * done / total) if total else width
    eta_text = (f"{int(eta) // 60}:{int(eta) % 60:02d}" if eta == eta
                else "?")
    line = (f"{self._label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done}/{total} {self._unit}  {rate:.1f}/s  ETA {eta_text}")
    end = "\n" if finished or not self._tty else ""
    self._stream.write(("\r" if self._tty else "") + line + end)
    self._stream.flush()


def quiet_library_logs() -> None:
  """Keeps the checkpoint library's INFO lines out of the user's output.

  orbax logs several INFO lines per checkpoint saved or restored (through
  absl); an entry point shows its own progress and results instead.
  Warnings and errors still pass.
  """
  import logging as py_logging  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  class _Filter:

    def filter(self, record) -> bool:
      return record.levelno >= py_logging.WARNING or (
          "/orbax/" not in record.pathname)

  handler_filter = _Filter()
  logging.get_absl_logger().addFilter(handler_filter)
  logging.get_absl_handler().addFilter(handler_filter)


def check_names(requested, known, kind: str) -> None:
  """Raises absl's UsageError for names not in ``known``, listing them."""
  from absl import app  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(requested) - set(known))
  if unknown:
    raise app.UsageError(f"Unknown {kind}(s) {', '.join(unknown)}; known: "
                         f"{', '.join(known)}.")


def flags_parser(prog: str):
  """An absl ``flags_parser`` whose errors are one line, not tracebacks.

  absl reports unknown flags itself, but a bad ``--config.a.b=value``
  override fails inside ml_collections with an AttributeError or a
  TypeError that absl does not catch (three chained tracebacks). Use as
  ``app.run(main, flags_parser=cli.flags_parser("train"))``.
  """
  import re  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      message = str(e)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      field = str(e).strip("'\"")
      overrides = [a.split("=")[0] for a in argv[1:]
                   if a.startswith("--config.")]
      culprits = [a for a in overrides
                  if re.search(rf"\.{re.escape(field)}(\.|$)", a)]
      if isinstance(e, AttributeError) and culprits:
        message = (f"{culprits[0]}: the config has no field {field!r}; "
                   "experiments/configs/default.py lists every field")
      else:
        message = (f"a --config override cannot be applied "
                   f"({type(e).__name__}: {e}); overrides given: "
                   f"{', '.join(overrides) or 'none'}")
    raise SystemExit(f"{prog}: error: {message}. Pass --helpfull to list "
                     "the flags.")

  return parse


# JAX's coordination service declares a process dead after this many
# seconds without its heartbeats (jax.distributed.initialize's own default
# is 100); a run names a lost process after half of it (PeerWatch).
HEARTBEAT_TIMEOUT_S = 60


def define_distributed_flags() -> None:
  """The flags of a multi-process run (named like jax.distributed's)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string(
      "coordinator_address", None, "HOST:PORT where process 0 serves the "
      "coordination service of a multi-process run (with --num_processes "
      "and --process_id; every process gets the same address).")
  flags.DEFINE_integer("num_processes", None,
                       "Processes in a multi-process run.")
  flags.DEFINE_integer("process_id", None,
                       "This process's index, 0..num_processes-1.")
  flags.DEFINE_bool(
      "distributed", False, "Join a cluster JAX detects by itself (a Cloud "
      "TPU pod slice, SLURM, Open MPI): run the same command on every "
      "host. A plain run never tries.")
  flags.DEFINE_integer(
      "heartbeat_timeout_seconds", HEARTBEAT_TIMEOUT_S, "Multi-process "
      "runs: JAX's coordination service declares a process dead after this "
      "long without its heartbeats and stops the others; the survivors "
      "name a process that vanished after half of it.", lower_bound=2)


def initialize_distributed(prog: str, rerun_note: str = "") -> None:
  """Starts jax.distributed when the flags ask for it (before any JAX work).

  In a run of several processes it also starts a :class:`PeerWatch`: when
  a process vanishes (killed, crashed, its host down) the others stop with
  one line naming it, ``rerun all N processes with the same
  flags{rerun_note}.``, and exit code 1.

  Raises:
    SystemExit: the flags are incomplete or inconsistent (one line).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  values = flags.FLAGS
  explicit = {name: getattr(values, name) for name in (
      "coordinator_address", "num_processes", "process_id")}
  given = {k: v for k, v in explicit.items() if v is not None}
  if given and len(given) < 3:
    missing = sorted(set(explicit) - set(given))
    raise SystemExit(f"{prog}: error: a multi-process run needs "
                     "--coordinator_address, --num_processes and "
                     f"--process_id together; missing --"
                     f"{', --'.join(missing)}.")
  timeout = values.heartbeat_timeout_seconds
  if given:
    n, i = explicit["num_processes"], explicit["process_id"]
    if n < 1 or not 0 <= i < n:
      raise SystemExit(f"{prog}: error: --process_id={i} must be in 0.."
                       f"{n - 1} (--num_processes={n}).")
    jax.distributed.initialize(**explicit, heartbeat_timeout_seconds=timeout)
  elif values.distributed:
    jax.distributed.initialize(heartbeat_timeout_seconds=timeout)
  else:
    return
  _watch_peers(prog, timeout / 2, rerun_note)


class PeerWatch:
  """Notices a process of a multi-process run that vanished, from a thread.

  JAX's coordination service declares a process dead once it has sent no
  heartbeat for ``heartbeat_timeout_seconds`` and then terminates every
  other process from C++ (an abort with a stack trace and absl's Python
  thread dump, which Python cannot catch). jaxlib's hook for that moment
  (``missed_heartbeat_callback``) cannot take a Python function in jaxlib
  0.10.2: it fails with ``std::bad_cast`` converting the status, and
  ``jax.distributed.initialize`` does not pass one. So each process beats
  in the service's key-value store (``<PREFIX><id>``: a counter, ``exit``
  once it leaves by itself) every ``timeout / 10`` seconds, reads the
  others' beats, and calls ``on_lost(ids)`` when some have not changed for
  ``timeout`` seconds (half the service's timeout: well before its
  verdict). A process that stalls itself does not accuse the others: their
  beats have moved when it looks again.

  When process 0, which serves the coordination service, dies, JAX stops
  the others at once (their link to the service breaks) before any Python
  code runs.

  Args:
    client: jax.distributed's client (``key_value_set``,
      ``key_value_dir_get``).
    process_id: this process.
    num_processes: processes in the run.
    timeout: seconds of silence that make a process lost.
    on_lost: called from the thread with the lost ids (sorted).
    clock: seconds, monotonic (tests pass their own).
  """

  PREFIX = "pgmoe_jax/heartbeat/"

  def __init__(self, client, process_id: int, num_processes: int,
               timeout: float, on_lost, clock=None):
    import threading  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    self.timeout = timeout
    self.interval = timeout / 10
    self.lost: list[int] = []
    self._client, self._id, self._n = client, process_id, num_processes
    self._on_lost = on_lost
    self._clock = clock or time.monotonic
    self._start = None
    self._count = 0
    self._seen: dict[int, tuple[str | None, float]] = {}
    self._stop = threading.Event()
    self._found = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name="pgmoe-peer-watch")

  def check(self) -> list[int]:
    """One round: beats, reads the others, returns those silent too long."""
    now = self._clock()
    if self._start is None:
      self._start = now
    self._count += 1
    self._client.key_value_set(f"{self.PREFIX}{self._id}", str(self._count),
                               allow_overwrite=True)
    beats = {}
    for key, value in self._client.key_value_dir_get(self.PREFIX):
      name = key.rsplit("/", 1)[-1]
      if name.isdigit():
        beats[int(name)] = value
    lost = []
    for i in range(self._n):
      value = beats.get(i)
      if i == self._id or value == "exit":
        continue
      last, since = self._seen.get(i, (None, self._start))
      if value != last:
        self._seen[i] = (value, now)
      elif now - since > self.timeout:
        lost.append(i)
    return lost

  def _run(self) -> None:
    while not self._stop.wait(self.interval):
      try:
        lost = self.check()
      except Exception:  # pylint: disable=broad-except
        continue  # the service did not answer: JAX itself acts on that
      if lost:
        self.lost = lost
        self._on_lost(lost)  # in the entry points, it ends the process
        self._found.set()
        return

  def start(self) -> None:
    """Starts beating and watching (a daemon thread)."""
    self._thread.start()

  def stop(self) -> None:
    """Stops beating and says this process leaves by itself."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()
    try:
      self._client.key_value_set(f"{self.PREFIX}{self._id}", "exit",
                                 allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass  # the service is gone: nobody is left to tell

  def wait(self) -> list[int]:
    """Waits up to one verdict (``timeout`` and three rounds) for a lost
    process; returns the lost ids, or ``[]``."""
    self._found.wait(self.timeout + 3 * self.interval)
    return self.lost


_WATCH: PeerWatch | None = None


def _watch_peers(prog: str, timeout: float, rerun_note: str) -> None:
  """Starts this process's PeerWatch; its verdict ends the process."""
  import atexit  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  state = distributed.global_state  # the client has no public handle
  n = state.num_processes
  if n < 2 or state.client is None:
    return

  def on_lost(ids: list[int]) -> None:
    who = (f"process {ids[0]}" if len(ids) == 1 else
           f"processes {', '.join(map(str, ids))}")
    sys.stdout.flush()
    sys.stderr.write(
        ("\n" if sys.stderr.isatty() else "")  # after a progress bar
        + f"{prog}: error: {who} of {n} stopped sending heartbeats (killed, "
        f"crashed or its host is down); rerun all {n} processes with the "
        f"same flags{rerun_note}.\n")
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access

  global _WATCH
  _WATCH = PeerWatch(state.client, state.process_id, n, timeout, on_lost)
  _WATCH.start()
  # Runs before jax.distributed's own exit handler (registered earlier),
  # while the client still works.
  atexit.register(_WATCH.stop)


def await_lost_process() -> None:
  """After a failed collective: lets the PeerWatch name a lost process.

  Call it from the entry point's handler of ``jax.errors.JaxRuntimeError``
  and re-raise: when a process vanished, the watch prints its line and
  ends this process within one verdict; otherwise this returns.
  """
  if _WATCH is not None:
    _WATCH.wait()
