r"""PG-MoE: a Physics-Guided Mixture-of-Experts for ground states.

The grid is cut into tiles (``tiles`` per axis). Per tile, an expert network
sees the tile's potential plus a ``halo`` of neighbouring points and
predicts the tile's log-amplitude; where the particle sits is a global
question that no local expert can answer, so a gate that sees the whole
potential coarsely supplies a smooth log-envelope. The state is

.. math:: \psi = \mathcal{N} \exp(g(x) + e_t(x)),\quad x \in \text{tile } t,

with ``g`` the gate's log-envelope interpolated to the fine grid and ``e_t``
expert ``t``'s correction; positive by construction and normalised so
that ``sum(psi**2) prod(h) = 1``.

The model is composed of modules, built from a config's names by
:func:`pgmoe_jax.models.build_model` (its ``GATES`` and ``EXPERTS``
registries):

* a gate (:mod:`pgmoe_jax.models.gates`, the
  :class:`~pgmoe_jax.models.gates.Gate` contract): ``gate(V) ->
  (log_envelope (b, *coarse), E or None)``. ``EnvelopeGate``: the ground
  state of the Hamiltonian on a coarse grid, solved inside the model (no
  parameters), and its energy ``E_c``; each expert then sees its tile's
  ``(V - E_c)``: given E the problem ``-1/2 Lap psi + (V - E) psi = 0`` is
  local. ``LearnedGate``: a small network on the block-averaged potential,
  alone or correcting an ``EnvelopeGate``.
* experts (:mod:`pgmoe_jax.models.experts`,
  :mod:`pgmoe_jax.models.conv_experts`): ``experts(patches (b, T, *patch,
  C)) -> (b, T, *tile)`` per-tile corrections, where the ``C = 2``
  channels are the squashed ``(V - E) / potential_scale`` and the
  envelope centred per patch.
* a :class:`~pgmoe_jax.models.tiling.Tiling`: the tiles, the halo, and
  the cut of a field into patches and the merge of the corrections.

Experts start near zero, so an untrained model is its gate's envelope, and
``model.apply(variables, V, use_experts=False)`` is exactly the gate's
envelope for a trained one (the ablation).

Parameter names (``gate``, ``expert`` with ``tile_embedding``, or
``experts``) sit at the top of the parameter tree: the gate and expert
modules share the model's scope (under the module names ``gate_module``
and ``expert_module``, which hold no parameters of their own), so
checkpoints of every release load.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgmoe_jax.grid import Grid
from pgmoe_jax.models import common
from pgmoe_jax.models import gates
from pgmoe_jax.models import tiling as tiling_lib
from pgmoe_jax.sharding import constrain_space
from pgmoe_jax.variational import normalize_unchecked

# Beyond a Dirichlet wall V is infinite; the experts' padded input stands for
# it with this value of (V - E) / potential_scale (3.3x the input clip, so
# it saturates the squashed input like any wall far above the energy).
DIRICHLET_WALL = 10.0


class PGMoE(nn.Module):
  """Physics-Guided Mixture-of-Experts (see the module docstring).

  Attributes:
    gate: the gate module (``gate(V) -> GateOutput``), e.g.
      :class:`~pgmoe_jax.models.gates.EnvelopeGate`.
    experts: the experts module (``experts(patches (b, T, *patch, C)) ->
      (b, T, *tile)`` or ``(b, T, S)``), e.g.
      :class:`~pgmoe_jax.models.experts.SharedExperts`; ``None``: none,
      the state is the gate's envelope (a full-grid gate with a
      ``state(V)`` method gives it directly, without the log and exp).
    tiling: the tiles and the halo each expert sees.
    envelope: the physics envelope :meth:`coarse_envelope` returns; ``None``
      takes the gate itself, or the envelope it corrects (``gate.base``).
    potential_scale: potentials are divided by this (Hartree) for the
      networks.
    input_clip: scaled potentials enter the networks squashed smoothly into
      ``(-input_clip, input_clip)`` (``c tanh(x / c)``): far above the energy
      the state just decays, and a harmonic wall of 200 Ha must not drive the
      networks far outside what they were trained on.
    correction_bound: the learned log-amplitude corrections (experts and the
      gate network) are bounded the same way, so out of distribution the
      physics envelope still dominates. 0 disables either bound.
    damp_forbidden: multiply the learned corrections by
      ``1 / (1 + max(x - 1, 0)^2)`` with ``x = (V - E_c) / potential_scale``:
      deep in classically forbidden regions, beyond anything the training
      potentials showed, the state follows the physics envelope. Inside the
      training range (``x <= 1``) the factor is exactly 1.
  """
  gate: nn.Module
  experts: nn.Module | None
  tiling: tiling_lib.Tiling
  envelope: gates.EnvelopeGate | None = None
  potential_scale: float = 10.0
  input_clip: float = 3.0
  correction_bound: float = 5.0
  damp_forbidden: bool = True

  # Submodules passed in keep the names given here (flax names an adopted
  # module by its attribute otherwise): the gate and the experts share
  # this module's scope, where the names "gate" and "experts" belong to
  # their parameters.
  preserve_adopted_names = True

  def __post_init__(self):
    for field, name in (("gate", "gate_module"),
                        ("experts", "expert_module"),
                        ("envelope", "envelope")):
      module = getattr(self, field)
      if module is not None and module.parent is None and module.name is None:
        object.__setattr__(self, field, module.clone(name=name))
    super().__post_init__()

  @property
  def grid(self) -> Grid:
    return self.tiling.grid

  @property
  def coarse_shape(self) -> tuple[int, ...]:
    """The gate's grid per axis."""
    return tuple(self.gate.coarse)

  @property
  def tile_shape(self) -> tuple[int, ...]:
    return self.tiling.tile_shape

  @property
  def num_tiles(self) -> int:
    return self.tiling.num_tiles

  def setup(self):
    nn.share_scope(self, self.gate)
    if self.experts is not None:
      nn.share_scope(self, self.experts)

  def physics_envelope(self) -> gates.EnvelopeGate:
    """The module behind :meth:`coarse_envelope`."""
    if self.envelope is not None:
      return self.envelope
    if isinstance(self.gate, gates.EnvelopeGate):
      return self.gate
    base = getattr(self.gate, "base", None)
    if base is None:
      raise ValueError("This PG-MoE has no physics envelope: pass envelope= "
                       "(an EnvelopeGate) to use coarse_envelope.")
    return base

  def coarse_envelope(self, potential: jax.Array):
    """The physics envelope alone: ``(log_envelope (b, *coarse), E_c (b,))``.

    The coarse Hamiltonian's ground state whatever the gate is (for timing
    the physics gate, and for inspection).
    """
    return tuple(self.physics_envelope()(potential))

  def activations_per_sample(self) -> int:
    """Activation values per sample the gate and the experts keep for the
    backward pass (the grid-sized arrays are counted apart:
    :func:`pgmoe_jax.memory.training_estimate`)."""
    t = self.tiling
    count = _ask(self.gate)
    if self.experts is None:
      return count
    return count + _ask(self.experts,
                        (t.num_tiles,) + t.patch_shape + (NUM_CHANNELS,))

  def __call__(self, potential: jax.Array,
               use_experts: bool = True) -> jax.Array:
    """Predicts ground states.

    Args:
      potential: ``(b, *grid.shape)`` in Hartree.
      use_experts: ``False`` leaves the experts out: the state is the
        gate's envelope alone (the ablation of a trained model).

    Returns:
      ``(b, *grid.shape)`` positive, normalised states.
    """
    grid = self.grid
    common.check_potential(potential, grid)
    if (self.experts is None and hasattr(self.gate, "state")
        and tuple(self.gate.coarse) == grid.shape):
      # The gate's state itself (exp of its log-envelope, to rounding).
      return normalize_unchecked(self.gate.state(potential), grid)
    b = potential.shape[0]
    scale = self.potential_scale

    log_env, e_est = self.gate(potential)
    if e_est is None:
      e_est = jnp.zeros((b,), potential.dtype)
    if tuple(log_env.shape[1:]) == grid.shape:
      base = log_env  # the full-grid gate: interpolation is the identity
    else:
      base = tiling_lib.interpolate(log_env, grid)  # (b, *grid.shape)
    # Under a spatially sharded mesh: split like the potential (a no-op
    # otherwise, pgmoe_jax.sharding).
    base = constrain_space(base, grid.ndim)
    if not use_experts or self.experts is None:
      return _to_state(base, grid)

    # Experts: per tile, (V - E)/scale and the envelope around it.
    t = self.tiling
    shifted = (potential - e_est.reshape((b,) + (1,) * grid.ndim)) / scale
    v_mode, env_mode = (("constant", "edge") if grid.boundary == "dirichlet"
                        else ("wrap", "wrap"))
    # Squashed on the grid, before the tiles copy points into halos (the
    # same values; the wall beyond a Dirichlet edge squashed alike).
    wall = common.squash(jnp.asarray(DIRICHLET_WALL, shifted.dtype),
                         self.input_clip)
    v_patches = t.cut(common.squash(shifted, self.input_clip), v_mode, wall)
    env_patches = t.cut(base, env_mode)
    # The envelope centred per patch (its mean over the patch's points, in
    # C order).
    flat = env_patches.reshape(b, t.num_tiles, -1)
    env_patches = (flat - flat.mean(-1, keepdims=True)).reshape(
        env_patches.shape)
    # Channels last (b, T, *patch, C): tiles in C order, split like the
    # grid's first axis under a spatially sharded mesh (a no-op
    # otherwise).
    patches = _constrain_tiles(jnp.stack([v_patches, env_patches], -1))
    correction = common.squash(_constrain_tiles(self.experts(patches)),
                               self.correction_bound)
    correction = t.merge(correction)
    if self.damp_forbidden:
      correction = correction * common.damping(shifted)
    return _to_state(base + correction, grid)


# The experts' input channels: (V - E) / potential_scale and the envelope.
NUM_CHANNELS = 2


def _constrain_tiles(x: jax.Array) -> jax.Array:
  """``x (b, T, ...)`` with its tile axis split over the space devices."""
  return constrain_space(x, x.ndim - 1)


def _ask(module, *args) -> int:
  """A module's ``activations_per_sample(*args)``; a module that does not
  say counts its input alone (the experts) or nothing (a gate)."""
  method = getattr(module, "activations_per_sample", None)
  if method is not None:
    return int(method(*args))
  return math.prod(args[0]) if args else 0


def _to_state(log_psi: jax.Array, grid: Grid) -> jax.Array:
  """``exp(log_psi)`` normalised (shifted by its maximum against overflow)."""
  log_psi = log_psi - jnp.max(log_psi, axis=grid.axes, keepdims=True)
  return normalize_unchecked(jnp.exp(log_psi), grid)
