"""A config's model: ``resolve_model(config) -> ModelSetup(grid, dtype,
model)``.

The part of a run's config that fixes a trained model (the ``grid``
section, ``dtype`` and the ``model`` section), checked and built in one
place: training resolves it before anything is written, and
:func:`pgmoe_jax.load_model` rebuilds a trained model from a run's
``config.json`` with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgmoe_jax.grid import Grid
from pgmoe_jax.models import build_model

DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class ModelSetup:
  """What a config says about the model: enough to rebuild a trained one.

  Attributes:
    grid: the grid of ``config.grid``.
    dtype: the training dtype of ``config.dtype``.
    model: the flax module built from ``config.model``.
  """
  grid: Grid
  dtype: Any
  model: nn.Module


def grid_from_config(config) -> Grid:
  """The :class:`Grid` of ``config.grid``."""
  g = config.grid
  return Grid(tuple(g.shape), g.length, g.boundary)


def config_dtype(config) -> Any:
  """The training dtype; float64 requires ``jax_enable_x64``.

  Raises:
    ValueError: an unknown dtype, or float64 without x64.
  """
  if config.dtype not in DTYPES:
    raise ValueError(f"Unknown dtype {config.dtype!r}; use one of "
                     f"{', '.join(DTYPES)}.")
  if config.dtype == "float64" and not jax.config.jax_enable_x64:
    raise ValueError("dtype='float64' needs float64 support in JAX: pass "
                     "--jax_enable_x64 (or call jax.config.update("
                     "'jax_enable_x64', True)).")
  return jnp.dtype(config.dtype)


def resolve_model(config) -> ModelSetup:
  """The grid, dtype and model of a config (a trained run's config.json).

  Raises:
    ValueError: a bad grid, dtype or model section (the message names the
      field).
  """
  grid = grid_from_config(config)
  return ModelSetup(grid, config_dtype(config),
                    build_model(config.model, grid))
