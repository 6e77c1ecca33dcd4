"""A config's model: ``resolve_model(config) -> ModelSetup(grid, dtype,
model)``.

The part of a run's config that fixes a trained model (the ``grid``
section, ``dtype`` and the ``model`` section), checked and built in one
place: training resolves it before anything is written, and
:func:`pgmoe_jax.load_model` rebuilds a trained model from a run's
``config.json`` with it. :func:`param_shapes` gives the shapes of a
model's parameters without computing any (what a checkpoint is restored
onto, what a count or a memory estimate reads).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgmoe_jax import checks
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
  if config.dtype == "float64":
    checks.require_x64("dtype='float64' needs float64 support in JAX",
                       " (or pass --jax_enable_x64)")
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


def param_shapes(setup) -> Any:
  """The model's parameters as ``jax.ShapeDtypeStruct`` s (nothing computed).

  Args:
    setup: a :class:`ModelSetup` (or anything with its ``grid``, ``dtype``
      and ``model``, such as a resolved training run).

  Returns:
    The ``params`` pytree of ``model.init`` on a batch of one potential of
    ``setup.dtype``, abstract.
  """
  shapes = jax.eval_shape(setup.model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1,) + setup.grid.shape,
                                               setup.dtype))
  return shapes["params"]
