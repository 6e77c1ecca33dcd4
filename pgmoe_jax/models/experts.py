"""PG-MoE experts: small networks, one per tile, applied in one batched call.

The experts contract (what :class:`~pgmoe_jax.models.pgmoe.PGMoE` calls):
``experts(patches (b, T, *patch, C)) -> corrections``, the per-tile
log-amplitude corrections ``(b, T, *tile)`` or ``(b, T, S)`` (``S``
points per tile, C order), where ``patches`` are the ``T`` tiles' patches
(tile plus halo, :class:`~pgmoe_jax.models.tiling.Tiling`) with ``C``
feature channels. An experts module also says how many activation values
per sample it keeps for the backward pass
(``activations_per_sample(input_shape)``, ``input_shape = (T, *patch,
C)``), which the memory estimate of a run adds up.

The MLP experts here see each patch flattened, channel by channel
(channel 0's points in C order, then channel 1's, ...):

* :class:`SharedExperts`: one network for all tiles, told which tile by a
  learned embedding (parameter ``tile_embedding``, network ``expert``); the
  tile axis stays a batch axis, so it runs as plain matmuls.
* :class:`StackedExperts`: separate networks with parameters stacked on a
  leading tile axis (``experts``), applied with ``nn.vmap`` (a batched
  matmul per layer).

The last layer starts at ``init_scale`` times the usual size, so an untrained
model is its gate's envelope. Convolutional experts live in
:mod:`pgmoe_jax.models.conv_experts`.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgmoe_jax.models import common


class SharedExperts(nn.Module):
  """One expert network for every tile plus a tile embedding.

  Attributes:
    num_tiles: T.
    hidden: hidden widths.
    out_size: S, points per tile.
    embedding_dim: size of the tile embedding.
    init_scale: scale of the last layer at initialisation.
  """
  num_tiles: int
  hidden: Sequence[int]
  out_size: int
  embedding_dim: int = 8
  init_scale: float = 0.01

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    """``(b, T, *patch, C) -> (b, T, S)``."""
    parts = channel_blocks(patches)
    embedding = self.param("tile_embedding", nn.initializers.normal(1.0),
                           (self.num_tiles, self.embedding_dim))
    expert = common.MLP(self.hidden, self.out_size,
                        last_init_scale=self.init_scale, name="expert")
    # On (b, T, F) as it is: merging b and T would make a spatially
    # sharded mesh gather the tiles.
    if not self.hidden:  # a single layer takes one array: concatenate
      b = parts[0].shape[0]
      return expert(jnp.concatenate(
          parts + [jnp.broadcast_to(embedding, (b,) + embedding.shape)], -1))
    # The embedding (T, E) broadcasts over the batch in the first layer.
    return expert(parts + [embedding])

  def activations_per_sample(self, input_shape: Sequence[int]) -> int:
    """Input, embedding, hidden layers and output, per tile."""
    return self.num_tiles * (
        math.prod(input_shape[1:]) + self.embedding_dim
        + sum(int(h) for h in self.hidden) + self.out_size)


class StackedExperts(nn.Module):
  """Separate expert networks, parameters stacked on a tile axis.

  Attributes are those of :class:`SharedExperts` but ``embedding_dim``.
  """
  num_tiles: int
  hidden: Sequence[int]
  out_size: int
  init_scale: float = 0.01

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    """``(b, T, *patch, C) -> (b, T, S)``."""
    parts = channel_blocks(patches)
    features = parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1)
    experts = nn.vmap(
        common.MLP, variable_axes={"params": 0},
        split_rngs={"params": True}, in_axes=1, out_axes=1,
        axis_size=self.num_tiles)(self.hidden, self.out_size,
                                  last_init_scale=self.init_scale,
                                  name="experts")
    return experts(features)

  def activations_per_sample(self, input_shape: Sequence[int]) -> int:
    """Input, hidden layers and output, per tile."""
    return self.num_tiles * (
        math.prod(input_shape[1:]) + sum(int(h) for h in self.hidden)
        + self.out_size)


def channel_blocks(patches: jax.Array) -> list[jax.Array]:
  """``(b, T, *patch, C)`` as ``C`` blocks ``(b, T, P)``, one per channel.

  The flat features of an MLP expert are their concatenation; the MLP's
  first layer takes the blocks apart (:class:`~pgmoe_jax.models.common.
  PartsDense`), so no concatenated copy is formed.
  """
  b, t = patches.shape[:2]
  return [patches[..., c].reshape(b, t, -1)
          for c in range(patches.shape[-1])]
