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
Datasets are memory-mapped, so they live on a local or mounted filesystem.

* :mod:`~pgmoe_jax.data.spec`: :class:`DatasetSpec` (everything that fixes
  the bytes), :func:`standard_splits`, :func:`family_splits` (the
  mixture's evaluation splits), the per-sample keys.
* :mod:`~pgmoe_jax.data.generate`: :func:`generate` (resumable, validated,
  worker processes) and :func:`check_samples`.
* :mod:`~pgmoe_jax.data.dataset`: :func:`open_dataset`, :class:`Dataset`
  (``.potentials``, ``.psi0``, ``.E0`` memory-mapped, ``.batches(...)``,
  ``Dataset.from_arrays`` for data a user already has), :class:`ShardedArray`.
* :mod:`~pgmoe_jax.data.files`: the directory's files and atomic writes.

Nothing here does I/O at import.
"""

from pgmoe_jax.data.dataset import Dataset
from pgmoe_jax.data.dataset import ShardedArray
from pgmoe_jax.data.dataset import open_dataset
from pgmoe_jax.data.generate import check_samples
from pgmoe_jax.data.generate import generate
from pgmoe_jax.data.spec import DatasetSpec
from pgmoe_jax.data.spec import EXTRAP_RANGES
from pgmoe_jax.data.spec import OOD_FAMILIES
from pgmoe_jax.data.spec import family_splits
from pgmoe_jax.data.spec import make_split_sampler
from pgmoe_jax.data.spec import split_key
from pgmoe_jax.data.spec import standard_splits

__all__ = [
    "Dataset", "DatasetSpec", "EXTRAP_RANGES", "OOD_FAMILIES", "ShardedArray",
    "check_samples", "family_splits", "generate", "make_split_sampler",
    "open_dataset", "split_key", "standard_splits",
]
