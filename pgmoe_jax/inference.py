"""Using a trained model: ``load_model(workdir).predict(V) -> psi``.

:func:`load_model` rebuilds the model from ``<workdir>/config.json`` and
restores only its parameters from ``<workdir>/checkpoints`` (no optimiser,
no training code, no pickle); it is the supported way to use a trained
model. The returned :class:`Predictor` maps potentials in Hartree, shape
``(..., *grid.shape)``, to positive ground states normalised so that
``sum(psi**2) prod(h) = 1``, of the same shape, computed in the training
dtype. It needs the models and the run-directory reader
(:mod:`pgmoe_jax.rundir`) only: nothing of training, the loop or the
optimiser.

``symmetrize=True`` averages the predictions for every exact symmetry of
the grid (for a square 2-D grid the 8 rotations and reflections): ``V`` is
transformed, predicted, mapped back, and the mean is normalised. The
stencil Hamiltonian commutes with these symmetries, so each back-mapped
prediction is as valid as the plain one; their errors are partly
independent, the mean is exactly equivariant, and it costs one model call on
a batch that many times larger.

Nothing here runs at import.
"""

from __future__ import annotations

import math
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pgmoe_jax import models
from pgmoe_jax import paths
from pgmoe_jax.grid import Grid
from pgmoe_jax.memory import check_fits
from pgmoe_jax.models.resolve import param_shapes
from pgmoe_jax.models.resolve import resolve_model
from pgmoe_jax.rundir import checkpoint
from pgmoe_jax.rundir import workdir as workdir_lib
from pgmoe_jax.symmetry import symmetrized

WHICH = ("best", "latest")


class Predictor:
  """A trained model, ready to predict.

  Attributes:
    config: the run's config (as read from ``config.json``).
    grid: the grid the model works on.
    model: the flax module.
    params: the restored parameters.
    num_params: the number of trainable parameters.
    step: the training step the parameters are from.
    dtype: the dtype predictions are computed in (the training dtype).
    symmetrize: whether predictions are averaged over the grid's exact
      symmetries (see the module docstring).
    apply_kwargs: keyword arguments of every ``model.apply`` call (for
      instance ``{"use_experts": False}`` for a PG-MoE's gate alone).
  """

  def __init__(self, config: ml_collections.ConfigDict, grid: Grid, model,
               params: Any, step: int, symmetrize: bool = False,
               apply_kwargs: dict[str, Any] | None = None):
    self.config = config
    self.grid = grid
    self.model = model
    self.params = params
    self.step = int(step)
    self.num_params = models.count_params(params)
    self.dtype = jnp.dtype(config.dtype)
    self.symmetrize = bool(symmetrize)
    self.apply_kwargs = dict(apply_kwargs or {})
    apply = lambda p, v: model.apply({"params": p}, v, **self.apply_kwargs)
    if self.symmetrize:
      apply = symmetrized(apply, grid)
    self._apply = jax.jit(apply)
    self._fits: set[int] = set()  # batch sizes whose memory check passed

  def __repr__(self) -> str:
    average = ", symmetrized" if self.symmetrize else ""
    options = "".join(f", {k}={v!r}" for k, v in self.apply_kwargs.items())
    return (f"Predictor({self.config.model.name}, {self.grid}, "
            f"{self.num_params} parameters, step {self.step}{average}"
            f"{options})")

  def replace(self, **changes) -> "Predictor":
    """The same model with other ``symmetrize`` or ``apply_kwargs``."""
    fields = dict(symmetrize=self.symmetrize, apply_kwargs=self.apply_kwargs)
    fields.update(changes)
    return Predictor(self.config, self.grid, self.model, self.params,
                     self.step, **fields)

  def _check_memory(self, count: int) -> None:
    """Refuses a batch that cannot fit, reading the free memory once per
    batch size (a batch size that fitted is not checked again)."""
    if count in self._fits:
      return
    check_fits(16.0 * count * self.grid.size * self.dtype.itemsize,
               f"predict() on {count} potential(s) of {self.grid}",
               "predict in smaller batches")
    self._fits.add(count)

  def predict(self, V) -> jax.Array:  # pylint: disable=invalid-name
    """Predicts ground states.

    Args:
      V: potentials in Hartree, ``(*grid.shape)`` for one or
        ``(..., *grid.shape)`` for a batch (any number of leading axes);
        NumPy or JAX, cast to the model's dtype.

    Returns:
      psi with the shape of ``V``: positive, normalised states.

    Raises:
      ValueError: the trailing axes of ``V`` are not the grid's shape, or
        the batch is empty.
    """
    shape = tuple(np.shape(V))
    d = self.grid.ndim
    if len(shape) < d or shape[len(shape) - d:] != self.grid.shape:
      dims = ", ".join(map(str, self.grid.shape))
      raise ValueError(f"predict() takes potentials of shape ({dims}) or "
                       f"(batch, {dims}) for {self.grid}, got {shape}.")
    lead = shape[:len(shape) - d]
    if 0 in lead:
      raise ValueError(f"predict() got an empty batch (shape {shape}): there "
                       "is nothing to predict; pass at least one potential.")
    self._check_memory(math.prod(lead))
    if not isinstance(V, jax.core.Tracer) and not bool(
        jnp.all(jnp.isfinite(jnp.asarray(V)))):
      bad = np.argwhere(~np.isfinite(np.asarray(V)))[0]
      raise ValueError(
          f"predict() got a potential with NaN or inf (first at index "
          f"{tuple(int(i) for i in bad)}); the model cannot say anything "
          "about it. Check the input data.")
    v = jnp.asarray(V, self.dtype).reshape((-1,) + self.grid.shape)
    return self._apply(self.params, v).reshape(lead + self.grid.shape)


