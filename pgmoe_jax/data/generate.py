"""Generating a dataset: sample, solve, validate, write (resumable).

Each shard's potentials are drawn (:func:`~pgmoe_jax.data.spec.make_split_sampler`),
solved (SciPy eigsh in spawned worker processes, or the batched JAX LOBPCG),
validated (:func:`check_samples`: residual below the tolerance for the
stored energy, a nodeless ground state; a failing sample is re-solved with
eigsh to machine precision and dropped, with its reason in ``meta.json``, if
it still fails), then written file by file to temporary names and renamed;
only then is the shard recorded in ``meta.json`` (replaced atomically), so a
killed run loses at most the shard in progress and a rerun resumes after the
last recorded shard.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import locks
from pgmoe_jax import paths
from pgmoe_jax import solvers
from pgmoe_jax.data import files
from pgmoe_jax.data.spec import DatasetSpec
from pgmoe_jax.data.spec import make_split_sampler
from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import check_fits
from pgmoe_jax.solvers.eigsh import eigsh_batch
from pgmoe_jax.variational import normalize_unchecked
from pgmoe_jax.variational import residual_norm
from pgmoe_jax.version import __version__

NODELESS_TOL = 1e-8  # allowed negative lobe, relative to max psi0


# --------------------------------------------------------------------------
# Solving and validation.


def _solve_chunk(args):
  potentials, grid_json, num_states, tol = args
  grid = Grid(tuple(grid_json["shape"]), tuple(grid_json["length"]),
              grid_json["boundary"])
  energies, states, _, _, _ = eigsh_batch(
      potentials, grid, num_states, tol)
  return energies, states.reshape(states.shape[:2] + grid.shape)


def _normalise(states: np.ndarray, grid: Grid) -> np.ndarray:
  # A writable copy: failed samples are patched in place.
  return np.array(normalize_unchecked(jnp.asarray(states, jnp.float64), grid))


def check_samples(potentials, psi0, e0, grid: Grid, tol: float):
  """Validates claimed ground states before they are stored.

  The residual is measured for the claimed energy with a fresh ``H``
  (:func:`pgmoe_jax.variational.residual_norm`), so a pair whose energy is
  not its state's (a solver failure) can never pass.

  Returns:
    ``(residuals, reasons)``: per sample its residual in Ha and ``''`` if it
    is valid, else why not.
  """
  residuals = np.array(residual_norm(
      jnp.asarray(psi0, jnp.float64), jnp.asarray(potentials, jnp.float64),
      grid, jnp.asarray(e0, jnp.float64)))
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
      # worker: with more, the workers' threads oversubscribe the cores and
      # several workers run slower than one.
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
    residuals, reasons = check_samples(potentials, psi0, e0, spec.grid,
                                       spec.tol)
    bad = [i for i, r in enumerate(reasons) if r]
    if bad:
      # Second chance: SciPy shift-invert to machine precision.
      e_fix, s_fix = _solve_chunk((potentials[bad], spec.to_json()["grid"],
                                   spec.num_states, spec.tol))
      psi_fix = _normalise(s_fix[:, 0], spec.grid)
      res_fix, why = check_samples(potentials[bad], psi_fix, e_fix[:, 0],
                                   spec.grid, spec.tol)
      for j, i in enumerate(bad):
        energies[i], psi0[i], e0[i] = e_fix[j], psi_fix[j], e_fix[j, 0]
        residuals[i], reasons[i] = res_fix[j], why[j]
    return energies, psi0, residuals, reasons


# --------------------------------------------------------------------------
# Writing.


def _prepare_directory(path: str, spec: DatasetSpec, overwrite: bool) -> dict:
  """Returns the meta to resume from (fresh if nothing to resume)."""
  fresh = {"format_version": files.FORMAT_VERSION,
           "package_version": __version__,
           "spec": spec.to_json(),
           "spec_sha256": files.spec_sha256(spec.to_json()),
           "complete": False, "num_samples": 0, "shards": [], "failed": []}
  names = [n for n in os.listdir(path) if n != files.LOCK_FILE]
  if not names:
    return fresh
  foreign = sorted(n for n in names if not files.is_ours(n))
  if foreign:
    raise ValueError(
        f"{path} is not empty and does not hold a pgmoe_jax dataset "
        f"(found {', '.join(foreign[:5])}{'...' if len(foreign) > 5 else ''})"
        "; choose another --out. Nothing was deleted.")
  if files.META not in names:
    # Only shard files and no meta.json: a run killed before it recorded
    # its first shard. Nothing was recorded, so it starts over.
    for name in names:
      os.remove(os.path.join(path, name))
    return fresh
  meta = files.read_meta(path)
  files.check_spec_seal(path, meta)
  same = (meta["spec"] == spec.to_json()
          and meta.get("format_version") == files.FORMAT_VERSION
          and meta.get("package_version") == __version__)
  if same:
    return meta
  if (meta["spec"] == spec.to_json() and meta.get("complete")
      and meta.get("format_version") == files.FORMAT_VERSION and not overwrite):
    # A finished dataset of the same spec made by another package version:
    # nothing is written, so it is used as it is (a resume, which would mix
    # two versions' rounding in one dataset, is refused below).
    return meta
  if not overwrite:
    old = meta["spec"]
    diff = sorted(k for k in set(old) | set(spec.to_json())
                  if old.get(k) != spec.to_json().get(k))
    if meta.get("package_version") != __version__:
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
  checks.require_x64("Dataset generation needs float64")
  if not isinstance(workers, (int, np.integer)) or workers < 1:
    raise ValueError(f"workers must be a positive integer, got {workers!r}.")
  # A shard's potentials, states and solver work, in float64 on the host.
  check_fits(8.0 * 8 * min(spec.shard_size, spec.num_samples) * spec.grid.size,
             f"a shard of {spec.shard_size} samples on {spec.grid}",
             "use a smaller --shard_size or grid", host=True)
  if paths.is_remote(path):
    raise ValueError(
        f"--out {path}: datasets are written and memory-mapped on a local or "
        "mounted filesystem; generate locally and copy the folder.")
  path = checks.prepare_output_dir(path, "--out")
  with locks.exclusive(path, "dataset folder"):
    return _generate(path, spec, workers, chunk_size, overwrite, max_shards,
                     progress)


def _generate(path, spec, workers, chunk_size, overwrite, max_shards,
              progress) -> dict:
  """:func:`generate` in a prepared, locked folder."""
  meta = _prepare_directory(path, spec, overwrite)
  done = len(meta["shards"])
  if progress is not None:
    progress(min(done * spec.shard_size, spec.num_samples), spec.num_samples)
  if meta["complete"]:
    return meta
  sample = make_split_sampler(spec)
  solve = _Solver(spec, workers, chunk_size)
  advice = ("Shards recorded in meta.json before it are intact; free the "
            "space and rerun the same command to resume.")
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
      with checks.writing(f"shard {index}", path, advice):
        digests = {name: files.save_npy(
            os.path.join(path, files.shard_name(index, name)), value)
                   for name, value in arrays.items()}
        meta["shards"].append({"index": index, "count": int(keep.sum()),
                               "sha256": digests})
        meta["failed"].extend({"index": start + i, "reason": r}
                              for i, r in enumerate(reasons) if r)
        meta["num_samples"] += int(keep.sum())
        meta["complete"] = index + 1 == spec.num_shards
        files.write_meta(path, meta)
      written += 1
      if progress is not None:
        progress(stop, spec.num_samples)
  finally:
    solve.close()
  return meta
