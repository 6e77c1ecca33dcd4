"""The quick start run by ``make demo``: PG-MoE on data/quickstart (32x32).

The default config (see default.py for every field: supervised infidelity
plus the variational energy, weight 1 per Hartree, batches of 64) with a
coarse-to-fine physics gate on the full grid: 4 fixed-cost iterations on
8x8, 2 on 16x16, then 2 on 32x32 (``envelope_start=16``,
``envelope_start_iters=(4, 2)``, ``envelope_iters=2``). That gate alone
leaves a small energy error on test_interp (far smaller than the 16x16
coarse envelope of default.py), so 5,000 steps are enough (README.md,
"What make demo does", gives the measured time and figures).

    python -m experiments.train --config=experiments/configs/quickstart.py \
        --workdir=runs/quickstart
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the quick-start config."""
  config = default.get_config()
  config.model.coarse = None  # the gate on the full grid
  config.model.envelope_iters = 2
  config.model.envelope_start = 16
  config.model.envelope_start_iters = (4, 2)
  config.train.num_steps = 5_000
  return config
