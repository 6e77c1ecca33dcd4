"""A learned cascade on 3-D gaussian wells at 32^3, label-free.

The model is the parameter-free cascade of the solvers
(``pgmoe_jax.solvers.cascade``) with two parts learned, and no experts:
one fixed-cost iteration on 8^3, one on 16^3, then 4 Chebyshev-Jacobi
sweeps on the interpolated 16^3 start and 8 on the 32^3 one
(``envelope_start=16``, ``envelope_start_iters=(1, 1)``,
``envelope_iters=0``, ``envelope_sweeps=(0, 4, 8)``). Its 8^3 iteration
starts from an MLP's state (``gate="start_net"``, one hidden layer of 128
on the 8^3 block means and block minima of the potential:
``gate_start_minima``, since a block mean hides a narrow deep well) and
its 12 sweeps have trained step sizes. Untrained, it is the front
benchmark's setting ``(1,1,0)`` with sweeps ``(0,4,8)``.

Trained label-free on streamed gaussian wells, 20,000 steps of 32, on the
residual's power mean (p = 0.5) plus 200/Ha times the mean energy (the
energy sees a state that mixes two wells, which the residual barely
does); data/gw3d32/val is scored every 2,500 steps. The shipped
``learned_cascade3d_32`` is the last checkpoint (``--which=latest``; its
card says why), not the best by the validation median:

    python -m experiments.generate_data --family=gaussian_wells --ndim=3 \\
        --grid=32 --num=100 --seed=2 --solver=lobpcg --out=data/gw3d32/val
    python -m experiments.train \\
        --config=experiments/configs/learned_cascade3d.py \\
        --workdir=runs/learned_cascade3d_32
    python -m experiments.export_pretrained \\
        --workdir=runs/learned_cascade3d_32 --name=learned_cascade3d_32 \\
        --card=MODEL_CARD.md --which=latest

The shipped model against the cascade's front (``--model`` of a workdir
loads its best checkpoint by the validation median instead):

    python -m experiments.benchmark --what=front \\
        --model=learned_cascade3d_32 --data=data/gw3d32/test \\
        --front_batch=64 --front_repeats=21
"""

import ml_collections

from experiments.configs import gaussian3d


def get_config() -> ml_collections.ConfigDict:
  """Returns the 3-D learned-cascade config (32^3, label-free)."""
  config = gaussian3d.get_config()
  config.loss.unlabelled_objective = "log_residual"
  config.loss.residual_power = 0.5
  config.loss.unlabelled_energy_weight = 200.0
  config.model.experts = "none"
  config.model.gate = "start_net"
  config.model.gate_hidden = (128,)
  config.model.gate_start_minima = True
  config.model.envelope_iters = 0
  config.model.envelope_start = 16
  config.model.envelope_start_iters = (1, 1)
  config.model.envelope_sweeps = (0, 4, 8)
  config.optim.weight_decay = 0.0
  config.train.num_steps = 20_000
  config.train.eval_every_steps = 2_500
  config.train.checkpoint_every_steps = 2_500
  return config
