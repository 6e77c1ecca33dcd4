"""Test set-up: float64 on the CPU, so physics checks hold to 1e-10.

The tests compile the same programs in many processes (the two xdist
workers, and every CLI or multi-host test's child processes), so the
session shares one persistent JAX compilation cache in a temporary folder:
a program compiled once is loaded by every other process (the same
executable, so the same bits). It is removed at the end;
``JAX_COMPILATION_CACHE_DIR`` set by the caller is used as it is.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  # Set before JAX is imported, in the first process (xdist's controller):
  # the workers and the tests' child processes inherit the variables.
  _CACHE = tempfile.mkdtemp(prefix="pgmoe-test-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

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
