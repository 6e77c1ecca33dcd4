"""pgmoe_jax.batching: the one pad-to-batch."""

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.batching import pad_batch


def test_pads_with_copies_of_the_last_row_and_keeps_the_kind():
  x = np.arange(6.0).reshape(3, 2)
  out = pad_batch(x, 5)
  assert isinstance(out, np.ndarray) and out.dtype == x.dtype
  np.testing.assert_array_equal(out, [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
  out = pad_batch(jnp.asarray(x, jnp.float32), 4)
  assert isinstance(out, jax.Array) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, [[0, 1], [2, 3], [4, 5], [4, 5]])


def test_a_full_or_larger_batch_is_returned_as_it_is():
  x = np.zeros((4, 3))
  assert pad_batch(x, 4) is x and pad_batch(x, 2) is x


def test_indices_padded_like_rows():
  # What the scorer reads: the last sample's index repeated.
  np.testing.assert_array_equal(pad_batch(np.arange(8, 10), 4),
                                [8, 9, 9, 9])
