"""PG-MoE on 2-D gaussian wells at 256^2 (65,536 unknowns), label-free.

The label-free recipe of ``gaussian3d.py`` on a large 2-D grid: the gate is
the ground state of the full-grid Hamiltonian after 4 fixed-cost LOBPCG
iterations (no parameters), and 8 x 8 tiles of 32 x 32 points carry one
shared expert MLP that corrects its log-amplitude. The labelled splits,
for checkpoint choice and evaluation only, come from the float64 JAX
LOBPCG:

    python -m experiments.generate_data --family=gaussian_wells \\
        --grid=256 --num=50 --seed=2 --solver=lobpcg --out=data/gw256/val
    python -m experiments.generate_data --family=gaussian_wells \\
        --grid=256 --num=200 --seed=1 --solver=lobpcg --out=data/gw256/test
    python -m experiments.train --config=experiments/configs/gaussian256.py \\
        --workdir=runs/gw256

RESULTS.md section 6 gives its training time and test figures.
"""

import ml_collections

from experiments.configs import gaussian3d


def get_config() -> ml_collections.ConfigDict:
  """Returns the 2-D gaussian-wells config at 256^2 (label-free)."""
  config = gaussian3d.get_config()
  config.grid.shape = (256, 256)
  config.model.tiles = 8
  config.data.val = "data/gw256/val"
  config.train.num_steps = 3_000
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500
  config.train.eval_batch_size = 50
  return config
