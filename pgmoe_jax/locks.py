"""One process owns an output folder: an advisory lock that dies with it.

:func:`exclusive` takes an exclusive ``flock`` on ``<folder>/.lock`` for as
long as the context is open. The kernel releases it when the process ends,
however it ends, so ``kill -9`` never leaves a stale lock; the file itself
stays and records the last holder. A second process that asks for the same
folder stops at once with :class:`FolderInUseError`, naming the holder (pid,
host, command and since when).

Training (the workdir), dataset generation (each split's folder) and the
sweep runner use it. The lock is advisory and local to the machine's
filesystem semantics: on a network filesystem without ``flock`` support it
protects processes on one host only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from typing import Iterator

LOCK_FILE = ".lock"


class FolderInUseError(RuntimeError):
  """Another process holds the folder's lock.

  Attributes:
    folder: the folder (absolute).
    holder: the holder's record (``pid``, ``host``, ``since``, ``command``),
      or ``None`` when it cannot be read.
  """

  def __init__(self, message: str, folder: str, holder: dict | None):
    super().__init__(message)
    self.folder = folder
    self.holder = holder


def _read_holder(path: str) -> dict | None:
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return None
  keys = ("pid", "host", "since", "command")
  if not isinstance(holder, dict) or any(k not in holder for k in keys):
    return None
  return holder


def _describe(holder: dict | None) -> str:
  if holder is None:
    return "another process"
  return (f"process {holder['pid']} on {holder['host']} (since "
          f"{holder['since']}: {holder['command']})")


def _acquire(folder: str, what: str) -> int:
  path = os.path.join(folder, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    holder = _read_holder(path)
    raise FolderInUseError(
        f"{what} {folder} is in use by {_describe(holder)}. Wait for it to "
        "finish, stop it, or use another folder; two processes writing one "
        "folder would corrupt it.", folder, holder) from None
  holder = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:500]}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
  return fd


@contextlib.contextmanager
def exclusive(folder: str, what: str = "folder") -> Iterator[None]:
  """Holds the folder's lock inside the ``with`` block (the folder exists).

  Raises:
    FolderInUseError: another process (or another ``with`` block of this
      one) holds it; the message names the holder.
  """
  fd = _acquire(os.path.abspath(folder), what)
  try:
    yield
  finally:
    os.close(fd)  # releases the lock
