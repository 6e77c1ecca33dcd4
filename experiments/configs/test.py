"""A tiny config that trains in seconds on a CPU (tests and smoke runs).

2-D 16x16 grid, a small PG-MoE, a few steps. It is label-free by default, so
it runs with no dataset at all:

    python -m experiments.train --config=experiments/configs/test.py \
        --workdir=runs/test

Tests point ``data.train`` / ``data.val`` at a tiny generated dataset on the
same grid and set ``loss.mode`` to exercise the labelled paths.
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the test config."""
  config = default.get_config()
  config.grid.shape = (16, 16)
  config.data.train = ""
  config.data.val = ""
  config.model.tiles = 4
  config.model.halo = 1
  config.model.expert_hidden = (16,)
  config.model.embedding_dim = 4
  config.model.coarse = 4
  # The shipped gate (default.py's "fixed" solver from the kinetic mode),
  # with few iterations: the resume, multi-device, multi-host and
  # one-vs-batch checks run the gate that trained models use.
  config.model.envelope_solver = "fixed"
  config.model.envelope_iters = 4
  config.model.gate_hidden = (16,)
  config.loss.mode = "label_free"
  config.loss.schedule = "constant"
  config.loss.anneal_steps = 10
  config.loss.unlabelled_batch_size = 8
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 2
  config.train.num_steps = 20
  config.train.batch_size = 8
  config.train.log_every_steps = 5
  config.train.eval_every_steps = 10
  config.train.checkpoint_every_steps = 10
  config.train.keep_checkpoints = 2
  config.train.eval_batch_size = 16
  return config
