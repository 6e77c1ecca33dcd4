"""Wall-clock timing that waits for JAX's asynchronous results.

Benchmarks, evaluation and the reproduction studies time through these
functions, so every figure in the tables is measured the same way: the
result of the timed call is blocked on (``jax.block_until_ready``), so
asynchronous dispatch is never mistaken for speed. A speed figure is the
best of ``repeats`` timed calls after one untimed warm-up call on the same
inputs (:func:`timed_best`), so compilation and first-call caches are
excluded; both sides of a speed-up ratio are timed with the same
``repeats``. :func:`timed` alone is one pass, for work that is inherently
done once (writing a dataset).
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


def timed_best(fn: Callable[[], Any], repeats: int, *,
               warmup: bool = True) -> tuple[Any, float]:
  """``fn()``'s result and its best wall time over ``repeats`` timed runs.

  Args:
    fn: the call to time (the same inputs every time); its result is
      blocked on.
    repeats: timed runs, ``>= 1``; the minimum is the least noisy estimate
      on a shared machine.
    warmup: run once untimed first (compilation, caches). Leave it on
      unless the caller has just made the same call itself.

  Returns:
    ``(result, seconds)``: the result of the first call (the warm-up's),
    and the best time of the timed runs.

  Raises:
    ValueError: ``repeats`` is not an integer ``>= 1``.
  """
  if isinstance(repeats, bool) or int(repeats) != repeats or repeats < 1:
    raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}.")
  out = None
  if warmup:
    out = jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(int(repeats)):
    result, seconds = timed(fn)
    if out is None:
      out = result
    best = min(best, seconds)
  return out, best


def best_time(fn: Callable[[], Any], repeats: int, *,
              warmup: bool = True) -> float:
  """Best wall time of ``fn()`` over ``repeats`` runs (after a warm-up run).

  :func:`timed_best` without the result.
  """
  return timed_best(fn, repeats, warmup=warmup)[1]
