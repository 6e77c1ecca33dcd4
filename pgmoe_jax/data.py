r"""Datasets of labelled ground states: generate, validate, store, load, batch.

A dataset is a directory::

    meta.json                      the spec (grid, family and its full ranges,
                                   solver, tolerance, seed, split), counts,
                                   package version, and per shard the sample
                                   count and a SHA-256 of every file
    shard-00000.potential.npy      (m, *grid.shape) float64, Hartree
    shard-00000.psi0.npy           (m, *grid.shape) float64, normalised
                                   (sum(psi**2) prod(h) = 1, psi > 0)
    shard-00000.E0.npy             (m,) float64, Hartree
    shard-00000.E1.npy             (m,) first excited energy (num_states >= 2)
    shard-00000.residual.npy       (m,) ||H psi0 - E0 psi0|| / ||psi0||, Ha
    shard-00000.index.npy          (m,) int64 sample numbers within the split

Plain ``.npy`` files, loaded memory-mapped with ``allow_pickle=False``.

Reproducibility: sample ``i`` of a split is drawn from the key
``fold_in(fold_in(key(seed), crc32(split)), i)``, so the data depend on the
seed, the split name and the spec, and not on the shard size, the number of
workers or how often generation was interrupted: the same spec gives the same
bytes. Each shard's files are written to temporary names and renamed, and only
then is the shard recorded in ``meta.json`` (itself replaced atomically), so a
killed run loses at most the shard in progress and a rerun resumes after the
last recorded shard.

Validation at write time: every sample's residual must be below the
tolerance and its ground state nodeless (``min psi0 >= -1e-8 max psi0``). A
failing sample is solved again with SciPy's eigsh to machine precision; if
it still fails it is not stored and ``meta.json`` records its index and why.

The module does file I/O only when its functions are called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import multiprocessing
import os
import zlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import potentials as potentials_lib
from pgmoe_jax import solvers
from pgmoe_jax.grid import Grid

FORMAT_VERSION = 1
META = "meta.json"
ARRAYS = ("potential", "psi0", "E0", "E1", "residual", "index")
NODELESS_TOL = 1e-8  # allowed negative lobe, relative to max psi0


def _package_version() -> str:
  from pgmoe_jax import __version__  # pylint: disable=g-import-not-at-top
  return __version__


# --------------------------------------------------------------------------
# The spec: everything that determines the bytes of a dataset.


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset holds; equal specs give byte-identical datasets.

  Attributes:
    family: a name in :data:`pgmoe_jax.potentials.FAMILIES`.
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
    family = potentials_lib.get_family(self.family)  # raises if unknown
    if not isinstance(self.grid, Grid):
      raise TypeError(f"grid must be a Grid, got {type(self.grid).__name__}.")
    if isinstance(self.ranges, Mapping):
      object.__setattr__(self, "ranges", tuple(sorted(
          (k, _freeze(v)) for k, v in self.ranges.items())))
    valid = _range_names(family)
    unknown = sorted(set(dict(self.ranges)) - set(valid))
    if unknown:
      raise ValueError(
          f"Unknown range(s) {', '.join(unknown)} for family {self.family!r}; "
          f"valid: {', '.join(valid)}.")
    # Trace the family abstractly: its eager range validation runs, no
    # numbers are computed.
    ranges = dict(self.ranges)
    jax.eval_shape(lambda key: family(key, self.grid, (), **ranges),
                   jax.random.key(0))
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
    family = potentials_lib.get_family(self.family)
    out = {name: _freeze(p.default) for name, p in
           inspect.signature(family).parameters.items()
           if name in _range_names(family)}
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
  def from_json(cls, spec: Mapping[str, Any]) -> "DatasetSpec":
    grid = spec["grid"]
    return cls(
        family=spec["family"],
        grid=Grid(tuple(grid["shape"]), tuple(grid["length"]),
                  grid["boundary"]),
        num_samples=spec["num_samples"], seed=spec["seed"],
        split=spec["split"], ranges=dict(spec["ranges"]),
        solver=spec["solver"], num_states=spec["num_states"],
        tol=spec["tol"], shard_size=spec["shard_size"])


def _range_names(family) -> list[str]:
  return sorted(p.name for p in inspect.signature(family).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and
                p.name != "dtype")


def _freeze(value):
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  return value


def _thaw(value):
  if isinstance(value, tuple):
    return [_thaw(v) for v in value]
  return value


# --------------------------------------------------------------------------
# Standard splits.

# Extrapolation beyond the default gaussian_wells training ranges (DESIGN.md:
# depth 1-10 Ha, 1-4 wells): every well deeper than any training well, and up
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


# --------------------------------------------------------------------------
# Sampling.


def split_key(seed: int, split: str) -> jax.Array:
  """The key of a split: ``fold_in(key(seed), crc32(split))``."""
  return jax.random.fold_in(jax.random.key(seed),
                            zlib.crc32(split.encode()) & 0x7FFFFFFF)


def make_sampler(family: str, grid: Grid, dtype=None,
                 **ranges) -> Callable[[jax.Array], jax.Array]:
  """Returns a jitted ``sample(keys) -> V`` drawing one potential per key.

  ``keys`` has shape ``(b,)``; ``V`` is ``(b, *grid.shape)``. Sample ``i``
  depends only on ``keys[i]``, so datasets do not depend on batch sizes.
  """
  fn = potentials_lib.get_family(family)

  @jax.jit
  def sample(keys):
    return jax.vmap(lambda k: fn(k, grid, (), dtype=dtype, **ranges))(keys)

  return sample


def make_split_sampler(spec: DatasetSpec) -> Callable[[int, int], np.ndarray]:
  """Returns ``sample(start, stop)``: potentials ``start..stop-1`` of a split.

  Sample ``i`` is drawn from ``fold_in(split_key(seed, split), i)`` in
  float64, so it does not depend on how the range is cut into shards.
  """
  key = split_key(spec.seed, spec.split)
  sampler = make_sampler(spec.family, spec.grid, jnp.float64,
                         **dict(spec.ranges))

  def sample(start: int, stop: int) -> np.ndarray:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
        jnp.arange(start, stop, dtype=jnp.uint32))
    return np.asarray(sampler(keys))

  return sample


def make_potential_stream(family: str, grid: Grid, batch_size: int, *,
                          dtype=jnp.float32,
                          **ranges) -> Callable[[jax.Array], jax.Array]:
  """An endless source of unlabelled potentials, for energy-only training.

  Returns a pure ``sample(key) -> V (batch_size, *grid.shape)`` that can be
  called inside a jitted train step with a per-step key
  (``jax.random.fold_in(key, step)``): no solver, no I/O, no host round trip.
  """
  fn = potentials_lib.get_family(family)
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got "
                     f"{batch_size!r}.")

  def sample(key):
    return fn(key, grid, (batch_size,), dtype=dtype, **ranges)

  return sample


# --------------------------------------------------------------------------
# Solving and validation (runs in worker processes: NumPy and SciPy only).


def _solve_chunk(args):
  potentials, grid_json, num_states, tol = args
  grid = Grid(tuple(grid_json["shape"]), tuple(grid_json["length"]),
              grid_json["boundary"])
  energies, states, _, _, _ = solvers.eigsh_batch(
      potentials, grid, num_states, tol)
  return energies, states.reshape(states.shape[:2] + grid.shape)


def _residuals(potentials, states, energies, grid: Grid) -> np.ndarray:
  kinetic = solvers.kinetic_matrix(grid)
  b = len(potentials)
  flat = states.reshape(b, -1)
  h = (kinetic @ flat.T).T + potentials.reshape(b, -1) * flat
  return (np.linalg.norm(h - energies[:, None] * flat, axis=1)
          / np.linalg.norm(flat, axis=1))


def _normalise(states: np.ndarray, grid: Grid) -> np.ndarray:
  flat = states.reshape(len(states), -1)
  sign = np.where(flat.sum(1) < 0, -1.0, 1.0)
  norm = np.sqrt((flat**2).sum(1) * grid.volume_element)
  return states * (sign / norm).reshape((-1,) + (1,) * grid.ndim)


def _check(potentials, psi0, e0, grid, tol):
  """Returns (residuals, reasons): reason '' for a valid sample."""
  residuals = _residuals(potentials, psi0, e0, grid)
  flat = psi0.reshape(len(psi0), -1)
  negative = flat.min(1) < -NODELESS_TOL * flat.max(1)
  reasons = []
  for r, neg in zip(residuals, negative):
    if not np.isfinite(r) or r > tol:
      reasons.append(f"residual {r:.3g} Ha > tol {tol:g}")
    elif neg:
      reasons.append("ground state has a node (negative lobe)")
    else:
      reasons.append("")
  return residuals, reasons


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class _Solver:
  """Solves shards with eigsh in worker processes, or with LOBPCG."""

  def __init__(self, spec: DatasetSpec, workers: int,
               chunk_size: int | None):
    self.spec = spec
    self.workers = workers
    self.chunk_size = chunk_size
    self.pool = None
    if spec.solver == "eigsh" and workers > 1:
      # spawn, not fork: forking a process that runs JAX's threads can
      # deadlock; the workers only need NumPy and SciPy. One BLAS thread per
      # worker: oversubscribed threads made 2 workers slower than 1 (14 s
      # against 10 s for 2000 samples at 32x32; 6 s with this).
      saved = {k: os.environ.get(k) for k in _THREAD_VARS}
      os.environ.update({k: "1" for k in _THREAD_VARS})
      try:
        self.pool = multiprocessing.get_context("spawn").Pool(workers)
      finally:
        for k, v in saved.items():
          if v is None:
            os.environ.pop(k, None)
          else:
            os.environ[k] = v

  def close(self):
    if self.pool is not None:
      self.pool.terminate()
      self.pool.join()

  def eigsh(self, potentials):
    spec = self.spec
    grid_json = spec.to_json()["grid"]
    if self.pool is None:
      return _solve_chunk((potentials, grid_json, spec.num_states, spec.tol))
    parts = np.array_split(potentials, min(self.workers, len(potentials)))
    out = self.pool.map(_solve_chunk, [(p, grid_json, spec.num_states,
                                        spec.tol) for p in parts])
    return (np.concatenate([o[0] for o in out]),
            np.concatenate([o[1] for o in out]))

  def __call__(self, potentials):
    spec = self.spec
    if spec.solver == "eigsh":
      energies, states = self.eigsh(potentials)
    else:
      import warnings  # pylint: disable=g-import-not-at-top
      with warnings.catch_warnings():
        # Unconverged samples are re-solved below, not just warned about.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = solvers.solve(potentials, spec.grid, method="lobpcg",
                               num_states=spec.num_states, tol=spec.tol,
                               chunk_size=self.chunk_size)
      energies = np.asarray(result.energies, np.float64)
      states = np.asarray(result.states, np.float64)
    psi0 = _normalise(states[:, 0], spec.grid)
    e0 = energies[:, 0]
    residuals, reasons = _check(potentials, psi0, e0, spec.grid, spec.tol)
    bad = [i for i, r in enumerate(reasons) if r]
    if bad:
      # Second chance: SciPy shift-invert to machine precision.
      e_fix, s_fix = _solve_chunk((potentials[bad], spec.to_json()["grid"],
                                   spec.num_states, spec.tol))
      psi_fix = _normalise(s_fix[:, 0], spec.grid)
      res_fix, why = _check(potentials[bad], psi_fix, e_fix[:, 0], spec.grid,
                            spec.tol)
      for j, i in enumerate(bad):
        energies[i], psi0[i], e0[i] = e_fix[j], psi_fix[j], e_fix[j, 0]
        residuals[i], reasons[i] = res_fix[j], why[j]
    return energies, psi0, residuals, reasons


# --------------------------------------------------------------------------
# Writing.


def _shard_name(index: int, array: str) -> str:
  return f"shard-{index:05d}.{array}.npy"


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _atomic_write_bytes(path: str, data: bytes) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _save_npy(path: str, array: np.ndarray) -> str:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    f.flush()
    os.fsync(f.fileno())
  digest = _sha256(tmp)
  os.replace(tmp, path)
  return digest


def _write_meta(path: str, meta: dict) -> None:
  _atomic_write_bytes(os.path.join(path, META),
                      (json.dumps(meta, indent=1) + "\n").encode())


def _read_meta(path: str) -> dict:
  meta_path = os.path.join(path, META)
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{path} is not a dataset: it has no {META}. Make one "
                     "with python -m experiments.generate_data.") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{meta_path} is corrupt (not valid JSON: {e}).") from None
  if not isinstance(meta, dict) or "spec" not in meta or "shards" not in meta:
    raise ValueError(f"{meta_path} is not a pgmoe_jax dataset description "
                     "(no 'spec' or 'shards').")
  return meta


def _is_ours(name: str) -> bool:
  return name == META or (name.startswith("shard-") and (
      name.endswith(".npy") or name.endswith(".npy.tmp"))) or name == (
          META + ".tmp")


def _prepare_directory(path: str, spec: DatasetSpec, overwrite: bool) -> dict:
  """Returns the meta to resume from (fresh if nothing to resume)."""
  fresh = {"format_version": FORMAT_VERSION,
           "package_version": _package_version(),
           "spec": spec.to_json(), "complete": False, "num_samples": 0,
           "shards": [], "failed": []}
  if not os.path.exists(path):
    os.makedirs(path)
    return fresh
  if not os.path.isdir(path):
    raise ValueError(f"--out {path} exists and is not a directory.")
  names = os.listdir(path)
  if not names:
    return fresh
  foreign = sorted(n for n in names if not _is_ours(n))
  if META not in names or foreign:
    raise ValueError(
        f"{path} is not empty and does not hold a pgmoe_jax dataset "
        f"(found {', '.join(sorted(names)[:5])}"
        f"{'...' if len(names) > 5 else ''})"
        "; choose another --out. Nothing was deleted.")
  meta = _read_meta(path)
  same = (meta["spec"] == spec.to_json()
          and meta.get("format_version") == FORMAT_VERSION
          and meta.get("package_version") == _package_version())
  if same:
    return meta
  if not overwrite:
    old = meta["spec"]
    diff = sorted(k for k in set(old) | set(spec.to_json())
                  if old.get(k) != spec.to_json().get(k))
    if meta.get("package_version") != _package_version():
      diff.append("package_version")
    raise ValueError(
        f"{path} holds a different dataset (differs in: {', '.join(diff)}). "
        "Pass --overwrite to replace it, or choose another --out.")
  for name in names:  # only our own files, checked above
    os.remove(os.path.join(path, name))
  return fresh


def generate(path: str, spec: DatasetSpec, *, workers: int = 1,
             chunk_size: int | None = None, overwrite: bool = False,
             max_shards: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
  """Generates (or resumes) the dataset ``spec`` in directory ``path``.

  Needs float64 (``jax.config.update("jax_enable_x64", True)``): labels are
  reference solutions.

  Args:
    path: the output directory; created if missing. If it holds the same
      spec, generation resumes after the last complete shard (and does
      nothing if it is complete); a different dataset is replaced only with
      ``overwrite``; a directory holding anything else is refused.
    spec: what to generate.
    workers: processes for the eigsh solver (ignored by LOBPCG).
    chunk_size: LOBPCG batch size (``None``: a whole shard at once).
    overwrite: replace a different dataset in ``path``.
    max_shards: stop after writing this many new shards (incremental
      generation; also how tests interrupt a run).
    progress: called as ``progress(samples_done, samples_total)`` after each
      shard, and once at the start.

  Returns:
    The dataset's meta dict (as written to ``meta.json``).

  Raises:
    ValueError: without float64, for a directory that cannot be used, or a
      bad ``workers``.
  """
  if not jax.config.jax_enable_x64:
    raise ValueError("Dataset generation needs float64: call "
                     "jax.config.update('jax_enable_x64', True) first.")
  if not isinstance(workers, (int, np.integer)) or workers < 1:
    raise ValueError(f"workers must be a positive integer, got {workers!r}.")
  meta = _prepare_directory(path, spec, overwrite)
  done = len(meta["shards"])
  if progress is not None:
    progress(min(done * spec.shard_size, spec.num_samples), spec.num_samples)
  if meta["complete"]:
    return meta
  sample = make_split_sampler(spec)
  solve = _Solver(spec, workers, chunk_size)
  try:
    written = 0
    for index in range(done, spec.num_shards):
      if max_shards is not None and written >= max_shards:
        return meta
      start = index * spec.shard_size
      stop = min(start + spec.shard_size, spec.num_samples)
      potentials = sample(start, stop)
      energies, psi0, residuals, reasons = solve(potentials)
      keep = np.array([not r for r in reasons], bool)
      arrays = {"potential": potentials[keep], "psi0": psi0[keep],
                "E0": energies[keep, 0], "residual": residuals[keep],
                "index": np.arange(start, stop, dtype=np.int64)[keep]}
      if spec.num_states > 1:
        arrays["E1"] = energies[keep, 1]
      files = {name: _save_npy(os.path.join(path, _shard_name(index, name)),
                               value) for name, value in arrays.items()}
      meta["shards"].append({"index": index, "count": int(keep.sum()),
                             "sha256": files})
      meta["failed"].extend({"index": start + i, "reason": r}
                            for i, r in enumerate(reasons) if r)
      meta["num_samples"] += int(keep.sum())
      meta["complete"] = index + 1 == spec.num_shards
      _write_meta(path, meta)
      written += 1
      if progress is not None:
        progress(stop, spec.num_samples)
  finally:
    solve.close()
  return meta


# --------------------------------------------------------------------------
# Reading.


class ShardedArray:
  """A read-only array stored as shards along axis 0 (memory-mapped).

  Supports ``len``, ``shape``, ``dtype``, integer, slice and integer-array
  indexing along the first axis, and ``np.asarray``.
  """

  def __init__(self, parts: Sequence[np.ndarray]):
    self._parts = list(parts)
    sizes = [len(p) for p in self._parts]
    self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    first = self._parts[0]
    self.dtype = first.dtype
    self.shape = (int(self._offsets[-1]),) + first.shape[1:]

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      i = int(index) + (len(self) if index < 0 else 0)
      if not 0 <= i < len(self):
        raise IndexError(f"index {index} out of range for {len(self)} samples")
      part = int(np.searchsorted(self._offsets, i, side="right")) - 1
      return np.asarray(self._parts[part][i - self._offsets[part]])
    if isinstance(index, slice):
      index = np.arange(len(self))[index]
    index = np.asarray(index)
    if index.dtype == bool:
      index = np.flatnonzero(index)
    if not np.issubdtype(index.dtype, np.integer):
      raise TypeError(f"Unsupported index {index!r}.")
    index = np.where(index < 0, index + len(self), index)
    if index.size and (index.min() < 0 or index.max() >= len(self)):
      raise IndexError(f"index out of range for {len(self)} samples")
    out = np.empty(index.shape + self.shape[1:], self.dtype)
    part = np.searchsorted(self._offsets, index, side="right") - 1
    for p in np.unique(part):
      where = part == p
      out[where] = self._parts[p][index[where] - self._offsets[p]]
    return out

  def __array__(self, dtype=None, copy=None):
    del copy
    out = np.concatenate(self._parts) if self._parts else np.empty(self.shape)
    return out if dtype is None else out.astype(dtype)


class Dataset:
  """An opened dataset: memory-mapped arrays and a batch iterator.

  Attributes:
    path: the directory.
    meta: the parsed ``meta.json``.
    spec: the :class:`DatasetSpec` it was made from.
    grid: its grid.
    potentials, psi0, E0, residual, index: :class:`ShardedArray` s; ``E1``
      too when the dataset has two states, else ``None``.
  """

  def __init__(self, path: str, meta: dict, arrays: dict[str, ShardedArray]):
    self.path = path
    self.meta = meta
    self.spec = DatasetSpec.from_json(meta["spec"])
    self.grid = self.spec.grid
    self.potentials = arrays["potential"]
    self.psi0 = arrays["psi0"]
    self.E0 = arrays["E0"]  # pylint: disable=invalid-name
    self.E1 = arrays.get("E1")  # pylint: disable=invalid-name
    self.residual = arrays["residual"]
    self.index = arrays["index"]

  def __len__(self) -> int:
    return len(self.E0)

  def __repr__(self) -> str:
    return (f"Dataset({self.path!r}, {len(self)} samples of "
            f"{self.spec.family} on {self.grid}, split {self.spec.split!r})")

  def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
    """The permutation of sample indices for one epoch (deterministic)."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(len(self))

  def batches(self, batch_size: int, *, seed: int = 0, epoch: int = 0,
              shuffle: bool = True, drop_remainder: bool = True,
              dtype=np.float32, sharding=None) -> Iterator[dict[str, Any]]:
    """Yields the batches of one epoch as device arrays.

    Every sample appears at most once per epoch (exactly once unless
    ``drop_remainder`` drops the last partial batch); the order depends only
    on ``(seed, epoch)``.

    Args:
      batch_size: samples per batch.
      seed: the shuffling seed.
      epoch: the epoch number (a different permutation per epoch).
      shuffle: ``False`` keeps stored order (evaluation).
      drop_remainder: drop a last batch smaller than ``batch_size``.
      dtype: floating dtype of the returned arrays.
      sharding: optional :class:`jax.sharding.Sharding` to place each batch
        with (e.g. split along the batch axis across devices); ``None``
        puts it on the default device.

    Yields:
      ``{"potential", "psi0", "E0"[, "E1"], "index"}``: ``(b, *grid.shape)``
      and ``(b,)`` arrays.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive integer, got "
                       f"{batch_size!r}.")
    order = (self.epoch_order(seed, epoch) if shuffle
             else np.arange(len(self)))
    stop = (len(order) // batch_size * batch_size if drop_remainder
            else len(order))
    for start in range(0, stop, batch_size):
      idx = np.sort(order[start:start + batch_size])
      batch = {"potential": self.potentials[idx].astype(dtype),
               "psi0": self.psi0[idx].astype(dtype),
               "E0": self.E0[idx].astype(dtype),
               "index": self.index[idx]}
      if self.E1 is not None:
        batch["E1"] = self.E1[idx].astype(dtype)
      if sharding is None:
        yield jax.device_put(batch)
      else:
        yield jax.device_put(batch, sharding)


def open_dataset(path: str, *, grid: Grid | None = None,
                 verify: bool = True) -> Dataset:
  """Opens a dataset directory, checking its description and checksums.

  Args:
    path: the dataset directory (holding ``meta.json``).
    grid: if given, the grid the caller expects; a mismatch raises.
    verify: check every shard file's SHA-256 against ``meta.json`` (reads
      each file once; pass ``False`` to skip on trusted data).

  Returns:
    A :class:`Dataset` with memory-mapped arrays.

  Raises:
    ValueError: a missing or corrupt ``meta.json``, an incomplete dataset, a
      missing, truncated or corrupt shard (the message names the shard and
      file), or a grid mismatch.
  """
  path = os.fspath(path)
  meta = _read_meta(path)
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: dataset format {meta.get('format_version')!r} "
                     f"is not the supported {FORMAT_VERSION}; regenerate it.")
  try:
    spec = DatasetSpec.from_json(meta["spec"])
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}/{META} has an invalid spec: {e}") from None
  if grid is not None and grid != spec.grid:
    raise ValueError(f"{path} is on {spec.grid}, but {grid} was expected; "
                     "generate data on the model's grid.")
  if not meta.get("complete"):
    raise ValueError(
        f"{path} is incomplete ({len(meta['shards'])} of {spec.num_shards} "
        "shards); rerun the same generate_data command to resume it.")
  if not meta["shards"] or meta["num_samples"] < 1:
    raise ValueError(f"{path} holds no samples (all failed: see 'failed' in "
                     f"{META}).")
  names = [a for a in ARRAYS if a != "E1" or spec.num_states > 1]
  parts = {name: [] for name in names}
  for shard in meta["shards"]:
    for name in names:
      file = os.path.join(path, _shard_name(shard["index"], name))
      where = f"{path}: shard {shard['index']} ({os.path.basename(file)})"
      if not os.path.exists(file):
        raise ValueError(f"{where} is missing; regenerate the dataset.")
      if verify and _sha256(file) != shard["sha256"].get(name):
        raise ValueError(f"{where} is corrupt: its checksum does not match "
                         f"{META}; regenerate the dataset.")
      try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
      except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{where} cannot be read ({e}); regenerate the "
                         "dataset.") from None
      expected = (shard["count"],) + (
          spec.grid.shape if name in ("potential", "psi0") else ())
      if array.shape != expected:
        raise ValueError(f"{where} has shape {array.shape}, expected "
                         f"{expected}; the shard is truncated or corrupt.")
      parts[name].append(array)
  return Dataset(path, meta, {k: ShardedArray(v) for k, v in parts.items()})
