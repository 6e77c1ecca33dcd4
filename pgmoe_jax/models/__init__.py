"""Models from potentials to ground states: ``V (b, *grid) -> psi (b, *grid)``.

Every model is a flax linen module whose ``__call__(V)`` returns positive,
normalised states (``sum(psi**2) * prod(h) = 1``). :func:`build_model` makes
one from the ``model`` section of a config; :func:`count_params` counts a
parameter pytree.

* ``dense``: the monolithic baseline (flattened V -> MLP -> n^d values).
* ``pgmoe``: the Physics-Guided Mixture-of-Experts (tiles, vmapped experts,
  a physics-guided gate); its parts are :mod:`~pgmoe_jax.models.gates`
  (the :class:`~pgmoe_jax.models.gates.Gate` interface),
  :mod:`~pgmoe_jax.models.experts` and :mod:`~pgmoe_jax.models.tiling`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from pgmoe_jax.grid import Grid
from pgmoe_jax.models.dense import Dense
from pgmoe_jax.models.pgmoe import PGMoE

MODELS = {"dense": Dense, "pgmoe": PGMoE}


def build_model(config: Any, grid: Grid):
  """Builds the model named ``config.name`` with the config's fields.

  Args:
    config: the ``model`` section of a config (a ConfigDict or mapping);
      ``name`` picks the class, every other field is passed to it.
    grid: the grid the model works on.

  Raises:
    ValueError: an unknown name (the known ones are listed) or a field the
      model does not take.
  """
  fields = dict(config.items() if hasattr(config, "items") else config)
  name = fields.pop("name", None)
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; known models: "
                     f"{', '.join(sorted(MODELS))}.")
  cls = MODELS[name]
  known = set(cls.__dataclass_fields__) - {"parent", "name", "grid"}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"Model {name!r} takes no field(s) {', '.join(unknown)}; "
                     f"its fields: {', '.join(sorted(known))}.")
  fields = {k: tuple(v) if isinstance(v, list) else v
            for k, v in fields.items()}
  return cls(grid=grid, **fields)


def count_params(params) -> int:
  """Number of trainable scalars in a parameter pytree."""
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))
