"""Serving a trained model: float32 potentials in, checked float64 states out.

:class:`Predictor` is what evaluation and the prediction workflow need from
a model (``grid``, ``num_params``, ``predict(V) -> psi``);
:class:`pgmoe_jax.inference.Predictor` is one. :func:`predict_batch` calls
one on ``(m, *grid.shape)`` potentials the way every consumer does: cast to
:data:`INPUT_DTYPE` (what models are trained on and served with), padded to
a fixed batch so a jitted model compiles once, the states returned in
float64 with the padding dropped, and a wrong shape or NaN/inf named.

It lives with the models, below evaluation (which scores with it; inference
is above evaluation), so that evaluation and the prediction workflow share
this one implementation.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax.batching import pad_batch
from pgmoe_jax.grid import Grid

INPUT_DTYPE = np.float32  # what models are trained on and served with


class Predictor(Protocol):
  """What evaluation needs from a model.

  Attributes:
    grid: the grid the model was trained on.
    num_params: the number of trainable parameters.
  """
  grid: Grid
  num_params: int

  def predict(self, V) -> Any:  # pylint: disable=invalid-name
    """Potentials ``(b, *grid.shape)`` (Ha) -> states of the same shape."""


def predict_batch(predictor: Predictor, potentials, grid: Grid,
                  batch_size: int | None = None) -> jax.Array:
  """Predicts float64 states for ``(m, *grid.shape)`` potentials, checked.

  The potentials go in as float32 (what models are served with), padded to
  ``batch_size`` by repeating the last one (so a jitted model compiles once);
  the padding is dropped again.

  Raises:
    ValueError: the model returned another shape, or NaN/inf.
  """
  potentials = np.asarray(potentials, INPUT_DTYPE)
  m = len(potentials)
  if batch_size is not None:
    potentials = pad_batch(potentials, batch_size)
  out = jnp.asarray(predictor.predict(jax.device_put(potentials)),
                    jnp.float64)
  if out.shape != potentials.shape:
    raise ValueError(
        f"The model returned states of shape {out.shape} for potentials of "
        f"shape {potentials.shape}; predict must keep the shape (b, "
        f"{', '.join(map(str, grid.shape))}).")
  out = out[:m]
  finite = np.isfinite(np.asarray(out)).reshape(m, -1).all(axis=1)
  if not finite.all():
    raise ValueError(
        f"The model predicted NaN or inf for {int((~finite).sum())} of {m} "
        "potentials in a batch; check the potentials for NaN/inf, or the "
        "checkpoint may have diverged.")
  return out
