"""The quick start run by ``make demo``: PG-MoE on data/quickstart (32x32).

It is the default config (see default.py for every field): PG-MoE with the
coarse-Hamiltonian-plus-network gate, supervised infidelity plus the
variational energy (weight 1 per Hartree), 20k steps of batch 64, about 4-5
minutes on a 2-core CPU.

    python -m experiments.train --config=experiments/configs/quickstart.py \
        --workdir=runs/quickstart
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the quick-start config."""
  return default.get_config()
