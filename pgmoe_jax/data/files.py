"""The files of a dataset directory: names, checksums and atomic writes.

Layout (one directory per split)::

    meta.json                      the spec, counts, package version, and per
                                   shard its sample count and a SHA-256 of
                                   every file
    shard-00000.<array>.npy        one plain .npy per array and shard
    .lock                          who is (or last was) writing it

``meta.json`` also seals its spec with ``spec_sha256``: an edit to the spec
(seed, tolerance, ranges) is reported on open instead of being believed.

Every write goes to a temporary name, is flushed to disk and renamed, so a
killed process leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from pgmoe_jax.locks import LOCK_FILE

FORMAT_VERSION = 1
META = "meta.json"

ARRAYS = ("potential", "psi0", "E0", "E1", "residual", "index")


def shard_name(index: int, array: str) -> str:
  """``shard-00003.psi0.npy``: the file of one array of one shard."""
  return f"shard-{index:05d}.{array}.npy"


def sha256(path: str) -> str:
  """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` through a synced temporary file."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def save_npy(path: str, array: np.ndarray) -> str:
  """Saves an array as .npy (no pickle) atomically; returns its SHA-256."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    f.flush()
    os.fsync(f.fileno())
  digest = sha256(tmp)
  os.replace(tmp, path)
  return digest


def write_meta(path: str, meta: dict) -> None:
  """Replaces ``<path>/meta.json`` atomically."""
  atomic_write_bytes(os.path.join(path, META),
                     (json.dumps(meta, indent=1) + "\n").encode())


def read_meta(path: str) -> dict:
  """Parses ``<path>/meta.json``; ValueError if missing or corrupt."""
  meta_path = os.path.join(path, META)
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{path} is not a dataset: it has no {META}. Make one "
                     "with python -m experiments.generate_data.") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{meta_path} is corrupt (not valid JSON: {e}).") from None
  if not isinstance(meta, dict) or "spec" not in meta or "shards" not in meta:
    raise ValueError(f"{meta_path} is not a pgmoe_jax dataset description "
                     "(no 'spec' or 'shards').")
  return meta


def is_ours(name: str) -> bool:
  """Whether a file name is one a dataset directory may hold."""
  return name in (META, META + ".tmp", LOCK_FILE) or (
      name.startswith("shard-") and (name.endswith(".npy")
                                     or name.endswith(".npy.tmp")))


def spec_sha256(spec: dict) -> str:
  """The checksum that seals a spec in ``meta.json`` (canonical JSON)."""
  text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


def check_spec_seal(path: str, meta: dict) -> None:
  """Raises ValueError if ``meta.json``'s spec was edited after writing.

  Datasets written before the seal existed (no ``spec_sha256``) pass.
  """
  seal = meta.get("spec_sha256")
  if seal is not None and seal != spec_sha256(meta["spec"]):
    raise ValueError(
        f"{os.path.join(path, META)} was edited: its spec no longer matches "
        "the checksum written with the data, so it may not describe them "
        "(seed, tolerance, ranges...). Restore the file, or regenerate the "
        "dataset.")
