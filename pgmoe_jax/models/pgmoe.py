r"""PG-MoE: a Physics-Guided Mixture-of-Experts for ground states.

The grid is cut into tiles (``tiles`` per axis). Per tile, an expert MLP sees
the tile's potential plus a ``halo`` of neighbouring points and predicts the
tile's log-amplitude; where the particle sits is a global question that no
local expert can answer, so a gate that sees the whole potential coarsely
supplies a smooth log-envelope. The state is

.. math:: \psi = \mathcal{N} \exp(g(x) + e_t(x)),\quad x \in \text{tile } t,

with ``g`` the gate's log-envelope interpolated to the fine grid and ``e_t``
expert ``t``'s correction; positive by construction and normalised per
DESIGN.md (``sum(psi**2) prod(h) = 1``).

Gates (``gate``):

* ``"envelope"``: the ground state of the Hamiltonian on a coarse grid
  (``coarse`` points per axis, the potential averaged over blocks), solved
  exactly inside the model with ``eigh``. No parameters; it also gives an
  energy estimate ``E_c``, and each expert sees its tile's ``(V - E_c)``:
  given E the local problem ``-1/2 Lap psi + (V - E) psi = 0`` is local.
* ``"mlp"``: a small network on the block-averaged potential that outputs the
  coarse log-envelope.
* ``"both"``: the envelope plus the network's learned correction.

Experts: separate parameters stacked on a leading tile axis and applied with
``nn.vmap`` (a batched matmul per layer), or ``shared_expert=True``: one
network for all tiles, told which tile by a learned embedding, with the tile
axis folded into the batch. Experts start near zero, so an untrained model
is its gate's envelope.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import solvers
from pgmoe_jax.grid import Grid
from pgmoe_jax.models import common

GATES = ("envelope", "mlp", "both")


def _per_axis(value, grid: Grid, name: str) -> tuple[int, ...]:
  values = (value,) * grid.ndim if np.ndim(value) == 0 else tuple(value)
  if len(values) != grid.ndim:
    raise ValueError(f"PG-MoE {name}={value!r} needs one value or one per "
                     f"axis ({grid.ndim}).")
  return tuple(int(v) for v in values)


def _tile_indices(shape, tiles, halo):
  """Gather and scatter indices for tiles with a halo.

  Returns:
    ``gather (T, P)``: flat indices into the grid padded by ``halo`` on every
    side, one row per tile listing its patch (tile plus halo) in C order;
    ``scatter (N,)``: for each flat fine-grid point, its position in the
    flattened ``(T, S)`` array of tile outputs (S points per tile).
  """
  d = len(shape)
  size = [n // t for n, t in zip(shape, tiles)]
  padded = [n + 2 * halo for n in shape]
  tile_ids = list(np.ndindex(*tiles))
  patch = [np.arange(s + 2 * halo) for s in size]
  gather = []
  for tile in tile_ids:
    starts = [tile[a] * size[a] for a in range(d)]  # in padded coordinates
    coords = np.meshgrid(*[starts[a] + patch[a] for a in range(d)],
                         indexing="ij")
    gather.append(np.ravel_multi_index([c.ravel() for c in coords], padded))
  scatter = np.empty(math.prod(shape), np.int64)
  local = list(np.ndindex(*size))
  for t, tile in enumerate(tile_ids):
    for j, loc in enumerate(local):
      point = [tile[a] * size[a] + loc[a] for a in range(d)]
      scatter[np.ravel_multi_index(point, shape)] = t * len(local) + j
  return np.stack(gather), scatter


def _interpolation_matrix(n_fine: int, n_coarse: int, length: float,
                          boundary: str) -> np.ndarray:
  """Linear interpolation (with linear extrapolation at the ends)."""
  fine = Grid((n_fine,), length, boundary).coordinates()[0]
  coarse = Grid((n_coarse,), length, boundary).coordinates()[0]
  j = np.clip(np.searchsorted(coarse, fine) - 1, 0, n_coarse - 2)
  w = (fine - coarse[j]) / (coarse[j + 1] - coarse[j])
  out = np.zeros((n_fine, n_coarse))
  out[np.arange(n_fine), j] = 1 - w
  out[np.arange(n_fine), j + 1] = w
  return out


def _coarse_hamiltonian_parts(grid: Grid, coarse):
  """Dense kinetic matrix of the coarse grid, ``(C, C)`` with C = prod."""
  coarse_grid = Grid(coarse, grid.length, grid.boundary)
  kinetic = None
  for n, h in zip(coarse_grid.shape, coarse_grid.spacing):
    k1d = (np.eye(n) - 0.5 * np.eye(n, k=1) - 0.5 * np.eye(n, k=-1)) / h**2
    if grid.boundary == "periodic":
      k1d[0, -1] = k1d[-1, 0] = -0.5 / h**2
    kinetic = k1d if kinetic is None else (
        np.kron(kinetic, np.eye(n)) + np.kron(np.eye(kinetic.shape[0]), k1d))
  return kinetic


def _block_mean(x: jax.Array, grid: Grid, coarse) -> jax.Array:
  """Averages ``(b, *grid.shape)`` over blocks down to ``(b, *coarse)``."""
  shape = [x.shape[0]]
  for n, c in zip(grid.shape, coarse):
    shape += [c, n // c]
  x = x.reshape(shape)
  return x.mean(axis=tuple(range(2, 2 + 2 * grid.ndim, 2)))


def _apply_per_axis(x: jax.Array, matrices) -> jax.Array:
  """``x (b, c1, .., cd) -> (b, n1, .., nd)`` applying ``M_a (n_a, c_a)``."""
  for axis, m in enumerate(matrices, start=1):
    x = jnp.moveaxis(jnp.tensordot(x, m, axes=([axis], [1])), -1, axis)
  return x


def _squash(x: jax.Array, bound: float) -> jax.Array:
  """``bound * tanh(x / bound)``: identity near 0, smooth limit at +-bound."""
  if not bound:
    return x
  return bound * jnp.tanh(x / bound)


def _damping(excess: jax.Array) -> jax.Array:
  """1 where ``excess <= 1``, falling like ``excess^-2`` beyond."""
  return 1.0 / (1.0 + jax.nn.relu(excess - 1.0)**2)


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
    gate_hidden: hidden widths of the gate network (``"mlp"``, ``"both"``).
    potential_scale: potentials are divided by this (Hartree) for the
      networks.
    expert_init_scale: scale of the experts' last layer at initialisation.
    envelope_iters: 0 solves the coarse Hamiltonian exactly with a dense
      ``eigh`` (cost grows like coarse^(3d)); ``k > 0`` runs ``k`` iterations
      of the matrix-free LOBPCG of :mod:`pgmoe_jax.solvers` instead, which
      makes coarse grids of 16 or 32 per axis affordable.
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
  input_clip: float = 3.0
  correction_bound: float = 5.0
  damp_forbidden: bool = True

  def __post_init__(self):
    super().__post_init__()
    tiles = _per_axis(self.tiles, self.grid, "tiles")
    coarse = _per_axis(self.coarse, self.grid, "coarse")
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
    if self.halo < 0:
      raise ValueError(f"PG-MoE halo must be >= 0, got {self.halo}.")

  @property
  def tile_shape(self) -> tuple[int, ...]:
    tiles = _per_axis(self.tiles, self.grid, "tiles")
    return tuple(n // t for n, t in zip(self.grid.shape, tiles))

  @property
  def num_tiles(self) -> int:
    return math.prod(_per_axis(self.tiles, self.grid, "tiles"))

  def coarse_envelope(self, potential: jax.Array):
    """Ground state of the coarse-grid Hamiltonian (no parameters).

    Returns:
      ``(log_envelope (b, *coarse), energy (b,))``.
    """
    coarse = _per_axis(self.coarse, self.grid, "coarse")
    v = _block_mean(potential, self.grid, coarse)
    if self.envelope_iters > 0:
      coarse_grid = Grid(coarse, self.grid.length, self.grid.boundary)
      start = jnp.asarray(solvers.kinetic_modes(coarse_grid, 2), v.dtype)
      start = jnp.broadcast_to(start, (v.shape[0],) + start.shape)
      # tol = 0: always run envelope_iters iterations (fixed cost).
      energies, states, _, _ = solvers.lobpcg_batch(
          v, start, 0.0, coarse_grid, num_states=1,
          max_iters=int(self.envelope_iters))
      energies = energies[:, :1]
      ground = jnp.abs(states[:, 0])
    else:
      kinetic = jnp.asarray(_coarse_hamiltonian_parts(self.grid, coarse),
                            potential.dtype)
      h = kinetic + jax.vmap(jnp.diag)(v.reshape(v.shape[0], -1))
      energies, vectors = jnp.linalg.eigh(h)
      ground = jnp.abs(vectors[..., 0])
    # The coarse ground state is nodeless; the floor only guards log(0).
    log_env = jnp.log(ground + 1e-12 * jnp.max(ground, -1, keepdims=True))
    return (jax.lax.stop_gradient(log_env.reshape(v.shape)),
            jax.lax.stop_gradient(energies[..., 0]))

  @nn.compact
  def __call__(self, potential: jax.Array) -> jax.Array:
    """Predicts ground states.

    Args:
      potential: ``(b, *grid.shape)`` in Hartree.

    Returns:
      ``(b, *grid.shape)`` positive, normalised states.
    """
    common.check_potential(potential, self.grid)
    grid = self.grid
    b = potential.shape[0]
    coarse = _per_axis(self.coarse, grid, "coarse")
    scale = self.potential_scale

    # Gate: a coarse log-envelope and an energy estimate.
    if self.gate in ("envelope", "both"):
      log_env, e_est = self.coarse_envelope(potential)
    else:
      log_env = jnp.zeros((b,) + coarse, potential.dtype)
      e_est = jnp.zeros((b,), potential.dtype)
    if self.gate in ("mlp", "both"):
      pooled = _block_mean(potential, grid, coarse).reshape(b, -1) / scale
      learned = common.MLP(self.gate_hidden, math.prod(coarse),
                           last_init_scale=0.0 if self.gate == "both" else 1.0,
                           name="gate")(_squash(pooled, self.input_clip))
      learned = _squash(learned, self.correction_bound)
      if self.damp_forbidden:
        excess = (_block_mean(potential, grid, coarse).reshape(b, -1)
                  - e_est[:, None]) / scale
        learned = learned * _damping(excess)
      log_env = log_env + learned.reshape((b,) + coarse)
    interp = [jnp.asarray(_interpolation_matrix(n, c, a, grid.boundary),
                          potential.dtype)
              for n, c, a in zip(grid.shape, coarse, grid.length)]
    base = _apply_per_axis(log_env, interp)  # (b, *grid.shape)

    # Experts: per tile, (V - E)/scale and the envelope around it.
    gather, scatter = _tile_indices(grid.shape, _per_axis(self.tiles, grid,
                                                          "tiles"), self.halo)
    pad = [(0, 0)] + [(self.halo, self.halo)] * grid.ndim
    shifted = (potential - e_est.reshape((b,) + (1,) * grid.ndim)) / scale
    # Beyond a Dirichlet wall V is infinite; a large value stands for it.
    wall = 10.0 if grid.boundary == "dirichlet" else 0.0
    v_pad = jnp.pad(shifted, pad, constant_values=wall) if (
        grid.boundary == "dirichlet") else jnp.pad(shifted, pad, mode="wrap")
    env_pad = jnp.pad(base, pad, mode="edge") if (
        grid.boundary == "dirichlet") else jnp.pad(base, pad, mode="wrap")
    v_tiles = _squash(v_pad.reshape(b, -1)[:, gather], self.input_clip)
    env_tiles = env_pad.reshape(b, -1)[:, gather]
    env_tiles = env_tiles - env_tiles.mean(-1, keepdims=True)
    features = jnp.concatenate([v_tiles, env_tiles], axis=-1)
    out_size = math.prod(self.tile_shape)
    if self.shared_expert:
      embedding = self.param("tile_embedding", nn.initializers.normal(1.0),
                             (self.num_tiles, self.embedding_dim))
      features = jnp.concatenate(
          [features, jnp.broadcast_to(embedding, (b,) + embedding.shape)], -1)
      expert = common.MLP(self.expert_hidden, out_size,
                          last_init_scale=self.expert_init_scale,
                          name="expert")
      correction = expert(features.reshape(b * self.num_tiles, -1))
      correction = correction.reshape(b, self.num_tiles, out_size)
    else:
      experts = nn.vmap(
          common.MLP, variable_axes={"params": 0},
          split_rngs={"params": True}, in_axes=1, out_axes=1,
          axis_size=self.num_tiles)(self.expert_hidden, out_size,
                                    last_init_scale=self.expert_init_scale,
                                    name="experts")
      correction = experts(features)
    correction = _squash(correction, self.correction_bound)
    correction = correction.reshape(b, -1)[:, scatter].reshape(potential.shape)
    if self.damp_forbidden:
      correction = correction * _damping(shifted)

    log_psi = base + correction
    log_psi = log_psi - jnp.max(log_psi, axis=grid.axes, keepdims=True)
    return common.normalize(jnp.exp(log_psi), grid)
