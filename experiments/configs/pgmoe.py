"""PG-MoE, physics-guided: labelled batches plus streamed potentials' energy.

    python -m experiments.train --config=experiments/configs/pgmoe.py \
        --workdir=runs/pgmoe [--config.model.tiles=8 ...]

``experiments/sweeps/pgmoe_shapes.py`` sweeps its structural variants
(tiles, shared or separate experts, gate).
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the PG-MoE config."""
  config = default.get_config()
  # The energy of fresh potentials at every step: an endless unlabelled
  # training set that teaches the physics between the labelled samples.
  config.loss.mode = "semi_supervised"
  config.loss.unlabelled_batch_size = 32
  return config
