"""Small builders shared by several test files (imported as ``helpers``)."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import ground_state
from pgmoe_jax import potentials


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
