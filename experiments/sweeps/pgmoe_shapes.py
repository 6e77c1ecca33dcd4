r"""PG-MoE's structural variants: tiles, shared or separate experts, gate.

    python -m experiments.sweep --config=experiments/configs/pgmoe.py \
        --sweep=experiments/sweeps/pgmoe_shapes.py --workdir=runs/shapes

12 trials: 2, 4 or 8 tiles per axis, one shared expert or one per tile, and
the coarse envelope alone or with a learned global correction
(``gate="both"``).
"""

from pgmoe_jax.workflows.sweep import product


def get_sweep() -> list[dict]:
  """Tiles x shared expert x gate, tiles varying slowest."""
  return product({"model.tiles": [2, 4, 8],
                  "model.shared_expert": [True, False],
                  "model.gate": ["envelope", "both"]})
