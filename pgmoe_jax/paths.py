"""Where outputs go: local folders or cloud storage URLs, one API.

Workdirs (config, metrics, checkpoints, evaluation reports) go through
``etils.epath``, the path library orbax itself uses, so
``--workdir=gs://bucket/run`` works like a local folder. Datasets do not:
they are memory-mapped, so they live on a local or mounted filesystem.

A few things differ on object stores, and are handled here once: there is
no append (a file is rewritten whole), no ``flock`` (the workdir lock is
local only) and no absolute path to resolve.
"""

from __future__ import annotations

import os
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike]
REMOTE_PREFIXES = ("gs://", "s3://", "az://", "hf://")


def is_remote(path: PathLike) -> bool:
  """Whether ``path`` is a cloud storage URL (``gs://...``)."""
  return os.fspath(path).startswith(REMOTE_PREFIXES)


def resolve(path: PathLike) -> epath.Path:
  """An ``epath.Path``: absolute for a local path, the URL as it is else."""
  text = os.fspath(path)
  return epath.Path(text if is_remote(text) else os.path.abspath(text))


def write_atomic(path: epath.Path, data: bytes) -> None:
  """Writes ``data`` through a temporary file and a rename.

  Locally the temporary file is flushed to disk first; on an object store
  the final object appears whole or not at all anyway.
  """
  tmp = path.parent / (path.name + ".tmp")
  if is_remote(path):
    tmp.write_bytes(data)
  else:
    with open(os.fspath(tmp), "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  tmp.replace(path)


def append_line(path: epath.Path, line: str) -> None:
  """Appends one line (object stores cannot append: rewritten whole)."""
  if is_remote(path):
    old = path.read_text() if path.exists() else ""
    path.write_text(old + line)
  else:
    with open(os.fspath(path), "a") as f:
      f.write(line)
