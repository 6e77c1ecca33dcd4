r"""PG-MoE: a Physics-Guided Mixture-of-Experts for ground states.

The grid is cut into tiles (``tiles`` per axis). Per tile, an expert MLP sees
the tile's potential plus a ``halo`` of neighbouring points and predicts the
tile's log-amplitude; where the particle sits is a global question that no
local expert can answer, so a gate that sees the whole potential coarsely
supplies a smooth log-envelope. The state is

.. math:: \psi = \mathcal{N} \exp(g(x) + e_t(x)),\quad x \in \text{tile } t,

with ``g`` the gate's log-envelope interpolated to the fine grid and ``e_t``
expert ``t``'s correction; positive by construction and normalised so
that ``sum(psi**2) prod(h) = 1``.

Gates (``gate``, :mod:`pgmoe_jax.models.gates`):

* ``"envelope"``: the ground state of the Hamiltonian on a coarse grid
  (``coarse`` points per axis, the potential averaged over blocks), solved
  inside the model. No parameters; it also gives an energy estimate
  ``E_c``, and each expert sees its tile's ``(V - E_c)``: given E the
  problem ``-1/2 Lap psi + (V - E) psi = 0`` is local.
* ``"mlp"``: a small network on the block-averaged potential that outputs the
  coarse log-envelope.
* ``"both"``: the envelope plus the network's learned correction.

Experts (:mod:`pgmoe_jax.models.experts`): separate parameters stacked on a
leading tile axis and applied with ``nn.vmap``, or ``shared_expert=True``:
one network for all tiles, told which tile by a learned embedding. Experts
start near zero, so an untrained model is its gate's envelope, and
``model.apply(variables, V, use_experts=False)`` is exactly the gate's
envelope for a trained one (the ablation).

Parameter names (``gate``, ``expert`` with ``tile_embedding``, or
``experts``) sit at the top of the parameter tree: the gate and expert
modules share the model's scope, so checkpoints of every release load.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.grid import Grid
from pgmoe_jax.models import common
from pgmoe_jax.models import experts as experts_lib
from pgmoe_jax.models import gates
from pgmoe_jax.models import tiling
from pgmoe_jax.sharding import constrain_space
from pgmoe_jax.variational import normalize_unchecked

GATES = ("envelope", "mlp", "both")
# Beyond a Dirichlet wall V is infinite; the experts' padded input stands for
# it with this value of (V - E) / potential_scale (3.3x the input clip, so
# it saturates the squashed input like any wall far above the energy).
DIRICHLET_WALL = 10.0


class PGMoE(nn.Module):
  """Physics-Guided Mixture-of-Experts (see the module docstring).

  Attributes:
    grid: the grid.
    tiles: tiles per axis (one number or one per axis); must divide the grid.
    halo: extra grid points each expert sees beyond its tile on every side.
    expert_hidden: hidden widths of each expert MLP.
    shared_expert: one expert for all tiles plus a tile embedding, instead of
      separate experts.
    embedding_dim: size of the tile embedding (shared expert only).
    gate: ``"envelope"``, ``"mlp"`` or ``"both"``.
    coarse: coarse grid points per axis for the gate; must divide the grid.
      0 is the full grid: the gate's physics solve runs at full resolution
      (with ``envelope_iters > 0`` a fixed number of iterations).
    gate_hidden: hidden widths of the gate network (``"mlp"``, ``"both"``).
    potential_scale: potentials are divided by this (Hartree) for the
      networks.
    expert_init_scale: scale of the experts' last layer at initialisation.
    envelope_iters: 0 solves the coarse Hamiltonian exactly with a dense
      ``eigh`` (cost grows like coarse^(3d)); ``k > 0`` runs ``k`` iterations
      of the matrix-free LOBPCG of :mod:`pgmoe_jax.solvers.lobpcg` instead,
      which makes coarse grids of 16 or 32 per axis affordable.
    envelope_solver: with ``envelope_iters > 0``, ``"lobpcg"`` (the
      vmapped JAX LOBPCG with a 2-vector block; the default, so models
      trained before 0.3 predict what they always did) or ``"fixed"`` (a
      batched single-vector LOBPCG built for throughput, about 4x faster per
      iteration: :mod:`pgmoe_jax.solvers.fixed_iters`).
    envelope_start: 0: the gate's iterations start from the kinetic
      operator's lowest mode; ``s > 0`` (one number or one per axis,
      dividing the gate's grid): coarse-to-fine, they start from the ground
      state on an ``s``-point grid, interpolated (``envelope_solver=
      "fixed"`` only). The start grid finds the right well cheaply, so
      fewer gate iterations reach the same envelope error.
    envelope_start_iters: iterations of the fixed-cost solver on the start
      grid (0: an exact dense ``eigh`` there), or one count per level,
      coarsest first, for a chain of start grids that halve per axis below
      ``envelope_start`` (``(4, 2)`` with ``envelope_start=32`` on a 64x64
      gate: 4 iterations at 16x16, 2 at 32x32, then ``envelope_iters`` at
      64x64).
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
  grid: Grid
  tiles: int | Sequence[int] = 4
  halo: int = 2
  expert_hidden: Sequence[int] = (64, 64)
  shared_expert: bool = True
  embedding_dim: int = 8
  gate: str = "envelope"
  coarse: int | Sequence[int] = 8
  gate_hidden: Sequence[int] = (64,)
  potential_scale: float = 10.0
  expert_init_scale: float = 0.01
  envelope_iters: int = 0
  envelope_solver: str = "lobpcg"
  envelope_start: int | Sequence[int] = 0
  envelope_start_iters: int | Sequence[int] = 6
  input_clip: float = 3.0
  correction_bound: float = 5.0
  damp_forbidden: bool = True

  def __post_init__(self):
    super().__post_init__()
    tiles = tiling.per_axis(self.tiles, self.grid, "tiles")
    coarse = self.coarse_shape
    for n, t, c in zip(self.grid.shape, tiles, coarse):
      if t < 1 or n % t:
        raise ValueError(f"PG-MoE tiles={self.tiles!r} must divide the grid "
                         f"{self.grid.shape} on every axis.")
      if c < 2 or n % c:
        raise ValueError(f"PG-MoE coarse={self.coarse!r} must divide the grid "
                         f"{self.grid.shape} on every axis (and be >= 2).")
    if self.gate not in GATES:
      raise ValueError(f"Unknown gate {self.gate!r}; known gates: "
                       f"{', '.join(GATES)}.")
    if self.envelope_solver not in gates.ENVELOPE_SOLVERS:
      raise ValueError(f"Unknown envelope_solver {self.envelope_solver!r}; "
                       f"known: {', '.join(gates.ENVELOPE_SOLVERS)}.")
    if self.halo < 0:
      raise ValueError(f"PG-MoE halo must be >= 0, got {self.halo}.")
    # The gate checks its start grid when built (a flax submodule is built
    # lazily): build one here so a bad config fails at construction.
    gates.EnvelopeGate(self.grid, coarse, int(self.envelope_iters),
                       self.envelope_solver, self.start_shape,
                       self.start_iters, parent=None)

  @property
  def coarse_shape(self) -> tuple[int, ...]:
    """The gate's grid per axis (``coarse=0``: the full grid)."""
    if np.ndim(self.coarse) == 0 and int(self.coarse) == 0:
      return self.grid.shape
    return tiling.per_axis(self.coarse, self.grid, "coarse")

  @property
  def start_shape(self) -> tuple[int, ...] | None:
    """The gate's start grid per axis, or ``None`` (no coarse start)."""
    if np.ndim(self.envelope_start) == 0 and int(self.envelope_start) == 0:
      return None
    start = self.envelope_start
    if np.ndim(start) == 0:
      start = (int(start),) * self.grid.ndim
    if len(start) != self.grid.ndim:
      raise ValueError(
          f"PG-MoE envelope_start={self.envelope_start!r} needs one number "
          f"or {self.grid.ndim} (one per axis).")
    return tuple(int(s) for s in start)

  @property
  def start_iters(self) -> int | tuple[int, ...]:
    """``envelope_start_iters`` as an int or a tuple (hashable)."""
    iters = self.envelope_start_iters
    return int(iters) if np.ndim(iters) == 0 else tuple(int(k) for k in iters)

  @property
  def tile_shape(self) -> tuple[int, ...]:
    tiles = tiling.per_axis(self.tiles, self.grid, "tiles")
    return tuple(n // t for n, t in zip(self.grid.shape, tiles))

  @property
  def num_tiles(self) -> int:
    return math.prod(tiling.per_axis(self.tiles, self.grid, "tiles"))

  def setup(self):
    coarse = self.coarse_shape
    self.envelope = gates.EnvelopeGate(
        self.grid, coarse, int(self.envelope_iters), self.envelope_solver,
        self.start_shape, self.start_iters)
    if self.gate == "envelope":
      self.gate_module = self.envelope
    else:
      self.gate_module = gates.LearnedGate(
          self.grid, coarse, tuple(self.gate_hidden), self.potential_scale,
          self.input_clip, self.correction_bound, self.damp_forbidden,
          base=self.envelope if self.gate == "both" else None)
      nn.share_scope(self, self.gate_module)
    out_size = math.prod(self.tile_shape)
    if self.shared_expert:
      self.expert_module = experts_lib.SharedExperts(
          self.num_tiles, tuple(self.expert_hidden), out_size,
          self.embedding_dim, self.expert_init_scale)
    else:
      self.expert_module = experts_lib.StackedExperts(
          self.num_tiles, tuple(self.expert_hidden), out_size,
          self.expert_init_scale)
    nn.share_scope(self, self.expert_module)

  def coarse_envelope(self, potential: jax.Array):
    """The physics envelope alone: ``(log_envelope (b, *coarse), E_c (b,))``.

    The coarse Hamiltonian's ground state whatever ``gate`` is (for timing
    the physics gate, and for inspection).
    """
    return tuple(self.envelope(potential))

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
    common.check_potential(potential, self.grid)
    grid = self.grid
    b = potential.shape[0]
    coarse = self.coarse_shape
    scale = self.potential_scale

    log_env, e_est = self.gate_module(potential)
    if e_est is None:
      e_est = jnp.zeros((b,), potential.dtype)
    if tuple(coarse) == grid.shape:
      base = log_env  # the full-grid gate: interpolation is the identity
    else:
      base = tiling.interpolate(log_env, grid)  # (b, *grid.shape)
    # Under a spatially sharded mesh: split like the potential (a no-op
    # otherwise, pgmoe_jax.sharding).
    base = constrain_space(base, grid.ndim)
    if not use_experts:
      return _to_state(base, grid)

    # Experts: per tile, (V - E)/scale and the envelope around it.
    tiles = tiling.per_axis(self.tiles, grid, "tiles")
    shifted = (potential - e_est.reshape((b,) + (1,) * grid.ndim)) / scale
    v_mode, env_mode = (("constant", "edge") if grid.boundary == "dirichlet"
                        else ("wrap", "wrap"))
    # Squashed on the grid, before the tiles copy points into halos (the
    # same values; the wall beyond a Dirichlet edge squashed alike).
    wall = common.squash(jnp.asarray(DIRICHLET_WALL, shifted.dtype),
                         self.input_clip)
    v_tiles = self._tiles(common.squash(shifted, self.input_clip), tiles,
                          v_mode, wall)
    env_tiles = self._tiles(base, tiles, env_mode)
    env_tiles = env_tiles - env_tiles.mean(-1, keepdims=True)
    # Two feature blocks (b, T, P) the experts' first layer takes apart (no
    # concatenated copy): tiles in C order, split like the grid's first
    # axis under a spatially sharded mesh (a no-op otherwise).
    features = [constrain_space(v_tiles, 2), constrain_space(env_tiles, 2)]
    correction = common.squash(
        constrain_space(self.expert_module(features), 2),
        self.correction_bound)
    correction = tiling.merge_tiles(correction, tiles, self.tile_shape)
    if self.damp_forbidden:
      correction = correction * common.damping(shifted)
    return _to_state(base + correction, grid)

  def _tiles(self, x: jax.Array, tiles, mode: str,
             wall: float | jax.Array = DIRICHLET_WALL) -> jax.Array:
    """Each tile's patch of ``x (b, *grid.shape)`` and halo, ``(b, T, P)``.

    Beyond the grid the halo holds ``wall`` (``"constant"``), the edge
    value (``"edge"``) or the other side (``"wrap"``). Halos within a
    tile's size come from the neighbouring tiles (no padded copy of the
    grid; a spatially sharded grid exchanges only the halos); wider ones
    from a padded grid.
    """
    if self.halo <= min(self.tile_shape):
      return tiling.extract_tiles_with_halos(x, tiles, self.tile_shape,
                                             self.halo, mode, wall)
    pad = [(0, 0)] + [(self.halo, self.halo)] * self.grid.ndim
    kwargs = dict(constant_values=wall) if mode == "constant" else {}
    return tiling.extract_tiles(jnp.pad(x, pad, mode=mode, **kwargs), tiles,
                                self.tile_shape, self.halo)


def _to_state(log_psi: jax.Array, grid: Grid) -> jax.Array:
  """``exp(log_psi)`` normalised (shifted by its maximum against overflow)."""
  log_psi = log_psi - jnp.max(log_psi, axis=grid.axes, keepdims=True)
  return normalize_unchecked(jnp.exp(log_psi), grid)
