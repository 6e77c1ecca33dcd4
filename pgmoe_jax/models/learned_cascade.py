r"""A gate that is the physics cascade with learned parts.

:class:`LearnedCascadeGate` keeps the cost of an
:class:`~pgmoe_jax.models.gates.EnvelopeGate`'s cascade (its levels,
iterations, sweeps and transfers) and learns parts of it: the sweeps' step
sizes (a learned smoother, Chebyshev's steps at initialisation), the
coarsest level's start (a network's state, corrected by the iterations
that follow), and an extra Rayleigh-Ritz direction in the coarsest
level's iterations (a network's, which can only lower each iteration's
energy). It follows the gate contract of :mod:`pgmoe_jax.models.gates`.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import kinetic
from pgmoe_jax.models import common
from pgmoe_jax.models.gates import EnvelopeGate
from pgmoe_jax.models.gates import GateOutput
from pgmoe_jax.models.gates import log_envelope
from pgmoe_jax.multigrid import block_min
from pgmoe_jax.solvers.coarse_to_fine import cascade_unchecked
from pgmoe_jax.solvers.smoothing import chebyshev_steps


class LearnedCascadeGate(nn.Module):
  r"""The cascade of an :class:`EnvelopeGate` with learned parts.

  Three parts of ``base``'s cascade can be learned; the cost stays
  ``base``'s (the same sweeps, iterations and transfers) plus the
  networks' (the direction's also one more ``H`` application and a 4x4
  instead of a 3x3 Rayleigh-Ritz problem per iteration):

  * the sweeps' step sizes: the sweeps on each level's interpolated start
    become :func:`pgmoe_jax.solvers.smoothing.stepped_sweeps`, ``x <- x -
    s_k D^{-1} (H - \theta) x``, with one trained step size ``s_k`` per
    sweep (parameters ``"gate"``: the log step sizes of every level,
    coarsest first, initialised at the Chebyshev filter's); learned where
    ``base`` has sweeps;
  * the coarsest level's start (``start_hidden`` not ``None``): an MLP
    (parameters ``"gate_start"``) on that level's potential (its block
    means, less their mean, over ``potential_scale``, squashed into
    ``(-input_clip, input_clip)``) corrects the log of K's lowest mode,
    the cascade's own start there; the coarsest level's fixed-cost
    iterations then run from it (Rayleigh-Ritz steps: from any nodeless
    start, more iterations converge to the ground state); with
    ``start_minima`` the network also sees the minima of the gate's
    potential over the same blocks (scaled alike, less the block means'
    mean), where a block mean hides a narrow deep well;
  * an extra direction in the coarsest level's iterations
    (``direction_hidden`` not ``None``): an MLP (parameters
    ``"gate_direction"``) on that level's potential (scaled as above) and
    the current state (times the square root of the level's points, so
    its entries are of order 1) gives a fourth vector for every
    iteration's Rayleigh-Ritz step. Each iteration then ends no higher
    than the classical one from the same point, whatever the network
    outputs.

  The start network's last layer starts at zero and the steps at
  Chebyshev's, so an untrained gate without a direction network is
  ``base``'s cascade to rounding; the direction network's last layer
  starts small, not zero (a zero direction is dropped, and the norm of
  zero has no gradient). The state is differentiable in every parameter
  (through the coarse iterations too; their eigenvector gradient is that
  of the lowest Ritz pair), and the gate's energy is its state's
  Rayleigh quotient, an upper bound whatever the parameters.

  Attributes:
    base: the :class:`EnvelopeGate` (a ``"fixed"`` cascade; with a
      start grid for the start network) whose parts are learned.
    start_hidden: hidden widths of the start network, or ``None``: no
      network.
    potential_scale, input_clip: the networks' input scaling.
    direction_hidden: hidden widths of the direction network, or
      ``None``: no network.
    direction_init_scale: the direction network's last layer starts at
      this multiple of the usual initialisation.
    start_minima: whether the start network also sees the block minima.
  """
  base: EnvelopeGate
  start_hidden: Sequence[int] | None = None
  potential_scale: float = 10.0
  input_clip: float = 3.0
  direction_hidden: Sequence[int] | None = None
  direction_init_scale: float = 0.01
  start_minima: bool = False

  def __post_init__(self):
    super().__post_init__()
    if (self.start_hidden is None and self.direction_hidden is None
        and self.base.sweeps is None):
      raise ValueError(
          "gate='sweeps' learns the step sizes of the envelope's sweeps, "
          "but it has none (envelope_sweeps=None); set envelope_sweeps, "
          "e.g. (0, 4, 8) for a 16 -> 32 -> 64 chain.")
    if self.start_hidden is not None and (
        self.base.start is None or self.base.exact_coarsest):
      raise ValueError(
          "gate='start_net' (or 'start_ritz_net') starts the coarsest "
          "cascade level's iterations from a network's state: it needs a "
          "start grid (envelope_start) whose coarsest level is iterated, "
          "not solved exactly (envelope_start_exact=False).")
    if self.start_minima and self.start_hidden is None:
      raise ValueError(
          "gate_start_minima feeds block minima to the start network, "
          "which only gate='start_net' and 'start_ritz_net' have.")
    if self.direction_hidden is not None:
      _, iters = self.base.cascade_levels()
      if self.base.solver != "fixed" or self.base.exact_coarsest or not (
          iters[0]):
        raise ValueError(
            "gate='ritz_net' (or 'start_ritz_net') adds a network's "
            "direction to the coarsest cascade level's iterations: it "
            "needs envelope_solver='fixed' "
            "and iterations there (not an exact eigh, not 0 iterations); "
            f"the cascade's iterations per level are {iters}.")

  @property
  def coarse(self) -> tuple[int, ...]:
    return tuple(self.base.coarse)

  @property
  def sweeps(self) -> tuple[int, ...]:
    """Sweeps per cascade level (zeros where ``base`` has none)."""
    grids, _ = self.base.cascade_levels()
    return tuple(self.base.sweeps or (0,) * len(grids))

  def initial_log_steps(self) -> np.ndarray:
    """The Chebyshev filter's log step sizes, every level concatenated."""
    return np.concatenate([np.log(chebyshev_steps(n)) for n in self.sweeps])

  def activations_per_sample(self) -> int:
    """The state and its ``H x`` kept per sweep on each level, the start
    network's input, hidden layers and output, and per iteration of the
    coarsest level the direction network's and the direction's."""
    grids, _ = self.base.cascade_levels()
    count = 2 * sum(n * g.size for n, g in zip(self.sweeps, grids))
    if self.start_hidden is not None:
      count += (3 if self.start_minima else 2) * grids[0].size + sum(
          int(h) for h in self.start_hidden)
    if self.direction_hidden is not None:
      # Per iteration: the network's two inputs, hidden layers and output,
      # the direction made orthonormal and its H d.
      _, iters = self.base.cascade_levels()
      count += iters[0] * (5 * grids[0].size + sum(
          int(h) for h in self.direction_hidden))
    return count

  def __call__(self, potential: jax.Array) -> GateOutput:
    energy, ground = self.cascade(potential)
    return GateOutput(log_envelope(ground), jax.lax.stop_gradient(energy))

  def state(self, potential: jax.Array) -> jax.Array:
    """``|psi|`` of the cascade, ``(b, *coarse)``, not normalised: the
    log-envelope without the log (a model without experts takes it
    directly, sparing a log and an exp per point)."""
    return jnp.abs(self.cascade(potential)[1])

  def _features(self, vc: jax.Array,
                extra: jax.Array | None = None) -> jax.Array:
    """The networks' input: ``vc``'s points (then ``extra``'s, of the same
    shape) less the mean of ``vc``'s, over ``potential_scale``, squashed
    into ``(-input_clip, input_clip)``, ``(b, points)`` (``2 points``)."""
    flat = vc.reshape(vc.shape[0], -1)
    mean = jnp.mean(flat, -1, keepdims=True)
    if extra is not None:
      flat = jnp.concatenate([flat, extra.reshape(flat.shape)], -1)
    return common.squash((flat - mean) / self.potential_scale,
                         self.input_clip)

  @nn.compact
  def cascade(self, potential: jax.Array):
    """``(energies (b,), states (b, *coarse))`` of the learned cascade."""
    base = self.base
    grids, iters = base.cascade_levels()
    fine = base.coarse_potential(potential)
    steps = None
    if any(self.sweeps):
      log_steps = self.param(
          "gate", lambda key, shape: jnp.asarray(self.initial_log_steps()),
          (sum(self.sweeps),))
      all_steps = jnp.exp(log_steps).astype(potential.dtype)
      bounds = np.cumsum((0,) + self.sweeps)
      steps = [all_steps[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    start_fn = None
    if self.start_hidden is not None:
      network = common.MLP(tuple(self.start_hidden), grids[0].size,
                           last_init_scale=0.0, name="gate_start")
      log_mode = np.log(np.abs(kinetic.kinetic_modes(grids[0], 1)[0]))
      minima = (block_min(fine, grids[-1], grids[0].shape)
                if self.start_minima else None)

      def network_start(vc):
        out = network(self._features(vc, minima))
        log_start = jnp.asarray(log_mode, vc.dtype) + out.reshape(vc.shape)
        # (the largest entry 1: exp never overflows)
        return jnp.exp(log_start - jnp.max(log_start, axis=grids[0].axes,
                                           keepdims=True))
      start_fn = network_start
    direction_fns = None
    if self.direction_hidden is not None:
      direction_net = common.MLP(
          tuple(self.direction_hidden), grids[0].size,
          last_init_scale=self.direction_init_scale, name="gate_direction")
      root = math.sqrt(grids[0].size)

      def network_direction(vc):
        features = self._features(vc)  # once per forward pass

        def direction(x):
          return direction_net(
              [features, root * x.reshape(x.shape[0], -1)]).reshape(x.shape)
        return direction
      direction_fns = (network_direction,) + (None,) * (len(grids) - 1)
    return cascade_unchecked(
        fine, grids, iters,
        exact_coarsest=base.exact_coarsest, sweeps=base.sweeps, steps=steps,
        start_fn=start_fn, direction_fns=direction_fns)
