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

Spatial sharding: a mesh may have a ``"space"`` axis (:data:`SPACE_AXIS`)
beside the ``"batch"`` axis (:data:`BATCH_AXIS`); grid-shaped arrays
``(b, *grid.shape)`` then lie with their batch across ``"batch"`` and their
first grid axis across ``"space"`` (:func:`spatial_spec`). Under such a
mesh (``jax.set_mesh``), the library's kernels lay out what XLA cannot
infer: :func:`constrain_space` pins an array to that layout (or moves it to
another grid axis for a contraction along the first), and
:func:`replicate_space` copies a small coarse array to every space device.
Without a mesh, or with one space device, both return their input: the
same code runs unsharded.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

BATCH_AXIS = "batch"
SPACE_AXIS = "space"


def space_devices() -> int:
  """The size of the ambient mesh's ``"space"`` axis (1 without one)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or SPACE_AXIS not in mesh.axis_names:
    return 1
  return int(dict(mesh.shape)[SPACE_AXIS])


def spatial_spec(ndim: int, grid_ndim: int, axis: int = 0,
                 batch: bool = True) -> jax.sharding.PartitionSpec:
  """``(b, *grid)`` layout: batch over ``"batch"``, grid ``axis`` over
  ``"space"`` (``ndim`` dimensions, the last ``grid_ndim`` spatial)."""
  spec = [None] * ndim
  lead = ndim - grid_ndim
  if lead and batch:
    spec[0] = BATCH_AXIS
  spec[lead + axis] = SPACE_AXIS
  return jax.sharding.PartitionSpec(*spec)


def constrain_space(x: jax.Array, grid_ndim: int, axis: int = 0) -> jax.Array:
  """``x (b, *grid)`` laid out with grid ``axis`` across the space devices.

  A no-op without a ``"space"`` mesh axis of more than one device (see the
  module docstring), or where the axis does not split evenly over them.
  """
  k = space_devices()
  lead = x.ndim - grid_ndim
  if k == 1 or x.shape[lead + axis] % k:
    return x
  return jax.lax.with_sharding_constraint(
      x, spatial_spec(x.ndim, grid_ndim, axis,
                      batch=lead > 0 and _batch_entry(x) is not None))


def _batch_entry(x: jax.Array):
  """``"batch"`` where ``x``'s first axis splits over the mesh's batch axis."""
  mesh = jax.sharding.get_abstract_mesh()
  if x.ndim and BATCH_AXIS in mesh.axis_names and (
      x.shape[0] % int(dict(mesh.shape)[BATCH_AXIS]) == 0):
    return BATCH_AXIS
  return None


def move_space_split(x: jax.Array, grid_ndim: int, src: int,
                     dst: int) -> jax.Array:
  """Moves the space split of ``x (b, *grid)`` from grid axis src to dst.

  One all-to-all (``shard_map``): each device trades blocks with the other
  space devices and never holds more than its share. (A sharding
  constraint alone lets XLA gather the whole array and slice it.) A no-op
  without a ``"space"`` mesh axis of more than one device, or where either
  axis does not split evenly over them.
  """
  k = space_devices()
  lead = x.ndim - grid_ndim
  if k == 1 or x.shape[lead + src] % k or x.shape[lead + dst] % k:
    return x
  batch = _batch_entry(x) if lead else None

  def spec(axis):
    entries = [None] * x.ndim
    if lead:
      entries[0] = batch
    entries[lead + axis] = SPACE_AXIS
    return jax.sharding.PartitionSpec(*entries)

  def swap(block):
    return jax.lax.all_to_all(block, SPACE_AXIS, split_axis=lead + dst,
                              concat_axis=lead + src, tiled=True)

  return jax.shard_map(swap, in_specs=spec(src), out_specs=spec(dst))(x)


def replicate_space(x: jax.Array) -> jax.Array:
  """``x (b, ...)`` whole on every space device (batch still split).

  For small coarse arrays (the gate's coarse solve); a no-op without a
  ``"space"`` mesh axis of more than one device.
  """
  if space_devices() == 1:
    return x
  spec = [None] * x.ndim
  if x.ndim:
    spec[0] = _batch_entry(x)
  return jax.lax.with_sharding_constraint(
      x, jax.sharding.PartitionSpec(*spec))


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
