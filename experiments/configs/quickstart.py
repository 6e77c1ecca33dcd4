"""The quick start run by ``make demo``: a learned cascade on 32x32.

The model is the parameter-free cascade of the solvers
(``pgmoe_jax.solvers.cascade``) with two parts learned, and no experts:
one fixed-cost iteration on 8x8, then interpolation to 16x16 and 32x32
with 4 and 8 sweeps there (``envelope_start=16``,
``envelope_start_iters=(1, 0)``, ``envelope_iters=0``,
``envelope_sweeps=(0, 4, 8)``), whose 8x8 iteration starts from an MLP's
state (``gate="start_net"``, one hidden layer of 64 on the 8x8 block-mean
potential) and whose 12 sweeps have trained step sizes. It is trained
label-free on gaussian wells streamed from the quick-start family
(``data.family``, the ranges of data/quickstart's train and test_interp
splits) on the mean log squared eigen-residual, 5,000 steps of 64; the
best checkpoint by the median energy error on data/quickstart/val.

The untrained cascade of the same shape is the fastest setting of the
front benchmark on test_interp; README.md ("What make demo does") gives
the trained model's speed-up against that front, measured with

    python -m experiments.benchmark --what=front --model=runs/quickstart \\
        --data=data/quickstart/test_interp

Train it alone with

    python -m experiments.train --config=experiments/configs/quickstart.py \\
        --workdir=runs/quickstart
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the quick-start config."""
  config = default.get_config()
  config.loss.mode = "label_free"
  config.loss.unlabelled_objective = "log_residual"
  config.data.train = ""  # streamed; data/quickstart/val picks the best
  config.model.coarse = None  # the gate on the full grid
  config.model.experts = "none"
  config.model.gate = "start_net"
  config.model.gate_hidden = (64,)
  config.model.envelope_iters = 0
  config.model.envelope_start = 16
  config.model.envelope_start_iters = (1, 0)
  config.model.envelope_sweeps = (0, 4, 8)
  config.optim.weight_decay = 0.0
  config.train.num_steps = 5_000
  return config
