"""The universal PG-MoE: label-free on a mixture of every potential family.

No labels: the loss is the variational energy of potentials streamed from
``data.family = "mixture"`` (``data.mixture``, the broad universal ranges
of pgmoe_jax.potentials.UNIVERSAL: shallow to deep, narrow to wide, one to
many wells, sharp and smooth flat-bottomed wells, near-degenerate double
wells, random landscapes, sums of two and random energy offsets). The best
checkpoint is picked on a labelled validation split of the same mixture,
and every family has its own test split:

    python -m experiments.generate_data --universal_splits --grid=32 \\
        --num_eval=200 --out=data/universal32
    python -m experiments.train --config=experiments/configs/universal.py \\
        --workdir=runs/universal32

At 64x64 (the model fields are the default PG-MoE's, which divide 64):

    python -m experiments.generate_data --universal_splits --grid=64 \\
        --num_eval=200 --out=data/universal64
    python -m experiments.train --config=experiments/configs/universal.py \\
        --workdir=runs/universal64 --config.grid.shape=64,64 \\
        --config.data.val=data/universal64/val_mixture
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the universal config (32x32)."""
  config = default.get_config()
  config.loss.mode = "label_free"
  config.data.train = ""
  config.data.val = "data/universal32/val_mixture"
  config.data.family = "mixture"
  # Each component draws only its share of a batch (about 7x cheaper: at
  # 64x64 the unstratified stream took longer than the model's step).
  config.data.mixture.stratified = True
  # The physics gate on the full grid: 4 iterations of the fixed-cost
  # batched LOBPCG from K's lowest mode leave a median envelope error of
  # 0.2-14 mHa per family at 32x32 (the 16x16 coarse envelope: 21-186 mHa,
  # a resolution error no number of iterations removes); the experts learn
  # what 4 iterations leave (experiments.benchmark --what=gate).
  config.model.coarse = None  # the full grid
  config.model.envelope_iters = 4
  config.model.envelope_solver = "fixed"
  return config
