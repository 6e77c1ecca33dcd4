"""PG-MoE on 3-D gaussian wells, label-free (32^3 by default, or 64^3).

No labels in training: the loss is the variational energy of streamed 3-D
gaussian wells. The labelled splits are for choosing the best checkpoint
and for evaluation only, labelled with the float64 JAX LOBPCG (SciPy's
shift-invert eigsh takes seconds per state at 32^3 and minutes and
gigabytes at 64^3):

    python -m experiments.generate_data --family=gaussian_wells --ndim=3 \\
        --grid=32 --num=100 --seed=2 --solver=lobpcg --out=data/gw3d32/val
    python -m experiments.generate_data --family=gaussian_wells --ndim=3 \\
        --grid=32 --num=200 --seed=1 --solver=lobpcg --out=data/gw3d32/test
    python -m experiments.train --config=experiments/configs/gaussian3d.py \\
        --workdir=runs/gw3d32

At 64^3 (the same model: tiles of 16^3 instead of 8^3):

    python -m experiments.train --config=experiments/configs/gaussian3d.py \\
        --workdir=runs/gw3d64 --config.grid.shape=64,64,64 \\
        --config.data.val=data/gw3d64/val --config.train.eval_batch_size=25

The gate is the Hamiltonian's ground state on the full grid after 4
iterations of the fixed-cost batched LOBPCG (no parameters); 4 x 4 x 4
tiles of experts (one shared MLP with a tile embedding) correct its
log-amplitude.
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the 3-D gaussian-wells config (32^3, label-free)."""
  config = default.get_config()
  config.grid.shape = (32, 32, 32)
  config.loss.mode = "label_free"
  config.loss.unlabelled_batch_size = 32
  config.data.train = ""
  config.data.val = "data/gw3d32/val"
  config.data.family = "gaussian_wells"
  config.model.coarse = 0  # the full grid
  config.model.envelope_iters = 4
  config.model.envelope_solver = "fixed"
  config.train.num_steps = 12_000
  config.train.eval_batch_size = 100
  return config
