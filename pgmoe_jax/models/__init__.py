"""Models from potentials to ground states: ``V (b, *grid) -> psi (b, *grid)``.

Every model is a flax linen module whose ``__call__(V)`` returns positive,
normalised states (``sum(psi**2) * prod(h) = 1``). :func:`build_model` makes
one from the ``model`` section of a config; :func:`count_params` counts a
parameter pytree.

* ``dense``: the monolithic baseline (flattened V -> MLP -> n^d values).
* ``pgmoe``: the Physics-Guided Mixture-of-Experts,
  :class:`~pgmoe_jax.models.pgmoe.PGMoE` composed of a gate, experts and a
  :class:`~pgmoe_jax.models.tiling.Tiling`. The config section is flat
  (:class:`PGMoEConfig`); its ``gate`` and ``experts`` names pick the
  modules from :data:`GATES` and :data:`EXPERTS`, here and nowhere else: a
  new gate or experts kind is a module with a factory
  ``make(config: PGMoEConfig, ...) -> module`` and one registry line.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from pgmoe_jax.grid import Grid
from pgmoe_jax.models import conv_experts
from pgmoe_jax.models import experts as experts_lib
from pgmoe_jax.models import gates
from pgmoe_jax.models import tiling
from pgmoe_jax.models.dense import Dense
from pgmoe_jax.models.learned_cascade import LearnedCascadeGate
from pgmoe_jax.models.pgmoe import PGMoE


@dataclasses.dataclass(frozen=True)
class PGMoEConfig:
  """The fields of a ``pgmoe`` config section.

  experiments/configs/default.py documents each; its model section and
  these defaults are one set (tests/test_configs.py checks it). A
  ``config.json`` written by an older version, with fewer fields or the
  old 0-encodings, is read through
  :func:`pgmoe_jax.rundir.legacy.upgrade_model_section`.

  ``gate`` names a factory in :data:`GATES`, ``experts`` one in
  :data:`EXPERTS`; the other fields are read by the factories (and the
  model's own ``potential_scale``, ``input_clip``, ``correction_bound``,
  ``damp_forbidden``). ``None`` means "off": ``coarse=None`` the gate on
  the full grid, ``envelope_start=None`` no start grid,
  ``envelope_sweeps=None`` no sweeps.
  """
  tiles: int | Sequence[int] = 4
  halo: int = 2
  experts: str = "mlp"
  expert_hidden: Sequence[int] = (64, 64)
  shared_expert: bool = True
  embedding_dim: int = 8
  gate: str = "envelope"
  coarse: int | Sequence[int] | None = 16
  gate_hidden: Sequence[int] = (64,)
  gate_start_minima: bool = False
  potential_scale: float = 10.0
  expert_init_scale: float = 0.01
  envelope_iters: int | None = 6
  envelope_solver: str = "fixed"
  envelope_start: int | Sequence[int] | None = None
  envelope_start_iters: int | Sequence[int] = (6,)
  envelope_start_exact: bool = False
  envelope_sweeps: Sequence[int] | None = None
  input_clip: float = 3.0
  correction_bound: float = 5.0
  damp_forbidden: bool = True

  def coarse_shape(self, grid: Grid) -> tuple[int, ...]:
    """The gate's grid per axis (``coarse=None``: the full grid), checked."""
    if self.coarse is None:
      return grid.shape
    if 0 in np.ravel(self.coarse).tolist():
      raise ValueError(
          f"PG-MoE coarse={self.coarse!r}: 0 is not a grid size; use "
          "coarse=None for the full grid.")
    coarse = tiling.per_axis(self.coarse, grid, "coarse")
    if any(c < 2 or n % c for n, c in zip(grid.shape, coarse)):
      raise ValueError(f"PG-MoE coarse={self.coarse!r} must divide the grid "
                       f"{grid.shape} on every axis (and be >= 2).")
    return coarse

  def start_shape(self, grid: Grid) -> tuple[int, ...] | None:
    """The gate's start grid per axis, or ``None`` (no start grid)."""
    start = self.envelope_start
    if start is None:
      return None
    if 0 in np.ravel(start).tolist():
      raise ValueError(
          f"PG-MoE envelope_start={start!r}: 0 is not a grid size; use "
          "envelope_start=None for no start grid.")
    if np.ndim(start) == 0:
      start = (int(start),) * grid.ndim
    if len(start) != grid.ndim:
      raise ValueError(
          f"PG-MoE envelope_start={self.envelope_start!r} needs one number "
          f"or {grid.ndim} (one per axis).")
    return tuple(int(s) for s in start)

  def start_iters(self) -> int | tuple[int, ...]:
    """``envelope_start_iters`` as an int or a tuple (hashable)."""
    iters = self.envelope_start_iters
    return int(iters) if np.ndim(iters) == 0 else tuple(int(k) for k in iters)

  def sweeps(self) -> tuple[int, ...] | None:
    """``envelope_sweeps`` as a tuple (hashable), or ``None``."""
    sweeps = self.envelope_sweeps
    if sweeps is None:
      return None
    if np.ndim(sweeps) == 0:
      raise ValueError(
          f"PG-MoE envelope_sweeps={sweeps!r} needs one count per cascade "
          "level (the start levels, then the gate's grid), coarsest first, "
          "or None for no sweeps.")
    return tuple(sweeps)


def make_envelope(config: PGMoEConfig, grid: Grid) -> gates.EnvelopeGate:
  """The physics envelope of ``config`` (built, so its fields are checked)."""
  return gates.EnvelopeGate(grid, config.coarse_shape(grid),
                            config.envelope_iters, config.envelope_solver,
                            config.start_shape(grid), config.start_iters(),
                            config.envelope_start_exact, config.sweeps())


