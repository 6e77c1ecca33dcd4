"""How concurrent trials share a machine: environment and CPUs per slot.

The local runner (:mod:`pgmoe_jax.workflows.sweep_runner`) starts the child
in slot ``i`` of ``parallel`` with :func:`slot_env`'s variables and pinned
to :func:`slot_cpus`. Devices are found without starting JAX, so the runner
never holds an accelerator itself.
"""

from __future__ import annotations

import os
from typing import Mapping


def available_cpus() -> list[int]:
  """The CPUs this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
  """NVIDIA GPU ids a child would see, found without starting JAX.

  ``CUDA_VISIBLE_DEVICES`` when set, else one id per entry of
  ``/proc/driver/nvidia/gpus``; none when ``JAX_PLATFORMS`` names no GPU
  platform.
  """
  environ = os.environ if environ is None else environ
  platforms = environ.get("JAX_PLATFORMS", "").lower()
  if platforms and not any(p in platforms for p in ("cuda", "gpu")):
    return []
  if "CUDA_VISIBLE_DEVICES" in environ:
    return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",")
            if d.strip() and d.strip() != "-1"]
  try:
    return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
  except OSError:
    return []


def slot_env(slot: int, parallel: int,
             environ: Mapping[str, str] | None = None) -> dict[str, str]:
  """Environment updates for the child in ``slot`` of ``parallel``.

  With one slot, nothing changes: the child sees what a plain run sees.
  With several, each child gets its own share:

  * CPU: ``XLA_FLAGS`` gains ``--xla_force_host_platform_device_count=1``
    (appended, so it wins over an earlier count) and, with one CPU per
    slot, ``--xla_cpu_multi_thread_eigen=false``. What JAX 0.10 on CPU
    honours: XLA aborts on ``--intra_op_parallelism_threads`` in
    ``XLA_FLAGS``; its thread pools follow the CPUs the process may run
    on, while ``OMP_NUM_THREADS=1`` reaches only NumPy's OpenBLAS pool.
    So the runner pins each child to its own
    CPUs (:func:`slot_cpus`), and sets ``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` (NumPy's and SciPy's
    BLAS) to the slot's CPU count unless already set.
  * GPU: with two or more visible, slot ``i`` gets
    ``CUDA_VISIBLE_DEVICES`` = the ``i % n``-th; when slots share a GPU,
    ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (unless set), since each JAX
    process otherwise takes 75% of the GPU's memory.
  * TPU: the chips of a host open in one process at a time; run one slot
    (or train many trials in one program) there.

  Args:
    slot: ``0 .. parallel - 1``.
    parallel: how many children run at once.
    environ: the environment the children inherit (default: this one's).

  Returns:
    The variables to set on top of ``environ``.
  """
  environ = os.environ if environ is None else environ
  if parallel <= 1:
    return {}
  threads = max(1, len(available_cpus()) // parallel)
  flags = ["--xla_force_host_platform_device_count=1"]
  if threads == 1:
    flags.append("--xla_cpu_multi_thread_eigen=false")
  env = {"XLA_FLAGS": " ".join([environ.get("XLA_FLAGS", "")] +
                               flags).strip()}
  for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    if name not in environ:
      env[name] = str(threads)
  gpus = visible_gpus(environ)
  if len(gpus) >= 2:
    env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
  if gpus and parallel > len(gpus) and (
      "XLA_PYTHON_CLIENT_PREALLOCATE" not in environ):
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  return env


def slot_cpus(slot: int, parallel: int) -> list[int] | None:
  """The CPUs of ``slot``: an equal contiguous share, ``None`` for all.

  ``None`` with one slot or more slots than CPUs (no pinning then).
  """
  cpus = available_cpus()
  if parallel <= 1 or parallel > len(cpus):
    return None
  share = len(cpus) // parallel
  return cpus[slot * share:(slot + 1) * share]
