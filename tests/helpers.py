"""Small builders shared by several test files (imported as ``helpers``)."""

import errno
import importlib
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import data
from pgmoe_jax import ground_state
from pgmoe_jax import potentials


def import_script(name):
  """``experiments.<name>``, imported into this test process.

  Scripts define their absl flags when imported, and two scripts may name
  a flag alike (``--data``); one pytest-xdist worker may import both. The
  flags the other scripts defined are removed first (tests call the
  scripts' functions, never their parsed flags in-process), so the import
  order of the test files does not matter.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  module = f"experiments.{name}"
  if module in sys.modules:
    return sys.modules[module]
  for owner, defined in list(flags.FLAGS.flags_by_module_dict().items()):
    if owner.startswith("experiments.") and owner != module:
      for flag in list(defined):
        if flag.name in flags.FLAGS:
          delattr(flags.FLAGS, flag.name)
  return importlib.import_module(module)


def labelled(grid, count=3, seed=0):
  """A labelled batch of gaussian wells solved with the reference solver."""
  v = np.asarray(potentials.gaussian_wells(jax.random.key(seed), grid,
                                           (count,)))
  e0, psi0 = ground_state(v, grid)
  return {"potential": jnp.asarray(v), "psi0": jnp.asarray(psi0),
          "E0": jnp.asarray(e0)}


def four_cpu_devices_env(**extra):
  """The environment of a child process with 4 forced CPU devices.

  ``XLA_FLAGS`` keeps what the session set (conftest.py) and gains the
  device count.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4",
              **extra)


# How a full disk reaches orbax's background writer: TensorStore reports it
# as a ValueError carrying the OS error code in its text, Python's own file
# writes as an OSError.
DISK_FULL_ERRORS = {
    "tensorstore": lambda where: ValueError(
        f'RESOURCE_EXHAUSTED: Error writing local file "{where}/metadata": '
        "Failed to write 330 bytes to file 30: No space left on device "
        "[os_error_code='28']"),
    "oserror": lambda where: OSError(errno.ENOSPC,
                                     os.strerror(errno.ENOSPC)),
}


def disk_full_at_checkpoint(step, how="tensorstore", patch=setattr):
  """Makes the save of checkpoint ``step`` fail as on a full disk.

  The step's checksums file fails in orbax's background writer with one of
  :data:`DISK_FULL_ERRORS`; the other steps are written as usual. ``patch``
  is ``setattr`` or pytest's ``monkeypatch.setattr`` (undone after the
  test).
  """
  # pylint: disable-next=g-import-not-at-top
  from orbax.checkpoint._src.handlers import json_checkpoint_handler
  handler = json_checkpoint_handler.JsonCheckpointHandler
  save = handler._save_fn  # pylint: disable=protected-access
  pattern = re.compile(rf"[/\\]{step}\.orbax-checkpoint-tmp")

  async def failing_save(self, item, directory):
    if pattern.search(str(directory)):
      raise DISK_FULL_ERRORS[how](directory)
    return await save(self, item, directory)

  patch(handler, "_save_fn", failing_save)


def wells_splits(root, grid, sizes=(("train", 32), ("val", 16)),
                 shard_size=16):
  """Labelled gaussian-wells splits under ``root``: ``{split: path}``."""
  paths = {}
  for split, num in sizes:
    paths[split] = os.path.join(str(root), split)
    data.generate(paths[split], data.DatasetSpec(
        "gaussian_wells", grid, num, split=split, shard_size=shard_size))
  return paths
