"""Fixed-size batches: the last one padded so a jitted function compiles once.

:func:`pad_batch` fills ``x (m, ...)`` up to ``size`` rows with copies of
its last row (NumPy in, NumPy out; JAX in, JAX out); the caller drops the
extra rows from the result again (``out[:m]``). Copies of a real row, not
zeros, so the padding is a valid input (a normalisable state, a finite
potential) and cannot trip a check or a NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def pad_batch(x, size: int):
  """``x (m, ...)`` with its last row repeated up to ``size`` rows.

  Args:
    x: a non-empty NumPy or JAX array (batch axis first).
    size: the rows wanted; ``x`` is returned as it is if it has as many or
      more.

  Returns:
    ``(max(m, size), ...)``, of ``x``'s kind and dtype.
  """
  m = x.shape[0]
  if m >= size:
    return x
  xp = jnp if isinstance(x, jax.Array) else np
  return xp.concatenate([x, xp.repeat(x[-1:], size - m, axis=0)])
