r"""The quick start's peak learning rate, over two seeds (6 trials).

    python -m experiments.sweep --config=experiments/configs/quickstart.py \
        --sweep=experiments/sweeps/lr_seed.py --workdir=runs/lr_seed \
        --parallel=2

Needs the quick-start data (``make demo`` generates it). The leaderboard
ranks the trials by the median energy error on ``data.val``.
"""

from pgmoe_jax.workflows.sweep import product


def get_sweep() -> list[dict]:
  """Seeds 0 and 1 by peak learning rates 3e-4, 1e-3 and 3e-3."""
  return product({"seed": [0, 1],
                  "optim.learning_rate": [3e-4, 1e-3, 3e-3]})
