"""Will it fit? Memory estimates checked before big arrays are allocated.

A grid of 1e5 x 1e5 points is a valid :class:`~pgmoe_jax.grid.Grid` and
costs nothing to build, but one float64 state on it is 80 GB. Functions
that are about to allocate grid- or batch-sized arrays (sampling
potentials, the solvers, dataset generation, training, prediction) first
call :func:`check_fits` with a rough estimate of what they need; an
estimate far beyond what is available stops them with a message that names
the size and what to change, instead of an out-of-memory crash later.

The estimates are deliberately coarse (a small multiple of the arrays that
must exist at once), so the check only refuses what cannot possibly fit.
"""

from __future__ import annotations

import math
import os

import jax

GIB = 2**30


class InsufficientMemoryError(ValueError):
  """A computation needs far more memory than is available."""


def host_available_bytes() -> int | None:
  """Host memory available to new allocations (``MemAvailable``), or None."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def device_available_bytes(device=None) -> int | None:
  """Free memory of an accelerator (its allocator's limit minus use).

  For CPU devices (which allocate from host memory) this is
  :func:`host_available_bytes`; ``None`` when nothing is known.
  """
  device = device or jax.local_devices()[0]
  if device.platform == "cpu":
    return host_available_bytes()
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  limit = stats.get("bytes_limit")
  if limit is None:
    return None
  return int(limit) - int(stats.get("bytes_in_use", 0))


def format_bytes(nbytes: float) -> str:
  """``12.3 GiB`` / ``456 MiB`` / ``789 KiB``."""
  for unit, size in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20)):
    if nbytes >= size:
      return f"{nbytes / size:.3g} {unit}"
  return f"{nbytes / 1024:.3g} KiB"


# Grid-sized arrays per sample that one training step keeps alive: the
# input, the gate's iteration vectors (x, w, p, their H products, the
# residual and transform temporaries), the state, its energy and the
# backward pass's copies. Deliberately generous (the check only refuses
# what cannot fit).
GRID_ARRAYS_PER_SAMPLE = 32


def training_estimate(num_params: int, itemsize: int, batch: int,
                      grid_size: int, activations_per_sample: int = 0, *,
                      batch_devices: int = 1,
                      space_devices: int = 1) -> dict[str, float]:
  """Bytes one device needs for a training step, by part.

  Args:
    num_params: the model's parameter count (replicated on every device).
    itemsize: bytes per value of the training dtype.
    batch: the largest batch of a step (global).
    grid_size: points of the grid.
    activations_per_sample: the network's own activations per sample
      (features, hidden layers), kept for the backward pass.
    batch_devices: devices the batch is split over (``mesh.data``).
    space_devices: devices each grid is split over (``mesh.space``).

  Returns:
    ``{"parameters", "gradients and optimiser state", "activations"}`` in
    bytes per device (AdamW: gradients and two moments, 3x the parameters).
  """
  per_device = -(-batch // batch_devices)
  per_sample = (GRID_ARRAYS_PER_SAMPLE * grid_size
                + 2 * activations_per_sample) / space_devices
  return {"parameters": float(itemsize * num_params),
          "gradients and optimiser state": float(3 * itemsize * num_params),
          "activations": float(itemsize * per_device * per_sample)}


def describe(parts: dict[str, float]) -> str:
  """``"1.2 GiB (parameters 3 MiB, ...)"``: the total and each part."""
  total = format_bytes(sum(parts.values()))
  each = ", ".join(f"{k} {format_bytes(v)}" for k, v in parts.items())
  return f"{total} ({each})"


def check_fits(nbytes: float, what: str, fix: str, *, device=None,
               host: bool = False) -> None:
  """Raises if ``nbytes`` cannot fit in the memory available.

  Args:
    nbytes: the estimate, in bytes.
    what: what needs it, e.g. ``"LOBPCG on 8 potentials of Grid(...)"``.
    fix: what to change, e.g. ``"use a smaller grid or chunk_size"``.
    device: the device that will hold it (default: the first); CPU devices
      use host memory.
    host: the memory is host RAM whatever the device (SciPy, NumPy).

  Raises:
    InsufficientMemoryError: the estimate exceeds what is available.
  """
  available = (host_available_bytes() if host
               else device_available_bytes(device))
  if available is None or not math.isfinite(nbytes):
    return
  if nbytes > available:
    where = "host memory" if host or (
        device or jax.local_devices()[0]).platform == "cpu" else (
            f"{(device or jax.local_devices()[0]).device_kind} memory")
    raise InsufficientMemoryError(
        f"{what} needs about {format_bytes(nbytes)}, but only "
        f"{format_bytes(available)} of {where} is available; {fix}.")
