r"""Generate a dataset of labelled ground states (or a standard set of splits).

    python -m experiments.generate_data --family=gaussian_wells --grid=32 \
        --length=20 --num=2000 --seed=0 --out=data/gw32/train
    python -m experiments.generate_data --standard_splits --grid=32 \
        --num=2000 --num_eval=200 --out=data/quickstart
    python -m experiments.generate_data --universal_splits --grid=64 \
        --num_eval=200 --out=data/universal64

The first writes one split (its name defaults to the last part of --out and
seeds its potentials). The second writes train, val, test_interp,
test_extrap (deeper and more wells) and ood_<family> for the other families
under --out. The third writes the universal model's labelled evaluation
splits (data.family_splits): test_<component> for every component of the
universal mixture (pgmoe_jax.potentials.UNIVERSAL), with that component's
ranges, and val_mixture and test_mixture from the mixture itself.
Rerunning the same command resumes an interrupted run and leaves a complete
one untouched; a directory holding a different dataset is refused unless
--overwrite. See pgmoe_jax/data/__init__.py for the format.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import jax

from experiments import cli
from pgmoe_jax import data
from pgmoe_jax import locks

_FAMILY = flags.DEFINE_string("family", "gaussian_wells",
                              "Potential family (pgmoe_jax.potentials).")
_GRID = flags.DEFINE_string("grid", "32", "Points per axis: 32 or 32,48.")
_NDIM = flags.DEFINE_integer("ndim", 2, "Dimension when --grid is one number.")
_LENGTH = flags.DEFINE_string("length", "20", "Box length(s) in bohr.")
_BOUNDARY = flags.DEFINE_enum("boundary", "dirichlet",
                              ["dirichlet", "periodic"], "Boundary condition.")
_NUM = flags.DEFINE_integer("num", None, "Samples (train samples with "
                            "--standard_splits); required except with "
                            "--universal_splits.")
_NUM_EVAL = flags.DEFINE_integer("num_eval", 200, "Samples per evaluation "
                                 "split with --standard_splits or "
                                 "--universal_splits.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")
_SPLIT = flags.DEFINE_string("split", None, "Split name (enters the seed); "
                             "default: the last part of --out.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_RANGES = flags.DEFINE_string(
    "ranges", None, "JSON object of family range overrides, e.g. "
    "'{\"depth\": [10, 15], \"num_wells\": [1, 6]}'.")
_SOLVER = flags.DEFINE_enum("solver", "eigsh", ["eigsh", "lobpcg"],
                            "eigsh: SciPy in worker processes (CPU); lobpcg: "
                            "batched JAX LOBPCG (accelerators).")
_NUM_STATES = flags.DEFINE_integer("num_states", 2, "1 (E0) or 2 (E0, E1).")
_TOL = flags.DEFINE_float("tol", 1e-8, "Residual tolerance in Hartree.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 256, "Samples per shard.")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1,
                                "Worker processes for --solver=eigsh.")
_CHUNK_SIZE = flags.DEFINE_integer(
    "chunk_size", None, "LOBPCG batch; default 1 on CPU (fastest there), a "
    "whole shard on an accelerator.")
_STANDARD = flags.DEFINE_bool("standard_splits", False,
                              "Write the standard set of splits under --out.")
_UNIVERSAL = flags.DEFINE_bool(
    "universal_splits", False, "Write the universal mixture's evaluation "
    "splits under --out: test_<component> per component, val_mixture, "
    "test_mixture (--num_eval samples each; --family, --num and --ranges do "
    "not apply).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace a different dataset in --out.")
_MAX_SHARDS = flags.DEFINE_integer(
    "max_shards", None, "Stop after this many new shards (rerun to continue).")

flags.mark_flags_as_required(["out"])


def _ranges() -> dict:
  if not _RANGES.value:
    return {}
  try:
    ranges = json.loads(_RANGES.value)
  except json.JSONDecodeError as e:
    raise ValueError(f"--ranges is not valid JSON ({e}): "
                     f"{_RANGES.value!r}") from None
  if not isinstance(ranges, dict):
    raise ValueError("--ranges must be a JSON object, e.g. "
                     "'{\"depth\": [10, 15]}'.")
  return ranges


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  jax.config.update("jax_enable_x64", True)
  try:
    grid = cli.grid_from_flags(_GRID.value, _LENGTH.value, _BOUNDARY.value,
                               ndim=_NDIM.value)
    common = dict(solver=_SOLVER.value, num_states=_NUM_STATES.value,
                  tol=_TOL.value, shard_size=_SHARD_SIZE.value)
    out = os.path.normpath(_OUT.value)
    if _STANDARD.value and _UNIVERSAL.value:
      raise ValueError("--standard_splits and --universal_splits write "
                       "different sets: pass one of them.")
    if _NUM.value is None and not _UNIVERSAL.value:
      raise ValueError("--num is required (except with --universal_splits).")
    if _UNIVERSAL.value:
      if (_RANGES.value or _NUM.value is not None
          or flags.FLAGS["family"].present):
        raise ValueError("--family, --ranges and --num do not apply to "
                         "--universal_splits (--num_eval samples per split, "
                         "the universal ranges: see data.family_splits).")
      specs = data.family_splits(grid, _NUM_EVAL.value, seed=_SEED.value,
                                 **common)
      jobs = [(os.path.join(out, name), spec) for name, spec in specs.items()]
    elif _STANDARD.value:
      if _RANGES.value:
        raise ValueError("--ranges does not apply to --standard_splits (its "
                         "ranges are fixed: see data.standard_splits).")
      specs = data.standard_splits(_FAMILY.value, grid, _NUM.value,
                                   _NUM_EVAL.value, seed=_SEED.value, **common)
      jobs = [(os.path.join(out, name), spec) for name, spec in specs.items()]
    else:
      split = _SPLIT.value or os.path.basename(out)
      jobs = [(out, data.DatasetSpec(_FAMILY.value, grid, _NUM.value,
                                     _SEED.value, split, _ranges(),
                                     **common))]
  except (ValueError, TypeError) as e:
    raise SystemExit(f"generate_data: error: {e}") from None

  chunk = _CHUNK_SIZE.value
  if chunk is None and jax.default_backend() == "cpu":
    chunk = 1
  print(f"generating {len(jobs)} split(s) on {grid} with {_SOLVER.value} "
        f"({_WORKERS.value} worker(s)), backend {jax.default_backend()}")
  for path, spec in jobs:
    bar = cli.ProgressBar(f"{spec.split:<18}")
    try:
      meta = data.generate(path, spec, workers=_WORKERS.value,
                           chunk_size=chunk, overwrite=_OVERWRITE.value,
                           max_shards=_MAX_SHARDS.value, progress=bar)
    except (ValueError, locks.FolderInUseError) as e:
      raise SystemExit(f"generate_data: error: {e}") from None
    state = "complete" if meta["complete"] else (
        f"{len(meta['shards'])} of {spec.num_shards} shards, rerun to resume")
    print(f"{path}: {meta['num_samples']} samples, {len(meta['failed'])} "
          f"failed, {state}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("generate_data"))
