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


def initialize_distributed(prog: str) -> None:
  """Starts jax.distributed when the flags ask for it (before any JAX work).

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
  if given:
    n, i = explicit["num_processes"], explicit["process_id"]
    if n < 1 or not 0 <= i < n:
      raise SystemExit(f"{prog}: error: --process_id={i} must be in 0.."
                       f"{n - 1} (--num_processes={n}).")
    jax.distributed.initialize(**explicit)
  elif values.distributed:
    jax.distributed.initialize()