def load_model(workdir: str, which: str = "best",
               symmetrize: bool = False) -> Predictor:
  """Loads a trained model from its training workdir.

  Args:
    workdir: the directory ``experiments.train --workdir`` wrote.
    which: ``"best"``: the checkpoint with the lowest validation
      ``train.best_metric``, or the latest one if the run had no validation
      set; ``"latest"``: the newest checkpoint.
    symmetrize: average every prediction over the grid's exact symmetries
      (see the module docstring): more accurate, that many times the cost.

  Returns:
    A :class:`Predictor`.

  Checkpoints are verified against the checksums written with them; if the
  chosen one is damaged, the newest intact one is used with a
  ``RuntimeWarning`` that names both.

  Raises:
    ValueError: an unknown ``which``, a missing workdir, no ``config.json``,
      an edited ``config.json``, no checkpoint, no intact checkpoint, or a
      checkpoint that does not match the config.
  """
  if which not in WHICH:
    raise ValueError(f"Unknown which={which!r}; use one of "
                     f"{', '.join(WHICH)}.")
  if not paths.resolve(workdir).is_dir():
    raise ValueError(f"No such workdir: {workdir}.")
  config = workdir_lib.load_config(workdir)
  setup = resolve_model(config)
  dtype, grid, model = setup.dtype, setup.grid, setup.model
  directory = checkpoint.checkpoint_dir(workdir)
  if not paths.resolve(directory).is_dir() or not any(
      paths.resolve(directory).iterdir()):
    raise ValueError(f"{workdir} has no checkpoint (nothing in {directory}); "
                     "the run saved none yet.")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, dtype, sharding=device),
      param_shapes(setup))
  best_metric = config.train.best_metric if config.data.val else None
  with checkpoint.Checkpoints(directory, best_metric=best_metric,
                              read_only=True) as ckpts:
    step = ckpts.best_step() if which == "best" else None
    if step is None:
      step = ckpts.latest_step()
    if step is None:
      raise ValueError(f"{workdir} has no complete checkpoint in "
                       f"{directory}.")
    wanted = step
    step, params, _, damaged = ckpts.restore_intact(abstract, prefer=step)
  if damaged:
    warnings.warn(
        f"load_model({workdir!r}): checkpoint step(s) "
        f"{', '.join(str(s) for s, _ in damaged)} are damaged "
        f"({damaged[0][1]}); using step {step} instead of step {wanted}.",
        RuntimeWarning, stacklevel=2)
  return Predictor(config, grid, model, params, step, symmetrize)
