"""Checkpoint integrity: checksums of array shards, and finiteness.

:func:`tree_checksums` digests every addressable shard of every array of a
pytree (keyed by the array's path and the shard's index, so sharded saves
verify shard by shard); :func:`verify` compares restored arrays with the
digests written with them and raises :class:`CheckpointDamagedError` naming
the step and the array. :func:`check_json_files` reads a step's JSON files
(orbax's metadata and the checksums): one cut short or corrupt is named as
damage too, where orbax would report a bare ``JSONDecodeError``.
:func:`all_finite` guards saves: NaN or inf is never written.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.sharding import fetch

PyTree = Any


class CheckpointDamagedError(ValueError):
  """A checkpoint's files cannot be read or do not match their checksums."""

  def __init__(self, step: int, reason: str):
    super().__init__(f"Checkpoint step {step} is damaged: {reason}.")
    self.step = step
    self.reason = reason


def short_error(error: Exception) -> str:
  """One line for an error (TensorStore appends its whole internal state)."""
  text = str(error).split(". See full TensorStore details")[0]
  text = f"{type(error).__name__}: {text}".splitlines()[0]
  return text[:300]


def is_read_error(error: BaseException) -> bool:
  """Whether an error restoring a checkpoint says its files are damaged."""
  while error is not None:
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
      return True
    text = str(error).lower()
    if any(word in text for word in ("tensorstore", "corrupt", "truncat",
                                     "decode", "checksum", "out of range",
                                     "unexpected end", "data_loss")):
      return True
    error = error.__cause__ or error.__context__
  return False


# The JSON files of an orbax checkpoint step: the step's metadata (with the
# metrics that rank it) and, in each item's folder, its tree metadata,
# shardings and array metadata (or, for a JSON item such as the checksums,
# the item itself).
STEP_JSON_FILES = ("_CHECKPOINT_METADATA",)
ITEM_JSON_FILES = ("_METADATA", "_sharding", "metadata", "array_metadatas/*")


def check_json_files(step: int, directory, items) -> None:
  """Raises CheckpointDamagedError if a JSON file of the step at
  ``directory`` (an ``epath.Path``) or of one of its ``items`` cannot be
  read, naming the file."""
  patterns = list(STEP_JSON_FILES) + [f"{item}/{name}" for item in items
                                      for name in ITEM_JSON_FILES]
  for pattern in patterns:
    for path in sorted(directory.glob(pattern)):
      try:
        json.loads(path.read_text())
      except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        name = path.relative_to(directory).as_posix()
        raise CheckpointDamagedError(
            step, f"its file {name} cannot be read, cut short or corrupt "
            f"({short_error(e)})") from None


@jax.jit
def _finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def all_finite(tree: PyTree) -> bool:
  """Whether every floating value of the tree is finite (on any mesh)."""
  return bool(fetch(_finite(tree)))


def _index_key(index, shape) -> str:
  parts = []
  for s, n in zip(index, shape):
    start, stop, _ = s.indices(n)
    parts.append(f"{start}:{stop}")
  return "[" + ",".join(parts) + "]"


def tree_checksums(tree: PyTree) -> dict[str, str]:
  """SHA-256 of each addressable shard of each array, by path and index.

  Keys are ``"<path>[<start>:<stop>,...]"``; replicated shards share a key
  (and a digest), so a replicated or single-device array has one entry and
  a sharded one an entry per shard this process holds.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = jax.tree_util.keystr(path)
    shards = (leaf.addressable_shards if isinstance(leaf, jax.Array)
              else None)
    if shards is None:
      array = np.asarray(leaf)
      out[name + _index_key((slice(None),) * array.ndim, array.shape)] = (
          _array_digest(array))
      continue
    for shard in shards:
      key = name + _index_key(shard.index, leaf.shape)
      if key not in out:
        out[key] = _array_digest(np.asarray(shard.data))
  return out


def _array_digest(array: np.ndarray) -> str:
  array = np.ascontiguousarray(array)
  digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
  digest.update(array.tobytes())
  return digest.hexdigest()


def verify(step: int, item: str, tree: PyTree,
           saved: Mapping[str, str]) -> None:
  """Raises CheckpointDamagedError if a restored array does not match."""
  for key, digest in tree_checksums(tree).items():
    if key in saved and saved[key] != digest:
      raise CheckpointDamagedError(
          step, f"{item}{key} does not match the checksum written with it "
          "(the file was altered or corrupted on disk)")


def discard_failed_reads() -> None:
  """Collects orbax's abandoned reads of a damaged checkpoint, quietly.

  When one array of a damaged checkpoint fails to read, orbax leaves the
  reads of the other arrays as coroutines that raise the same TensorStore
  error, with its whole internal state, when they are garbage collected
  ("Exception ignored in ..."). The damage is already reported by name;
  this collects them now with those particular errors dropped (any other
  unraisable exception still goes to the usual hook).
  """
  previous = sys.unraisablehook

  def hook(unraisable):
    name = getattr(getattr(unraisable, "object", None), "__qualname__", "")
    if "read_array_index" in name or "Encountered error while reading" in (
        str(unraisable.exc_value)):
      return
    previous(unraisable)

  sys.unraisablehook = hook
  try:
    gc.collect()
  finally:
    sys.unraisablehook = previous
