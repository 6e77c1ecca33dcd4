"""PG-MoE experts: small networks, one per tile, applied in one batched call.

Both take the tiles' features ``(b, T, F)``, or a sequence of feature
blocks ``(b, T, F_i)`` that make them when concatenated (the same
parameters and result, without the concatenated copy), and return per-tile
log-amplitude corrections ``(b, T, S)`` (``S`` points per tile):

* :class:`SharedExperts`: one network for all tiles, told which tile by a
  learned embedding (parameter ``tile_embedding``, network ``expert``); the
  tile axis is folded into the batch, so it runs as plain matmuls.
* :class:`StackedExperts`: separate networks with parameters stacked on a
  leading tile axis (``experts``), applied with ``nn.vmap`` (a batched
  matmul per layer).

The last layer starts at ``init_scale`` times the usual size, so an untrained
model is its gate's envelope.
"""

from __future__ import annotations

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
  def __call__(self, features: jax.Array | Sequence[jax.Array]) -> jax.Array:
    parts = _parts(features)
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


class StackedExperts(nn.Module):
  """Separate expert networks, parameters stacked on a tile axis.

  Attributes are those of :class:`SharedExperts` but ``embedding_dim``.
  """
  num_tiles: int
  hidden: Sequence[int]
  out_size: int
  init_scale: float = 0.01

  @nn.compact
  def __call__(self, features: jax.Array | Sequence[jax.Array]) -> jax.Array:
    parts = _parts(features)
    features = parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1)
    experts = nn.vmap(
        common.MLP, variable_axes={"params": 0},
        split_rngs={"params": True}, in_axes=1, out_axes=1,
        axis_size=self.num_tiles)(self.hidden, self.out_size,
                                  last_init_scale=self.init_scale,
                                  name="experts")
    return experts(features)


def _parts(features) -> list[jax.Array]:
  """Feature blocks as a list (one array is one block)."""
  return [features] if isinstance(features, jax.Array) else list(features)
