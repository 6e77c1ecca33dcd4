"""PG-MoE on 3-D gaussian wells at 64^3 (262,144 unknowns), label-free.

The 32^3 recipe of ``gaussian3d.py`` on a grid 8x larger: the same gate
(the ground state of the full-grid Hamiltonian after 4 fixed-cost LOBPCG
iterations) and 8 x 8 x 8 tiles of 8^3 points, so the experts keep the
32^3 model's size. Batches of 16 keep the memory estimate near 3 GiB
(the run's measured peak was 1.26 GB). The
labelled splits, for checkpoint choice and evaluation only, come from the
float64 JAX LOBPCG:

    python -m experiments.generate_data --family=gaussian_wells --ndim=3 \\
        --grid=64 --num=25 --seed=2 --solver=lobpcg --out=data/gw3d64/val
    python -m experiments.generate_data --family=gaussian_wells --ndim=3 \\
        --grid=64 --num=50 --seed=1 --solver=lobpcg --out=data/gw3d64/test
    python -m experiments.train --config=experiments/configs/gaussian3d_64.py \\
        --workdir=runs/gw3d64

RESULTS.md section 6 gives its training time and test figures.
"""

import ml_collections

from experiments.configs import gaussian3d


def get_config() -> ml_collections.ConfigDict:
  """Returns the 3-D gaussian-wells config at 64^3 (label-free)."""
  config = gaussian3d.get_config()
  config.grid.shape = (64, 64, 64)
  config.model.tiles = 8
  config.loss.unlabelled_batch_size = 16
  config.data.val = "data/gw3d64/val"
  config.train.num_steps = 2_000
  config.train.eval_every_steps = 250
  config.train.checkpoint_every_steps = 250
  config.train.eval_batch_size = 25
  return config
