"""Validation at the public boundary: clear errors before anything is traced.

Also the two helpers every writer uses: :func:`prepare_output_dir` (a
folder that exists and can be written) and :func:`writing` (an ``OSError``,
such as a full disk, becomes one message naming what was being written;
:func:`os_error` finds one that a library reports wrapped).

Library functions check their inputs here, on concrete arrays, and then
call unchecked kernels; inside ``jit`` (tracers) the value checks are
skipped, because values are unknown at trace time. Every error names the
argument, what was wrong and what to do instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.grid import Grid


def require_x64(why: str, hint: str = "") -> None:
  """Raises unless JAX's float64 (x64) mode is on.

  Args:
    why: what needs float64, e.g. ``"Dataset generation needs float64"``.
    hint: more after the fix, e.g. ``" (or pass --jax_enable_x64)"``.

  Raises:
    ValueError: ``"<why>: call jax.config.update('jax_enable_x64', True)
      first<hint>."`` without x64.
  """
  if not jax.config.jax_enable_x64:
    raise ValueError(f"{why}: call jax.config.update('jax_enable_x64', "
                     f"True) first{hint}.")


def check_grid(grid, where: str = "grid") -> None:
  """Raises TypeError unless ``grid`` is a :class:`~pgmoe_jax.grid.Grid`."""
  if not isinstance(grid, Grid):
    raise TypeError(
        f"{where} must be a pgmoe_jax.Grid, got {type(grid).__name__}.")


def as_float(x, name: str) -> jax.Array:
  """Converts to a JAX floating array, keeping float32/float64 as they are.

  Raises:
    TypeError: ``x`` is complex.
  """
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(f"{name} is complex ({x.dtype}); pgmoe_jax works with real "
                    "states and potentials.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def check_finite(name: str, x) -> None:
  """Raises ValueError if a concrete ``x`` holds NaN or inf."""
  if isinstance(x, jax.core.Tracer):
    return
  finite = np.isfinite(np.asarray(x))
  if not finite.all():
    bad = np.argwhere(~finite)[0]
    raise ValueError(
        f"{name} holds {int((~finite).sum())} non-finite value(s) (NaN or "
        f"inf), the first at index {tuple(int(i) for i in bad)}; clean the "
        "input before calling.")


def check_nonempty(name: str, x, grid: Grid) -> None:
  """Raises ValueError if the batch axes of ``x`` hold no element."""
  shape = tuple(np.shape(x))
  batch = shape[:len(shape) - grid.ndim]
  if 0 in batch:
    raise ValueError(
        f"{name} holds an empty batch (shape {shape}): there is nothing to "
        "compute; pass at least one.")


def check_nonzero(name: str, psi, grid: Grid) -> None:
  """Raises ValueError if a concrete state is identically zero."""
  if isinstance(psi, jax.core.Tracer):
    return
  norms = np.asarray(jnp.sum(psi * psi, axis=grid.axes))
  if (norms == 0).any():
    index = tuple(int(i) for i in np.argwhere(norms == 0)[0])
    raise ValueError(
        f"{name} is identically zero (batch index {index}); the energy of "
        "the zero state is undefined. Pass a nonzero state.")


def check_inputs(psi, potential, grid: Grid, *, psi_name: str = "psi"):
  """Validates and converts ``(psi, V)`` for ``grid``; returns JAX arrays.

  Raises:
    TypeError: if ``grid`` is not a Grid or an input is complex.
    ValueError: if a trailing shape does not match the grid, the leading batch
      axes do not broadcast or are empty, or a concrete input holds NaN or
      inf.
  """
  check_grid(grid)
  psi = as_float(psi, psi_name)
  potential = as_float(potential, "V")
  grid.check_array(psi_name, psi)
  grid.check_array("V", potential)
  try:
    shape = jnp.broadcast_shapes(psi.shape, potential.shape)
  except ValueError:
    raise ValueError(
        f"The batch axes of {psi_name} {psi.shape[:psi.ndim - grid.ndim]} and "
        f"V {potential.shape[:potential.ndim - grid.ndim]} do not broadcast; "
        "give V one potential per state or a single potential.") from None
  if 0 in shape[:len(shape) - grid.ndim]:
    check_nonempty(psi_name if 0 in psi.shape else "V",
                   psi if 0 in psi.shape else potential, grid)
  check_finite(psi_name, psi)
  check_finite("V", potential)
  return psi, potential


class OutputError(ValueError):
  """An output folder or file cannot be created or written."""


def prepare_output_dir(path: str, what: str) -> str:
  """Creates ``path`` if needed and checks that files can be written in it.

  Args:
    path: the folder.
    what: what it is, for the message (``"workdir"``, ``"--out"``).

  Returns:
    The absolute path.

  Raises:
    OutputError: ``path`` or one of its parents is a file, the filesystem
      is read-only, or writing fails for another reason (named).
  """
  from pgmoe_jax import paths  # pylint: disable=g-import-not-at-top
  if paths.is_remote(path):
    # An object store: folders are prefixes; what fails, fails on write.
    return os.fspath(path)
  path = os.path.abspath(path)
  try:
    os.makedirs(path, exist_ok=True)
  except FileExistsError:
    raise OutputError(f"{what} {path} exists and is a file, not a folder; "
                      "choose another path.") from None
  except NotADirectoryError:
    parent = path
    while parent and not os.path.isfile(parent):
      parent = os.path.dirname(parent)
    raise OutputError(f"{what} {path} cannot be created: {parent} is a "
                      "file, not a folder; choose another path.") from None
  except OSError as e:
    raise OutputError(f"{what} {path} cannot be created: {e.strerror} "
                      f"(errno {e.errno}); choose a writable location."
                      ) from None
  try:
    fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise OutputError(f"{what} {path} is not writable: {e.strerror} (errno "
                      f"{e.errno}); choose a writable location.") from None
  return path


# How TensorStore (under orbax) and Python quote an OS error in a message.
_ERROR_CODE = re.compile(r"os_error_code='?(\d+)|\[Errno (\d+)\]")


def os_error(error: BaseException | None) -> OSError | None:
  """The operating-system error behind ``error``, or ``None``.

  Libraries that write in the background report a full disk wrapped: orbax
  re-raises TensorStore's ``ValueError`` (``RESOURCE_EXHAUSTED ... No space
  left on device [os_error_code='28']``) from its save threads. This looks
  through ``error``, its causes and contexts, for an ``OSError`` or an
  error code quoted in a message.
  """
  pending, seen = [error], set()
  while pending:
    e = pending.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno is not None:
      return e
    text = str(e)
    match = _ERROR_CODE.search(text)
    if match:
      code = int(match.group(1) or match.group(2))
      return OSError(code, os.strerror(code))
    if "No space left on device" in text:
      return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    pending += [e.__cause__, e.__context__]
  return None


def mount_point(path: str) -> str:
  """The mount point of the filesystem that holds ``path``."""
  path = os.path.realpath(path)
  while not os.path.ismount(path):
    path = os.path.dirname(path)
  return path


@contextlib.contextmanager
def writing(what: str, path: str, advice: str | Callable[[], str] = ""):
  """Turns an ``OSError`` while writing ``what`` into one clear message.

  A full disk (``ENOSPC``), a read-only filesystem or an I/O error raised
  inside the block becomes an :class:`OutputError` naming what was being
  written, where, the system's reason and ``advice`` (what is safe to do;
  a callable is asked when the error happens). An exception of another type
  that carries an OS error (:func:`os_error`) is reported the same way.
  """
  try:
    yield
  except OutputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    cause = os_error(e)
    if cause is None:
      raise
    full = ""
    if cause.errno == errno.ENOSPC:
      from pgmoe_jax import paths  # pylint: disable=g-import-not-at-top
      full = ("; the disk is full" if paths.is_remote(path) else
              f"; the disk is full (the filesystem mounted at "
              f"{mount_point(os.fspath(path))})")
    advice = advice() if callable(advice) else advice
    raise OutputError(
        f"Writing {what} to {path} failed: {cause.strerror or cause} (errno "
        f"{cause.errno}){full}. {advice}".rstrip()) from None
