"""Reading datasets: memory-mapped shards, in-memory arrays, and batches.

:func:`open_dataset` checks ``meta.json`` and every shard's checksum and
returns a :class:`Dataset` of memory-mapped :class:`ShardedArray` s (plain
``.npy`` files, ``allow_pickle=False``); :meth:`Dataset.from_arrays` makes
the same interface from arrays a user already has. ``Dataset.batches``
yields the deterministic, shuffled batches training reads.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import jax.numpy as jnp
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import paths
from pgmoe_jax.data import files
from pgmoe_jax.data.spec import DatasetSpec
from pgmoe_jax.grid import Grid
from pgmoe_jax.grid import check_same_grid
from pgmoe_jax.sharding import local_rows
from pgmoe_jax.sharding import put_batch
from pgmoe_jax.variational import normalize_unchecked
from pgmoe_jax.variational import residual_norm


class ShardedArray:
  """A read-only array stored as shards along axis 0 (memory-mapped).

  Supports ``len``, ``shape``, ``dtype``, integer, slice and integer-array
  indexing along the first axis, and ``np.asarray``.
  """

  def __init__(self, parts: Sequence[np.ndarray]):
    self._parts = list(parts)
    sizes = [len(p) for p in self._parts]
    self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    first = self._parts[0]
    self.dtype = first.dtype
    self.shape = (int(self._offsets[-1]),) + first.shape[1:]

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      i = int(index) + (len(self) if index < 0 else 0)
      if not 0 <= i < len(self):
        raise IndexError(f"index {index} out of range for {len(self)} samples")
      part = int(np.searchsorted(self._offsets, i, side="right")) - 1
      return np.asarray(self._parts[part][i - self._offsets[part]])
    if isinstance(index, slice):
      index = np.arange(len(self))[index]
    index = np.asarray(index)
    if index.dtype == bool:
      index = np.flatnonzero(index)
    if not np.issubdtype(index.dtype, np.integer):
      raise TypeError(f"Unsupported index {index!r}.")
    index = np.where(index < 0, index + len(self), index)
    if index.size and (index.min() < 0 or index.max() >= len(self)):
      raise IndexError(f"index out of range for {len(self)} samples")
    out = np.empty(index.shape + self.shape[1:], self.dtype)
    part = np.searchsorted(self._offsets, index, side="right") - 1
    for p in np.unique(part):
      where = part == p
      out[where] = self._parts[p][index[where] - self._offsets[p]]
    return out

  def __array__(self, dtype=None, copy=None):
    del copy
    out = np.concatenate(self._parts) if self._parts else np.empty(self.shape)
    return out if dtype is None else out.astype(dtype)


class _Head:
  """The first ``n`` rows of a dataset array (indexable like the original)."""

  def __init__(self, array, n: int):
    self._array = array
    self.shape = (n,) + tuple(array.shape[1:])
    self.dtype = array.dtype

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index):
    if isinstance(index, slice):
      index = np.arange(len(self))[index]
    return self._array[index]

  def __array__(self, dtype=None, copy=None):
    del copy
    out = np.asarray(self._array[np.arange(len(self))])
    return out if dtype is None else out.astype(dtype)


class Dataset:
  """Labelled ground states: arrays on one grid and a batch iterator.

  Made by :func:`open_dataset` (memory-mapped shards of a generated
  dataset) or :meth:`from_arrays` (data a user already has, in memory).

  Attributes:
    path: the directory, or ``None`` for in-memory data.
    name: the split name (``spec.split``) or the name given to
      :meth:`from_arrays`.
    meta: the parsed ``meta.json`` (``{}`` in memory).
    spec: the :class:`~pgmoe_jax.data.spec.DatasetSpec` it was made from, or
      ``None`` in memory.
    grid: its grid.
    potentials, psi0, E0, residual, index: arrays indexable along the first
      axis (:class:`ShardedArray` s when opened); ``E1`` too when the
      dataset has two states, else ``None``.
  """

  def __init__(self, grid: Grid, arrays: dict[str, Any], *,
               path: str | None = None, name: str | None = None,
               meta: dict | None = None, spec: DatasetSpec | None = None):
    self.path = path
    self.meta = meta or {}
    self.spec = spec
    self.grid = grid
    self.name = name or (spec.split if spec is not None else "data")
    self.potentials = arrays["potential"]
    self.psi0 = arrays["psi0"]
    self.E0 = arrays["E0"]  # pylint: disable=invalid-name
    self.E1 = arrays.get("E1")  # pylint: disable=invalid-name
    self.residual = arrays["residual"]
    self.index = arrays["index"]

  @classmethod
  def from_arrays(  # pylint: disable=invalid-name
      cls, grid: Grid, potentials, psi0, E0, *, E1=None,
      name: str = "data", check: bool = True) -> "Dataset":
    """A dataset of labelled ground states a user already has.

    Args:
      grid: the grid the arrays live on.
      potentials: ``(m, *grid.shape)`` in Hartree.
      psi0: ``(m, *grid.shape)`` ground states (normalised here to
        ``sum(psi**2) prod(h) = 1`` with a positive sum).
      E0: ``(m,)`` ground-state energies in Hartree.
      E1: optional ``(m,)`` first excited energies (for the gap metric).
      name: what tables and messages call it.
      check: measure each sample's residual ``||H psi0 - E0 psi0|| /
        ||psi0||`` (stored as ``residual``; float64 needs
        ``jax_enable_x64``). ``False`` stores NaN instead.

    Returns:
      A :class:`Dataset` with ``path=None`` that trains and evaluates like
      an opened one.

    Raises:
      ValueError: shapes that do not match the grid or each other, an empty
        set, or NaN/inf values.
    """
    checks.check_grid(grid)
    arrays = {"potential": np.asarray(potentials, np.float64),
              "psi0": np.asarray(psi0, np.float64),
              "E0": np.asarray(E0, np.float64)}
    if E1 is not None:
      arrays["E1"] = np.asarray(E1, np.float64)
    m = len(arrays["E0"]) if arrays["E0"].ndim == 1 else -1
    for key in ("potential", "psi0"):
      if arrays[key].shape != (m,) + grid.shape:
        raise ValueError(
            f"Dataset.from_arrays: {key} has shape {arrays[key].shape}; "
            f"expected (m, {', '.join(map(str, grid.shape))}) with m = "
            f"len(E0) = {m} for {grid}.")
    for key in ("E0", "E1"):
      if key in arrays and arrays[key].shape != (m,):
        raise ValueError(f"Dataset.from_arrays: {key} has shape "
                         f"{arrays[key].shape}; expected ({m},).")
    if m < 1:
      raise ValueError("Dataset.from_arrays: no samples (E0 is empty).")
    for key, value in arrays.items():
      checks.check_finite(key, value)
    arrays["psi0"] = np.asarray(normalize_unchecked(
        jnp.asarray(arrays["psi0"]), grid), np.float64)
    arrays["residual"] = (np.asarray(residual_norm(
        jnp.asarray(arrays["psi0"]), jnp.asarray(arrays["potential"]), grid,
        jnp.asarray(arrays["E0"])), np.float64) if check else
                          np.full(m, np.nan))
    arrays["index"] = np.arange(m, dtype=np.int64)
    return cls(grid, arrays, name=name)

  def head(self, n: int) -> "Dataset":
    """The first ``n`` samples (scarce-label runs); ``-1`` or ``len``: all.

    Raises:
      ValueError: more samples asked for than there are.
    """
    if n == -1 or n == len(self):
      return self
    if not 1 <= n <= len(self):
      raise ValueError(f"Asked for the first {n} samples of "
                       f"{self.path or self.name}, which holds {len(self)}.")
    arrays = {"potential": self.potentials, "psi0": self.psi0, "E0": self.E0,
              "E1": self.E1, "residual": self.residual, "index": self.index}
    return Dataset(self.grid, {k: _Head(v, n) for k, v in arrays.items()
                               if v is not None},
                   path=self.path, name=self.name, meta=self.meta,
                   spec=self.spec)

  def __len__(self) -> int:
    return len(self.E0)

  def __repr__(self) -> str:
    family = self.spec.family if self.spec is not None else "arrays"
    return (f"Dataset({self.path!r}, {len(self)} samples of {family} on "
            f"{self.grid}, split {self.name!r})")

  def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
    """The permutation of sample indices for one epoch (deterministic)."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(len(self))

  def batches(self, batch_size: int, *, seed: int = 0, epoch: int = 0,
              shuffle: bool = True, drop_remainder: bool = True,
              dtype=np.float32, sharding=None) -> Iterator[dict[str, Any]]:
    """Yields the batches of one epoch as device arrays.

    Every sample appears at most once per epoch (exactly once unless
    ``drop_remainder`` drops the last partial batch); the order depends only
    on ``(seed, epoch)``.

    Args:
      batch_size: samples per batch.
      seed: the shuffling seed.
      epoch: the epoch number (a different permutation per epoch).
      shuffle: ``False`` keeps stored order (evaluation).
      drop_remainder: drop a last batch smaller than ``batch_size``.
      dtype: floating dtype of the returned arrays.
      sharding: optional :class:`jax.sharding.Sharding` to place each batch
        with (e.g. split along the batch axis across devices); ``None``
        puts it on the default device.

    Yields:
      ``{"potential", "psi0", "E0"[, "E1"], "index"}``: ``(b, *grid.shape)``
      and ``(b,)`` arrays.
    """
    for idx, size in self.batch_indices(batch_size, seed=seed, epoch=epoch,
                                        shuffle=shuffle,
                                        drop_remainder=drop_remainder):
      # This process reads only its own rows of the global batch.
      idx = idx[local_rows(sharding, len(idx))]
      batch = {"potential": self.potentials[idx].astype(dtype),
               "psi0": self.psi0[idx].astype(dtype),
               "E0": self.E0[idx].astype(dtype),
               "index": self.index[idx]}
      if self.E1 is not None:
        batch["E1"] = self.E1[idx].astype(dtype)
      yield put_batch(batch, sharding, size)

  def batch_indices(self, batch_size: int, *, seed: int = 0, epoch: int = 0,
                    shuffle: bool = True, drop_remainder: bool = True
                    ) -> Iterator[tuple[np.ndarray, int]]:
    """The sample indices of each batch of one epoch (see :meth:`batches`).

    Yields:
      ``(indices, size)``: the sorted global indices of a batch, and its
      size.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive integer, got "
                       f"{batch_size!r}.")
    order = (self.epoch_order(seed, epoch) if shuffle
             else np.arange(len(self)))
    stop = (len(order) // batch_size * batch_size if drop_remainder
            else len(order))
    for start in range(0, stop, batch_size):
      idx = np.sort(order[start:start + batch_size])
      yield idx, len(idx)


def open_dataset(path: str, *, grid: Grid | None = None,
                 verify: bool = True, what: str = "the caller") -> Dataset:
  """Opens a dataset directory, checking its description and checksums.

  Args:
    path: the dataset directory (holding ``meta.json``).
    grid: if given, the grid the caller expects; a mismatch raises.
    what: who expects ``grid``, for the message (e.g. ``"the model"``).
    verify: check every shard file's SHA-256 against ``meta.json`` (reads
      each file once; pass ``False`` to skip on trusted data).

  Returns:
    A :class:`Dataset` with memory-mapped arrays.

  Raises:
    ValueError: a missing or corrupt ``meta.json``, an incomplete dataset, a
      missing, truncated or corrupt shard (the message names the shard and
      file), or a grid mismatch.
  """
  path = os.fspath(path)
  if paths.is_remote(path):
    raise ValueError(
        f"{path}: datasets are memory-mapped, so they must be on a local or "
        "mounted filesystem; copy the folder to local disk first (for "
        "instance with gsutil -m cp -r) and open that.")
  meta = files.read_meta(path)
  files.check_spec_seal(path, meta)
  if meta.get("format_version") != files.FORMAT_VERSION:
    raise ValueError(f"{path}: dataset format {meta.get('format_version')!r} "
                     f"is not the supported {files.FORMAT_VERSION}; "
                     "regenerate it.")
  try:
    spec = DatasetSpec.from_json(meta["spec"], check_family=False)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}/{files.META} has an invalid spec: {e}") from None
  if grid is not None:
    check_same_grid(grid, spec.grid, expected_what=what,
                    got_what=f"dataset {path}",
                    fix="Generate data on the same grid.")
  if not meta.get("complete"):
    raise ValueError(
        f"{path} is incomplete ({len(meta['shards'])} of {spec.num_shards} "
        "shards); rerun the same generate_data command to resume it.")
  if not meta["shards"] or meta["num_samples"] < 1:
    raise ValueError(f"{path} holds no samples (all failed: see 'failed' in "
                     f"{files.META}).")
  names = [a for a in files.ARRAYS if a != "E1" or spec.num_states > 1]
  parts = {name: [] for name in names}
  for shard in meta["shards"]:
    for name in names:
      file = os.path.join(path, files.shard_name(shard["index"], name))
      where = f"{path}: shard {shard['index']} ({os.path.basename(file)})"
      if not os.path.exists(file):
        raise ValueError(f"{where} is missing; regenerate the dataset.")
      if verify and files.sha256(file) != shard["sha256"].get(name):
        raise ValueError(f"{where} is corrupt: its checksum does not match "
                         f"{files.META}; regenerate the dataset.")
      try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
      except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{where} cannot be read ({e}); regenerate the "
                         "dataset.") from None
      expected = (shard["count"],) + (
          spec.grid.shape if name in ("potential", "psi0") else ())
      if array.shape != expected:
        raise ValueError(f"{where} has shape {array.shape}, expected "
                         f"{expected}; the shard is truncated or corrupt.")
      parts[name].append(array)
  return Dataset(spec.grid, {k: ShardedArray(v) for k, v in parts.items()},
                 path=path, meta=meta, spec=spec)
