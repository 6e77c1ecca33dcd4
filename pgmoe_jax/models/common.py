"""Pieces shared by the models: input checks, MLPs, smooth bounds."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgmoe_jax.grid import Grid


def check_potential(potential: jax.Array, grid: Grid) -> None:
  """Models take a batch ``(b, *grid.shape)``; raise a clear error if not."""
  if potential.ndim != grid.ndim + 1 or potential.shape[1:] != grid.shape:
    raise ValueError(
        f"The model expects potentials of shape (batch, "
        f"{', '.join(map(str, grid.shape))}) for {grid}, got "
        f"{tuple(potential.shape)}.")


def squash(x: jax.Array, bound: float) -> jax.Array:
  """``bound * tanh(x / bound)``: identity near 0, smooth limit at +-bound.

  ``bound = 0`` disables it.
  """
  if not bound:
    return x
  return bound * jnp.tanh(x / bound)


def damping(excess: jax.Array) -> jax.Array:
  """1 where ``excess <= 1``, falling like ``excess^-2`` beyond."""
  return 1.0 / (1.0 + jax.nn.relu(excess - 1.0)**2)


class PartsDense(nn.Module):
  """``nn.Dense`` of the concatenation of ``parts``, without forming it.

  ``concatenate(parts, -1) @ kernel + bias`` computed as
  ``sum_i parts[i] @ kernel_i + bias`` (``kernel_i`` the rows of part
  ``i``); parts broadcast against each other in their leading axes (a
  per-tile embedding ``(T, E)`` joins per-sample features ``(b, T, F)``
  without a broadcast copy). The parameters are ``nn.Dense``'s, with the
  same names, shapes and initialisation: a checkpoint of one loads into
  the other. Separate matmuls, because XLA on CPU fuses a concatenation
  into the matmul's operand and then runs the matmul far slower.
  """
  features: int

  @nn.compact
  def __call__(self, parts: Sequence[jax.Array]) -> jax.Array:
    widths = [int(x.shape[-1]) for x in parts]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (sum(widths), self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      jnp.float32)
    dtype = jnp.result_type(*parts, kernel, bias)  # as nn.Dense promotes
    out, start = None, 0
    for x, w in zip(parts, widths):
      term = jnp.matmul(x.astype(dtype), kernel[start:start + w].astype(dtype))
      out = term if out is None else out + term
      start += w
    return out + bias.astype(dtype)


class MLP(nn.Module):
  """GELU MLP; the last layer starts at ``last_init_scale`` x the usual init.

  A small last layer makes a freshly initialised correction network output
  nearly zero, so a model starts from its physics prior. The input is one
  array or a sequence of parts whose concatenation (last axis) is the
  input (:class:`PartsDense`: the same parameters, no concatenated copy).
  """
  hidden: Sequence[int]
  out: int
  last_init_scale: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array | Sequence[jax.Array]) -> jax.Array:
    init = nn.initializers.variance_scaling(
        self.last_init_scale**2, "fan_in", "truncated_normal")
    if self.last_init_scale == 0:
      init = nn.initializers.zeros
    parts = None if isinstance(x, jax.Array) else tuple(x)
    if parts is not None and not self.hidden:
      raise ValueError("An MLP without hidden layers takes one input array.")
    # Explicit names, those flax gives nn.Dense layers by itself.
    for i, width in enumerate(self.hidden):
      if i == 0 and parts is not None:
        x = PartsDense(width, name="Dense_0")(parts)
      else:
        x = nn.Dense(width, name=f"Dense_{i}")(x)
      x = nn.gelu(x)
    return nn.Dense(self.out, kernel_init=init,
                    name=f"Dense_{len(self.hidden)}")(x)
