"""Test set-up: float64 on the CPU, so physics checks hold to 1e-10.

The tests compile the same programs in many processes (the two xdist
workers, and every CLI or multi-host test's child processes), so they share
one persistent JAX compilation cache: a program compiled once is loaded by
every other process and by later runs (the same executable, so the same
bits; the key covers the program, its compile options and the JAX version,
so an edited function compiles afresh). The cache is ``.cache/jax-tests``
in the checkout, emptied before a run once it holds more than
:data:`CACHE_LIMIT_BYTES` (a temporary folder, removed at the end, where
the checkout is read-only). ``JAX_COMPILATION_CACHE_DIR`` set by the
caller is used instead: an empty folder gives a cold run, what the first
``make test`` of a fresh clone takes.
"""

import atexit
import os
import shutil
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE_LIMIT_BYTES = 2 * 2**30


def _folder_bytes(path: str) -> int:
  """Bytes of the files under ``path`` (0 if it does not exist)."""
  total = 0
  for folder, _, files in os.walk(path):
    for name in files:
      try:
        total += os.stat(os.path.join(folder, name)).st_size
      except OSError:  # removed meanwhile
        pass
  return total


def _test_cache() -> str:
  """The checkout's test cache folder, emptied when over the limit."""
  cache = os.path.join(ROOT, ".cache", "jax-tests")
  try:
    if _folder_bytes(cache) > CACHE_LIMIT_BYTES:
      shutil.rmtree(cache)
    os.makedirs(cache, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=cache)
    probe.close()
  except OSError:
    cache = tempfile.mkdtemp(prefix="pgmoe-test-jax-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
  return cache


os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  # Set before JAX is imported, in the first process (xdist's controller):
  # the workers and the tests' child processes inherit the variables.
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _test_cache()
# Every program is cached, however quick to compile or small.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  # pylint: disable=g-import-not-at-top
import pytest  # noqa: E402  # pylint: disable=g-import-not-at-top

jax.config.update("jax_enable_x64", True)


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", default=False,
                   help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip = pytest.mark.skip(reason="slow: run with --runslow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
