r"""Four trials of the test config: 2 seeds x 2 learning rates (tests, smoke).

    python -m experiments.sweep --config=experiments/configs/test.py \
        --sweep=experiments/sweeps/test_lr_seed.py --workdir=runs/sweep_test \
        --parallel=2 --metric=train/loss
"""

from pgmoe_jax.workflows.sweep import product


def get_sweep() -> list[dict]:
  """Seeds 0 and 1 by peak learning rates 1e-3 and 3e-3."""
  return product({"seed": [0, 1], "optim.learning_rate": [1e-3, 3e-3]})
