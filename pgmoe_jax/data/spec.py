"""What a dataset holds: its spec, the standard splits, and its potentials.

A :class:`DatasetSpec` fixes every byte of a dataset. Sample ``i`` of a split
is drawn from the key ``fold_in(fold_in(key(seed), crc32(split)), i)``
(:func:`split_key`, :func:`make_split_sampler`), so the data depend on the
seed, the split name and the spec, and not on shard sizes, worker counts or
interruptions.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import zlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import potentials
from pgmoe_jax import solvers
from pgmoe_jax.grid import Grid
from pgmoe_jax.potentials._args import freeze
from pgmoe_jax.potentials._args import thaw
from pgmoe_jax.potentials.mixtures import check_components


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset holds; equal specs give byte-identical datasets.

  Attributes:
    family: a name in :data:`pgmoe_jax.potentials.FAMILIES`, or a user
      family ``"package.module:function"`` (importable wherever the dataset
      is generated).
    grid: the grid.
    num_samples: how many potentials to draw (failed solves are dropped and
      recorded, so the stored count can be lower).
    seed: the root PRNG seed.
    split: the split name; it enters the key derivation, so splits with the
      same seed hold different potentials.
    ranges: overrides of the family's keyword ranges (the rest take the
      family's defaults; :func:`resolved_ranges` gives the full set).
    solver: ``"eigsh"`` or ``"lobpcg"``.
    num_states: 1 (E0 only) or 2 (E0 and E1, for the gap).
    tol: residual tolerance in Hartree each stored sample must meet.
    shard_size: samples per shard file.
  """
  family: str
  grid: Grid
  num_samples: int
  seed: int = 0
  split: str = "train"
  ranges: tuple[tuple[str, Any], ...] = ()
  solver: str = "eigsh"
  num_states: int = 2
  tol: float = 1e-8
  shard_size: int = 256

  def __post_init__(self):
    family = potentials.get_family(self.family)  # raises if unknown
    if not isinstance(self.grid, Grid):
      raise TypeError(f"grid must be a Grid, got {type(self.grid).__name__}.")
    if isinstance(self.ranges, Mapping):
      object.__setattr__(self, "ranges", tuple(sorted(
          (k, _freeze(v)) for k, v in self.ranges.items())))
    valid = potentials.range_names(family)
    unknown = sorted(set(dict(self.ranges)) - set(valid))
    if unknown:
      raise ValueError(
          f"Unknown range(s) {', '.join(unknown)} for family {self.family!r}; "
          f"valid: {', '.join(valid)}.")
    potentials.check_output(self.family, family, self.grid,
                            **dict(self.ranges))
    if self.solver not in solvers.METHODS:
      raise ValueError(f"Unknown solver {self.solver!r}; known solvers: "
                       f"{', '.join(solvers.METHODS)}.")
    for name in ("num_samples", "shard_size"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if self.num_states not in (1, 2):
      raise ValueError(f"num_states must be 1 or 2, got {self.num_states!r}.")
    if not (isinstance(self.tol, (int, float)) and self.tol > 0):
      raise ValueError(f"tol must be a positive number, got {self.tol!r}.")
    if not self.split or not isinstance(self.split, str):
      raise ValueError(f"split must be a non-empty name, got {self.split!r}.")

  @property
  def num_shards(self) -> int:
    return math.ceil(self.num_samples / self.shard_size)

  def resolved_ranges(self) -> dict[str, Any]:
    """The family's keyword defaults with this spec's overrides applied."""
    family = potentials.get_family(self.family)
    out = {name: _freeze(p.default) for name, p in
           inspect.signature(family).parameters.items()
           if name in potentials.range_names(family)}
    out.update(dict(self.ranges))
    return out

  def to_json(self) -> dict[str, Any]:
    return {
        "family": self.family,
        "grid": {"shape": list(self.grid.shape),
                 "length": list(self.grid.length),
                 "boundary": self.grid.boundary},
        "num_samples": int(self.num_samples),
        "seed": int(self.seed),
        "split": self.split,
        "ranges": {k: _thaw(v) for k, v in self.resolved_ranges().items()},
        "solver": self.solver,
        "num_states": int(self.num_states),
        "tol": float(self.tol),
        "shard_size": int(self.shard_size),
    }

  @classmethod
  def from_json(cls, spec: Mapping[str, Any], *,
                check_family: bool = True) -> "DatasetSpec":
    """The spec of :meth:`to_json`'s output.

    Args:
      spec: the JSON object.
      check_family: look the family up and check its ranges (as a new spec
        does). Opening a stored dataset passes ``False``: it was checked
        when generated, and reading it must not need a user family's code.
    """
    grid = spec["grid"]
    fields = dict(
        family=spec["family"],
        grid=Grid(tuple(grid["shape"]), tuple(grid["length"]),
                  grid["boundary"]),
        num_samples=spec["num_samples"], seed=spec["seed"],
        split=spec["split"], ranges=dict(spec["ranges"]),
        solver=spec["solver"], num_states=spec["num_states"],
        tol=spec["tol"], shard_size=spec["shard_size"])
    if check_family:
      return cls(**fields)
    out = object.__new__(cls)
    fields["ranges"] = tuple(sorted((k, _freeze(v))
                                    for k, v in fields["ranges"].items()))
    for name, value in fields.items():
      object.__setattr__(out, name, value)
    return out


# Range values are frozen (lists to tuples, mappings such as the mixture's
# components to FrozenMapping) so specs are hashable, and thawed back to
# JSON lists and objects by to_json.
_freeze = freeze
_thaw = thaw


# Extrapolation beyond the default gaussian_wells training ranges (depth
# 1-10 Ha, 1-4 wells): every well deeper than any training well, and up
# to six of them.
EXTRAP_RANGES = {"depth": (10.0, 15.0), "num_wells": (1, 6)}
OOD_FAMILIES = ("harmonic", "double_well", "box_well", "random_smooth")


def standard_splits(family: str, grid: Grid, num_train: int, num_eval: int, *,
                    seed: int = 0, **common) -> dict[str, DatasetSpec]:
  """The standard set: train, val, test_interp, test_extrap, ood_<family>.

  ``test_extrap`` (gaussian_wells only) uses :data:`EXTRAP_RANGES`; the
  ``ood_*`` splits draw from the other families with their default ranges.
  All splits share the seed; their names separate their keys.

  Args:
    family: the training family.
    grid: the grid.
    num_train: training samples.
    num_eval: samples in each of the other splits.
    seed: the root seed.
    **common: further :class:`DatasetSpec` fields (solver, tol, shard_size,
      num_states).

  Returns:
    Split name -> spec, in generation order.
  """
  specs = {
      "train": DatasetSpec(family, grid, num_train, seed, "train", **common),
      "val": DatasetSpec(family, grid, num_eval, seed, "val", **common),
      "test_interp": DatasetSpec(family, grid, num_eval, seed, "test_interp",
                                 **common),
  }
  if family == "gaussian_wells":
    specs["test_extrap"] = DatasetSpec(family, grid, num_eval, seed,
                                       "test_extrap", EXTRAP_RANGES, **common)
  for other in OOD_FAMILIES:
    if other != family:
      specs[f"ood_{other}"] = DatasetSpec(other, grid, num_eval, seed,
                                          f"ood_{other}", **common)
  return specs


def family_splits(grid: Grid, num: int, *, seed: int = 0,
                  components: Mapping[str, Mapping[str, Any]] | None = None,
                  sum_probability: float | None = None,
                  offset: tuple[float, float] | None = None,
                  **common) -> dict[str, DatasetSpec]:
  """Labelled evaluation splits of a mixture: one per component, and its own.

  ``test_<component>`` draws from each component's family with that
  component's ranges (its weight plays no part); ``val_mixture`` and
  ``test_mixture`` draw from the mixture itself (sums and offsets
  included), for picking checkpoints and for the overall score. The names
  differ from :func:`standard_splits`' and enter the keys, so these splits
  share no samples with the standard ones for the same seed.

  Args:
    grid: the grid.
    num: samples in each split.
    seed: the root seed.
    components: the mixture's components (see
      :func:`pgmoe_jax.potentials.mixture`); ``None`` for
      :data:`pgmoe_jax.potentials.UNIVERSAL`.
    sum_probability: the mixture's; ``None`` for the universal one.
    offset: the mixture's offset range (Hartree); ``None`` for the
      universal one.
    **common: further :class:`DatasetSpec` fields (solver, tol, shard_size,
      num_states).

  Returns:
    Split name -> spec: ``test_<component>`` for every component (weight 0
    included), then ``val_mixture`` and ``test_mixture``. The mixture specs
    record every range, so the splits do not change if the universal
    defaults do.

  Raises:
    ValueError: bad components (as :func:`pgmoe_jax.potentials.mixture`
      raises), or as :class:`DatasetSpec` raises.
  """
  if components is None:
    components = potentials.UNIVERSAL
  if sum_probability is None:
    sum_probability = potentials.SUM_PROBABILITY
  mixture = {"components": components, "sum_probability": sum_probability,
             "offset": potentials.OFFSET if offset is None else offset}
  specs = {}
  for name, family, _, ranges in check_components(
      freeze(mixture["components"])):
    split = f"test_{name}"
    specs[split] = DatasetSpec(family, grid, num, seed, split, ranges,
                               **common)
  for split in ("val_mixture", "test_mixture"):
    specs[split] = DatasetSpec("mixture", grid, num, seed, split, mixture,
                               **common)
  return specs


def split_key(seed: int, split: str) -> jax.Array:
  """The key of a split: ``fold_in(key(seed), crc32(split))``."""
  return jax.random.fold_in(jax.random.key(seed),
                            zlib.crc32(split.encode()) & 0x7FFFFFFF)


def make_split_sampler(spec: DatasetSpec) -> Callable[[int, int], np.ndarray]:
  """Returns ``sample(start, stop)``: potentials ``start..stop-1`` of a split.

  Sample ``i`` is drawn from ``fold_in(split_key(seed, split), i)`` in
  float64, so it does not depend on how the range is cut into shards.
  """
  key = split_key(spec.seed, spec.split)
  sampler = potentials.make_sampler(spec.family, spec.grid, jnp.float64,
                                    **dict(spec.ranges))

  def sample(start: int, stop: int) -> np.ndarray:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
        jnp.arange(start, stop, dtype=jnp.uint32))
    return np.asarray(sampler(keys))

  return sample