def make_learned_gate(config: PGMoEConfig, grid: Grid,
                      base: gates.EnvelopeGate | None) -> gates.LearnedGate:
  """The gate network of ``config``, alone or correcting ``base``."""
  return gates.LearnedGate(
      grid, config.coarse_shape(grid), tuple(config.gate_hidden),
      config.potential_scale, config.input_clip, config.correction_bound,
      config.damp_forbidden, base=base)


# Gate name -> factory(config, grid, envelope) -> the gate module; envelope
# is the config's EnvelopeGate (what a gate may correct).
GATES: dict[str, Callable[..., Any]] = {
    "envelope": lambda config, grid, envelope: envelope,
    "mlp": lambda config, grid, envelope: make_learned_gate(config, grid,
                                                            None),
    "both": make_learned_gate,
    "sweeps": lambda config, grid, envelope: LearnedCascadeGate(envelope),
    "start_net": lambda config, grid, envelope: LearnedCascadeGate(
        envelope, tuple(config.gate_hidden), config.potential_scale,
        config.input_clip, start_minima=bool(config.gate_start_minima)),
    "ritz_net": lambda config, grid, envelope: LearnedCascadeGate(
        envelope, None, config.potential_scale, config.input_clip,
        direction_hidden=tuple(config.gate_hidden)),
    "start_ritz_net": lambda config, grid, envelope: LearnedCascadeGate(
        envelope, tuple(config.gate_hidden), config.potential_scale,
        config.input_clip, direction_hidden=tuple(config.gate_hidden),
        start_minima=bool(config.gate_start_minima)),
}

# The gates with a start network (where gate_start_minima applies).
START_NET_GATES = ("start_net", "start_ritz_net")


def make_mlp_experts(config: PGMoEConfig, tiles: tiling.Tiling):
  """MLP experts: one shared with a tile embedding, or one per tile."""
  if config.shared_expert:
    return experts_lib.SharedExperts(
        tiles.num_tiles, tuple(config.expert_hidden), tiles.tile_size,
        config.embedding_dim, config.expert_init_scale)
  return experts_lib.StackedExperts(
      tiles.num_tiles, tuple(config.expert_hidden), tiles.tile_size,
      config.expert_init_scale)


# Experts name -> factory(config, tiling) -> the experts module.
EXPERTS: dict[str, Callable[..., Any]] = {
    "mlp": make_mlp_experts,
    "conv": conv_experts.make_conv_experts,
    # The gate alone: no experts, no tiles cut (a gate with parameters, or
    # a parameter-free model to compare against).
    "none": lambda config, tiles: None,
}


def build_pgmoe(config: PGMoEConfig, grid: Grid) -> PGMoE:
  """The PG-MoE of a flat config: its gate, experts and tiling.

  Raises:
    ValueError: an unknown gate, experts or envelope solver name, tiles
      or coarse grids that do not divide the grid, a bad halo or gate
      start, or a 0 where ``None`` or an exact-solve flag is the spelling
      (the message names it).
  """
  if config.gate not in GATES:
    raise ValueError(f"Unknown gate {config.gate!r}; known gates: "
                     f"{', '.join(GATES)}.")
  if config.experts not in EXPERTS:
    raise ValueError(f"Unknown experts {config.experts!r}; known experts: "
                     f"{', '.join(EXPERTS)}.")
  if config.gate_start_minima and config.gate not in START_NET_GATES:
    raise ValueError(
        "gate_start_minima feeds block minima to the start network of "
        f"gate={' or '.join(map(repr, START_NET_GATES))}; "
        f"gate={config.gate!r} has none (set gate_start_minima=False).")
  tiles = tiling.Tiling(grid, config.tiles, config.halo)
  envelope = make_envelope(config, grid)
  return PGMoE(gate=GATES[config.gate](config, grid, envelope),
               experts=EXPERTS[config.experts](config, tiles),
               tiling=tiles, envelope=envelope,
               potential_scale=config.potential_scale,
               input_clip=config.input_clip,
               correction_bound=config.correction_bound,
               damp_forbidden=config.damp_forbidden)


def _build_dense(fields: dict[str, Any], grid: Grid) -> Dense:
  return Dense(grid=grid, **fields)


# Model name -> (the fields its section may hold, builder(fields, grid)).
MODELS: dict[str, tuple[frozenset[str], Callable[..., Any]]] = {
    "dense": (frozenset(Dense.__dataclass_fields__) - {"parent", "name",
                                                       "grid"},
              _build_dense),
    "pgmoe": (frozenset(f.name for f in dataclasses.fields(PGMoEConfig)),
              lambda fields, grid: build_pgmoe(PGMoEConfig(**fields), grid)),
}


def build_model(config: Any, grid: Grid):
  """Builds the model named ``config.name`` with the config's fields.

  Args:
    config: the ``model`` section of a config (a ConfigDict or mapping);
      ``name`` picks the model, every other field is one of its fields
      (:class:`PGMoEConfig` for ``pgmoe``).
    grid: the grid the model works on.

  Raises:
    ValueError: an unknown name (the known ones are listed) or a field the
      model does not take.
  """
  fields = dict(config.items() if hasattr(config, "items") else config)
  name = fields.pop("name", None)
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; known models: "
                     f"{', '.join(sorted(MODELS))}.")
  known, build = MODELS[name]
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"Model {name!r} takes no field(s) {', '.join(unknown)}; "
                     f"its fields: {', '.join(sorted(known))}.")
  fields = {k: tuple(v) if isinstance(v, list) else v
            for k, v in fields.items()}
  return build(fields, grid)


def count_params(params) -> int:
  """Number of trainable scalars in a parameter pytree."""
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))
