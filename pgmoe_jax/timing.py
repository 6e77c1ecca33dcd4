"""Wall-clock timing that waits for JAX's asynchronous results.

Benchmarks, evaluation and the reproduction studies time through these two
functions, so every figure in the tables is measured the same way: the
result of the timed call is blocked on (``jax.block_until_ready``), so
asynchronous dispatch is never mistaken for speed.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  """Runs ``fn()`` once; returns ``(result, seconds)`` with results ready."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def best_time(fn: Callable[[], Any], repeats: int, *,
              warmup: bool = True) -> float:
  """Best wall time of ``fn()`` over ``repeats`` runs (after a warm-up run).

  Args:
    fn: the call to time; its result is blocked on.
    repeats: timed runs, ``>= 1``; the minimum is the least noisy estimate
      on a shared machine.
    warmup: run once untimed first (compilation, caches).
  """
  if warmup:
    jax.block_until_ready(fn())
  return min(timed(fn)[1] for _ in range(max(int(repeats), 1)))
