"""Convolutional PG-MoE experts: one small CNN on every tile's patch.

The experts contract of :mod:`pgmoe_jax.models.experts`: ``patches (b, T,
*patch, C) -> (b, T, *tile)`` log-amplitude corrections. One network is
shared by all tiles (the tile axis stays a batch axis): ``len(hidden)``
convolutions of ``kernel_size`` points per axis ("SAME" padding, GELU)
over the patch, then a pointwise convolution to one channel, cropped to
the tile (the halo is context only). Which tile it is looking at, it is
told by a learned embedding ``tile_embedding (T, E)``, added through a
linear map as a per-tile bias of the first convolution: the same as ``E``
constant input channels, without broadcasting them over the patch.
Parameters: ``tile_embedding`` and ``conv_expert`` (``Conv_0`` ...,
``tile_bias``), at the top of the model's tree like the MLP experts'.

Where an MLP expert's first layer grows with the patch (``P * C * width``
weights), a convolution's weights do not depend on the patch size; the
receptive field grows by ``kernel_size - 1`` points per layer.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgmoe_jax.models import tiling as tiling_lib


class ConvNet(nn.Module):
  """The convolutions of :class:`ConvExperts` (see the module docstring)."""
  hidden: Sequence[int]
  kernel_size: int = 3
  init_scale: float = 0.01

  @nn.compact
  def __call__(self, x: jax.Array, tile_bias_input: jax.Array) -> jax.Array:
    """``x (b, T, *patch, C)``, ``tile_bias_input (T, E)`` ->
    ``(b, T, *patch, 1)``."""
    d = x.ndim - 3
    for i, width in enumerate(self.hidden):
      x = nn.Conv(width, (self.kernel_size,) * d, padding="SAME",
                  name=f"Conv_{i}")(x)
      if i == 0:
        bias = nn.Dense(width, use_bias=False, name="tile_bias")(
            tile_bias_input)
        x = x + bias.reshape(bias.shape[:1] + (1,) * d + bias.shape[1:])
      x = nn.gelu(x)
    init = nn.initializers.variance_scaling(
        self.init_scale**2, "fan_in", "truncated_normal")
    if self.init_scale == 0:
      init = nn.initializers.zeros
    return nn.Conv(1, (1,) * d, kernel_init=init,
                   name=f"Conv_{len(self.hidden)}")(x)


class ConvExperts(nn.Module):
  """One convolutional expert shared by every tile, plus a tile embedding.

  Attributes:
    tiling: the tiles (their number, shape and halo).
    hidden: channels of each hidden convolution (at least one).
    embedding_dim: size of the tile embedding.
    kernel_size: points per axis of each hidden convolution.
    init_scale: scale of the last (pointwise) layer at initialisation.
  """
  tiling: tiling_lib.Tiling
  hidden: Sequence[int] = (16, 16)
  embedding_dim: int = 8
  kernel_size: int = 3
  init_scale: float = 0.01

  def __post_init__(self):
    if not self.hidden:
      raise ValueError("Convolutional experts need at least one hidden "
                       "layer (expert_hidden), got none.")
    super().__post_init__()

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    """``(b, T, *patch, C) -> (b, T, *tile)``."""
    t = self.tiling
    # float32 like flax's layers (not the default float type, float64
    # under x64, which would promote every activation it joins).
    embedding = self.param("tile_embedding", nn.initializers.normal(1.0),
                           (t.num_tiles, self.embedding_dim), jnp.float32)
    out = ConvNet(tuple(self.hidden), self.kernel_size, self.init_scale,
                  name="conv_expert")(patches, embedding)
    h = t.halo
    crop = tuple(slice(h, h + s) for s in t.tile_shape)
    return out[(slice(None), slice(None)) + crop + (0,)]

  def activations_per_sample(self, input_shape: Sequence[int]) -> int:
    """Values per sample the backward pass keeps: the input patches, each
    hidden convolution's output before and after its GELU, and the
    output."""
    t = self.tiling
    per_patch = math.prod(t.patch_shape)
    hidden = sum(int(w) for w in self.hidden)
    return math.prod(input_shape) + t.num_tiles * per_patch * (
        2 * hidden + 1)


def make_conv_experts(config, tiles: tiling_lib.Tiling) -> ConvExperts:
  """The ``"conv"`` experts of a PG-MoE config (``models.EXPERTS``):
  ``expert_hidden`` are the channels, ``embedding_dim`` and
  ``expert_init_scale`` as for the MLP experts."""
  return ConvExperts(tiles, tuple(config.expert_hidden),
                     int(config.embedding_dim),
                     init_scale=float(config.expert_init_scale))
