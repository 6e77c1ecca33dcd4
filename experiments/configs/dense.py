"""The monolithic baseline: one MLP from the whole potential to the whole state.

Same data, loss and schedule as the default PG-MoE run, so the comparison is
the model alone. Its output layer has ``512 * n^d`` weights (2.1 M at 64x64).

    python -m experiments.train --config=experiments/configs/dense.py \
        --workdir=runs/dense
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the dense-baseline config."""
  config = default.get_config()
  # The whole section is replaced: a model takes only its own fields.
  config.model = ml_collections.ConfigDict(dict(
      name="dense",
      # Hidden layer widths.
      hidden=(512, 512),
      # Potentials are divided by this (Hartree) before the first layer.
      potential_scale=10.0,
  ))
  return config
