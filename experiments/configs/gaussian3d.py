"""PG-MoE on 3-D gaussian wells at 32^3, label-free.

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

``gaussian3d_64.py`` is this recipe at 64^3 and ``gaussian256.py`` in 2-D
at 256^2.

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
  config.model.coarse = None  # the full grid
  config.model.envelope_iters = 4
  config.model.envelope_solver = "fixed"
  config.train.num_steps = 12_000
  config.train.eval_batch_size = 100
  return config
