r"""PG-MoE gates: where the particle sits, from a coarse view of the potential.

Where the state lives is a global question no local expert can answer; a
gate answers it with a smooth log-envelope on a coarse grid. The contract
(:class:`Gate`): ``gate(V (b, *grid.shape)) -> GateOutput(log_envelope
(b, *coarse), energy)``, where ``energy`` (``(b,)``, Hartree) is the gate's
estimate of the ground-state energy, or ``None`` for a gate without one.

* :class:`EnvelopeGate`: the ground state of the Hamiltonian on the coarse
  grid (potential averaged over blocks), solved inside the model with a
  dense ``eigh`` or a fixed number of LOBPCG iterations; no parameters, and
  an energy estimate ``E_c``. Optionally coarse-to-fine: the iterations
  start from the ground state on an even coarser grid (``start``),
  interpolated, instead of from the kinetic operator's lowest mode; the
  levels follow :func:`pgmoe_jax.solvers.cascade`'s convention (0
  iterations at a level: interpolate only; an exact ``eigh`` on the
  coarsest level is a separate flag).
* :class:`~pgmoe_jax.models.learned_cascade.LearnedCascadeGate` (its own
  module): an :class:`EnvelopeGate`'s cascade with learned parts.
* :class:`LearnedGate`: a small network on the block-averaged potential that
  outputs the coarse log-envelope, on its own or as a bounded correction on
  top of an :class:`EnvelopeGate` (``base``).

Gates that have parameters keep them under the name ``"gate"``. Every gate
also says how many activation values per sample it keeps for the backward
pass beyond the grid-sized arrays (``activations_per_sample()``), which
the memory estimate of a run adds up.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import kinetic
from pgmoe_jax.grid import Grid
from pgmoe_jax.models import common
from pgmoe_jax.models import tiling
from pgmoe_jax.sharding import replicate_space
from pgmoe_jax.solvers.coarse_to_fine import cascade_unchecked
from pgmoe_jax.solvers.coarse_to_fine import check_sweeps
from pgmoe_jax.solvers.lobpcg import lobpcg_batch

ENVELOPE_SOLVERS = ("fixed", "lobpcg", "eigh")


class GateOutput(NamedTuple):
  """What a gate returns.

  Attributes:
    log_envelope: ``(b, *coarse)`` log-amplitude on the coarse grid.
    energy: ``(b,)`` estimate of the ground-state energy (Ha), or ``None``.
  """
  log_envelope: jax.Array
  energy: jax.Array | None


class Gate(Protocol):
  """The call contract of a gate (see the module docstring)."""

  def __call__(self, potential: jax.Array) -> GateOutput:
    ...


def log_envelope(ground: jax.Array) -> jax.Array:
  """``log |ground|`` per point, ``(b, *coarse)``.

  The coarse ground state is nodeless (its sign may flip only where it is
  a rounding error from 0); the floor, 1e-12 of each state's peak, only
  guards log(0).
  """
  flat = jnp.abs(ground).reshape(ground.shape[0], -1)
  flat = jnp.log(flat + 1e-12 * jnp.max(flat, -1, keepdims=True))
  return flat.reshape(ground.shape)


class EnvelopeGate(nn.Module):
  """The coarse Hamiltonian's ground state (no parameters).

  Attributes:
    grid: the fine grid.
    coarse: coarse points per axis (each divides the grid's).
    envelope_iters: iterations of the fixed-cost solver on the gate's grid
      (``solver`` ``"fixed"`` or ``"lobpcg"``): exactly ``k`` iterations,
      no data-dependent loop, which makes gates of 16 or 32 points per
      axis and more affordable. 0 (with a start grid only): the gate is
      the interpolated start alone. Not used with ``solver="eigh"``.
    solver: ``"eigh"``: the exact dense ``eigh`` of the coarse Hamiltonian
      (cost grows like coarse^(3d): cheap at 8x8, costly from 16x16 on);
      ``"fixed"``: the batched single-vector LOBPCG of
      :func:`pgmoe_jax.solvers.fixed_iters.ground_state_fixed`;
      ``"lobpcg"``: the vmapped JAX LOBPCG with a 2-vector block (the
      solver of models before 0.3), about 4x slower per iteration than
      ``"fixed"`` at a slightly faster convergence.
    start: ``None``: the iterations start from the kinetic operator's
      lowest mode; or points per axis of a start grid (each divides
      ``coarse`` and is smaller): the iterations start from the ground
      state there (potential averaged over blocks once more), linearly
      interpolated. The start grid finds the right well for a fraction of
      a fine iteration's cost, so fewer fine iterations reach the same
      energy and far fewer end in the wrong one of two near-degenerate
      wells. Needs ``solver="fixed"``.
    start_iters: iterations of the fixed-cost solver on the start grid,
      or one count per level, coarsest first, for a coarse-to-fine chain
      of start grids that halve per axis below ``start``: ``(4, 2)`` with
      ``start=(32, 32)`` runs 4 iterations on 16x16, interpolates, 2 on
      32x32, interpolates, then ``envelope_iters`` on the gate's grid. 0
      at a level: interpolate only; on the coarsest level 0 needs
      ``start_exact``.
    start_exact: solve the coarsest start level exactly by a dense
      ``eigh`` (cheap up to 8x8); its count in ``start_iters`` is then not
      used.
    sweeps: ``None``, or Chebyshev-Jacobi sweeps on each cascade level's
      interpolated start (:mod:`pgmoe_jax.solvers.smoothing`), one count
      per level (the start levels, then the gate's grid; the coarsest 0),
      as ``sweeps`` of :func:`pgmoe_jax.solvers.cascade`. Needs a start
      grid.
  """
  grid: Grid
  coarse: tuple[int, ...]
  envelope_iters: int | None = None
  solver: str = "eigh"
  start: tuple[int, ...] | None = None
  start_iters: int | tuple[int, ...] = 6
  start_exact: bool = False
  sweeps: tuple[int, ...] | None = None

  def __post_init__(self):
    super().__post_init__()
    self._check_solver_and_start()
    if self.sweeps is not None:
      if self.start is None:
        raise ValueError(
            f"envelope_sweeps={self.sweeps!r} smooths interpolated starts, "
            "but there is no start grid (envelope_start=None); set "
            "envelope_start, or envelope_sweeps=None.")
      try:
        check_sweeps(self.sweeps, len(self.start_levels) + 1)
      except ValueError as e:
        raise ValueError(f"envelope_sweeps: {e}") from None

  def _check_solver_and_start(self):
    if self.solver not in ENVELOPE_SOLVERS:
      raise ValueError(f"Unknown envelope_solver {self.solver!r}; known: "
                       f"{', '.join(ENVELOPE_SOLVERS)}.")
    iters = self.envelope_iters
    if self.solver != "eigh":
      if isinstance(iters, (bool, np.bool_)) or not isinstance(
          iters, (int, np.integer)) or iters < 0:
        raise ValueError(
            f"envelope_iters={iters!r} must be an integer >= 0 with "
            f"envelope_solver={self.solver!r}.")
      if iters == 0 and self.start is None:
        raise ValueError(
            f"envelope_iters=0 with envelope_solver={self.solver!r} and no "
            "start grid (envelope_start=None) leaves the gate at the "
            "kinetic operator's lowest mode, whatever the potential; for "
            "the exact dense eigh on the gate's grid use "
            "envelope_solver='eigh'.")
    if self.start is None:
      if self.start_exact:
        raise ValueError(
            "envelope_start_exact=True solves the coarsest start level "
            "exactly, but there is no start grid (envelope_start=None); "
            "set envelope_start, or envelope_solver='eigh' for the exact "
            "solve on the gate's grid.")
      return
    if self.solver != "fixed":
      raise ValueError(
          "A start grid (envelope_start) needs envelope_solver='fixed', "
          f"got {self.solver!r}.")
    start = tuple(self.start)
    if len(start) != len(self.coarse) or any(
        s < 3 or s >= c or c % s for s, c in zip(start, self.coarse)):
      raise ValueError(
          f"The start grid (envelope_start) {start} must divide the "
          f"gate's grid {tuple(self.coarse)} on every axis, be smaller and "
          ">= 3 (the stencil's minimum).")
    levels = self.start_levels
    if not levels or any(k < 0 for k in levels):
      raise ValueError(
          f"start_iters (envelope_start_iters) must be >= 0 per level (0: "
          f"interpolate only), got {self.start_iters}.")
    if levels[0] == 0 and not self.start_exact:
      raise ValueError(
          f"envelope_start_iters={self.start_iters}: 0 iterations on the "
          "coarsest start level would start the chain from the kinetic "
          "operator's lowest mode, whatever the potential; for an exact "
          "dense eigh there set envelope_start_exact=True (its count is "
          "then not used).")
    for shape in self._start_shapes()[:-1]:
      if any(s < 3 for s in shape):
        raise ValueError(
            f"{len(levels)} start levels halve the start grid {start} to "
            f"{shape}, below 3 points per axis (the stencil's minimum).")

  @property
  def start_levels(self) -> tuple[int, ...]:
    """Iterations per start level, coarsest first."""
    iters = self.start_iters
    if isinstance(iters, (int, np.integer)):
      return (int(iters),)
    return tuple(int(k) for k in iters)

  def _start_shapes(self) -> list[tuple[int, ...]]:
    """Points per axis of each start level, coarsest first."""
    levels = len(self.start_levels)
    shapes = []
    for i in range(levels):
      factor = 2**(levels - 1 - i)
      if any(s % factor for s in self.start):
        raise ValueError(
            f"{levels} start levels halve the start grid "
            f"{tuple(self.start)} {levels - 1} times: each axis must divide "
            f"by {factor}.")
      shapes.append(tuple(s // factor for s in self.start))
    return shapes

  @property
  def coarse_grid(self) -> Grid:
    return Grid(self.coarse, self.grid.length, self.grid.boundary)

  def __call__(self, potential: jax.Array) -> GateOutput:
    v = self.coarse_potential(potential)
    coarse_grid = self.coarse_grid
    if self.solver == "lobpcg":
      start = jnp.asarray(kinetic.kinetic_modes(coarse_grid, 2), v.dtype)
      start = jnp.broadcast_to(start, (v.shape[0],) + start.shape)
      # tol = 0: always run envelope_iters iterations (fixed cost).
      energies, states, _, _ = lobpcg_batch(
          v, start, 0.0, coarse_grid, num_states=1,
          max_iters=int(self.envelope_iters))
      energy, ground = energies[:, 0], states[:, 0]
    else:
      # The cascade: the start chain (if any), then the gate's grid;
      # "eigh" is its one level solved exactly.
      grids, iters = self.cascade_levels()
      energy, ground = cascade_unchecked(
          v, grids, iters, exact_coarsest=self.exact_coarsest,
          sweeps=self.sweeps)
    log_env = log_envelope(ground.reshape(v.shape))
    return GateOutput(jax.lax.stop_gradient(log_env),
                      jax.lax.stop_gradient(energy))

  def coarse_potential(self, potential: jax.Array) -> jax.Array:
    """The potential's block means on the gate's grid."""
    v = tiling.block_mean(potential, self.grid, self.coarse)
    if tuple(self.coarse) != self.grid.shape:
      # A coarse solve is small: whole on every space device (a no-op
      # without a spatially sharded mesh, pgmoe_jax.sharding).
      v = replicate_space(v)
    return v

  def activations_per_sample(self) -> int:
    """None beyond the grid-sized arrays: no parameters, no gradient."""
    return 0

  @property
  def exact_coarsest(self) -> bool:
    """Whether the cascade's coarsest level is a dense ``eigh``."""
    if self.solver == "eigh":
      return True
    return self.start is not None and bool(self.start_exact)

  def cascade_levels(self) -> tuple[tuple[Grid, ...], tuple[int, ...]]:
    """The gate's cascade (``solver`` ``"fixed"`` or ``"eigh"``): its
    levels (coarsest first) and iterations (a count of an exact level is
    not used)."""
    coarse_grid = self.coarse_grid
    if self.solver == "eigh":
      return (coarse_grid,), (0,)
    if self.start is None:
      return (coarse_grid,), (int(self.envelope_iters),)
    levels = tuple(Grid(shape, coarse_grid.length, coarse_grid.boundary)
                   for shape in self._start_shapes())
    return levels + (coarse_grid,), self.start_levels + (
        int(self.envelope_iters),)


class LearnedGate(nn.Module):
  """A network's coarse log-envelope, alone or correcting an envelope.

  Attributes:
    grid: the fine grid.
    coarse: coarse points per axis.
    hidden: hidden widths of the network.
    potential_scale: potentials are divided by this (Ha) for the network.
    input_clip: inputs squashed into ``(-input_clip, input_clip)``.
    correction_bound: the output squashed into ``(-bound, bound)``.
    damp_forbidden: damp the output where the coarse potential rises far
      above the energy estimate (see ``PGMoE``).
    base: an :class:`EnvelopeGate` to correct (its energy is passed on; the
      network then starts at exactly zero), or ``None``: the network alone.
  """
  grid: Grid
  coarse: tuple[int, ...]
  hidden: Sequence[int] = (64,)
  potential_scale: float = 10.0
  input_clip: float = 3.0
  correction_bound: float = 5.0
  damp_forbidden: bool = True
  base: EnvelopeGate | None = None

  def activations_per_sample(self) -> int:
    """The network's input, hidden layers and output."""
    return 2 * math.prod(self.coarse) + sum(int(h) for h in self.hidden)

  @nn.compact
  def __call__(self, potential: jax.Array) -> GateOutput:
    b = potential.shape[0]
    if self.base is not None:
      log_env, energy = self.base(potential)
    else:
      log_env = jnp.zeros((b,) + self.coarse, potential.dtype)
      energy = None
    scale = self.potential_scale
    pooled = tiling.block_mean(potential, self.grid, self.coarse).reshape(
        b, -1)
    learned = common.MLP(
        self.hidden, math.prod(self.coarse),
        last_init_scale=0.0 if self.base is not None else 1.0,
        name="gate")(common.squash(pooled / scale, self.input_clip))
    learned = common.squash(learned, self.correction_bound)
    if self.damp_forbidden:
      shift = jnp.zeros((b,), potential.dtype) if energy is None else energy
      learned = learned * common.damping((pooled - shift[:, None]) / scale)
    return GateOutput(log_env + learned.reshape((b,) + self.coarse), energy)
