"""PG-MoE on data/quickstart (32x32): the physics gate with MLP experts.

The default config (see default.py for every field: supervised infidelity
plus the variational energy, weight 1 per Hartree, batches of 64) with a
coarse-to-fine physics gate on the full grid: 4 fixed-cost iterations on
8x8, 2 on 16x16, then 2 on 32x32 (``envelope_start=16``,
``envelope_start_iters=(4, 2)``, ``envelope_iters=2``), and the default
8x8-tile MLP experts on top; 5,000 steps. This was ``make demo``'s model
until the learned cascade of quickstart.py replaced it: the front
benchmark puts it at 0.22x the cascade on test_interp (the experts add
nothing to the gate there, and the gate is a slow cascade setting), and
the figures README.md and RESULTS.md quote for "the PG-MoE quick start"
come from it.

    python -m experiments.train \
        --config=experiments/configs/quickstart_pgmoe.py \
        --workdir=runs/quickstart_pgmoe
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the PG-MoE quick-start config."""
  config = default.get_config()
  config.model.coarse = None  # the gate on the full grid
  config.model.envelope_iters = 2
  config.model.envelope_start = 16
  config.model.envelope_start_iters = (4, 2)
  config.train.num_steps = 5_000
  return config
