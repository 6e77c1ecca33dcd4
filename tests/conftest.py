"""Test set-up: float64 on the CPU, so physics checks hold to 1e-10."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
