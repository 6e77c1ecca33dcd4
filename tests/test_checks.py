"""pgmoe_jax.checks: the one x64 guard."""

import jax
import pytest

from pgmoe_jax import checks


def test_require_x64_names_what_needs_it_and_the_fix():
  with jax.enable_x64(False):
    with pytest.raises(ValueError) as info:
      checks.require_x64("Dataset generation needs float64", " (or not)")
  assert str(info.value) == (
      "Dataset generation needs float64: call jax.config.update("
      "'jax_enable_x64', True) first (or not).")
  with jax.enable_x64(True):
    checks.require_x64("anything")
