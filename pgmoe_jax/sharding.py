"""Moving batches and results between hosts and a mesh that may span processes.

In a multi-process run (``jax.distributed``) every process runs the same
program and owns only its local devices. Three helpers keep the rest of the
library the same for one process and for many:

* :func:`local_rows`: which rows of a global, batch-sharded batch this
  process holds, so it reads only those;
* :func:`put_batch`: this process's rows in, global arrays out
  (``jax.make_array_from_process_local_data``; a plain ``device_put`` for a
  single process);
* :func:`fetch`: a replicated result (metrics, a step counter) to NumPy on
  every process, which ``jax.device_get`` cannot do for arrays that span
  other processes' devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def local_rows(sharding, batch_size: int) -> slice:
  """The rows of a global batch that this process holds under ``sharding``.

  For a single process (or no sharding) that is the whole batch; across
  processes, the contiguous block of rows of this process's devices along
  the batch axis (the mesh orders devices by process).

  Raises:
    ValueError: the batch does not split evenly over the devices, or this
      process's rows are not one block.
  """
  if sharding is None or sharding.is_fully_addressable:
    return slice(0, batch_size)
  spans = set()
  for index in sharding.addressable_devices_indices_map(
      (batch_size,)).values():
    start, stop, _ = index[0].indices(batch_size)
    spans.add((start, stop))
  start, stop = min(s for s, _ in spans), max(e for _, e in spans)
  if sum(e - s for s, e in spans) != stop - start:
    raise ValueError(f"This process's devices hold rows {sorted(spans)} of "
                     f"a batch of {batch_size}, not one block; order the "
                     "mesh's devices by process.")
  return slice(start, stop)


def put_batch(rows: dict[str, np.ndarray], sharding,
              batch_size: int) -> dict[str, jax.Array]:
  """Places a batch on the devices: ``rows`` are this process's rows.

  Single process: ``jax.device_put`` (on ``sharding`` if given). Across
  processes: each process passes only its own rows (:func:`local_rows`) and
  the global arrays of ``batch_size`` rows are assembled with
  ``jax.make_array_from_process_local_data``.
  """
  if sharding is None:
    return jax.device_put(rows)
  if sharding.is_fully_addressable:
    return jax.device_put(rows, sharding)
  return {k: jax.make_array_from_process_local_data(
      sharding, v, (batch_size,) + tuple(v.shape[1:])) for k, v in
          rows.items()}


def fetch(tree: Any) -> Any:
  """NumPy copies of (replicated) arrays, on every process.

  Arrays on this process's devices alone are fetched as usual; an array
  that spans other processes must be fully replicated, and this process's
  copy is returned.

  Raises:
    ValueError: an array spans other processes but is not replicated.
  """
  def leaf(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    if not x.is_fully_replicated:
      raise ValueError("fetch: an array sharded across processes cannot be "
                       "read on one; replicate it first.")
    return np.asarray(x.addressable_data(0))
  return jax.tree.map(leaf, tree)
