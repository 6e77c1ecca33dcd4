r"""Training objectives: supervised, variational energy, and their mixtures.

* Supervised: the infidelity :math:`1 - F` of the prediction against the
  labelled ground state (scale and sign invariant), or the MSE of the
  normalised states.
* Variational energy: :math:`E[\psi] - E_0` under the exact stencil
  Hamiltonian where labels exist, :math:`E[\psi]` alone where they do not.
  By the variational principle it is minimised if and only if ``psi`` is the
  ground state, so it needs no labels: potentials can be drawn fresh at every
  step from a family (``data.make_potential_stream``).

Modes (``config.loss.mode``):

* ``"supervised"``: labelled batches; ``supervised_weight * L_sup +
  energy_weight(step) * (E - E0)`` (``energy_weight = 0`` is plain supervised
  learning).
* ``"semi_supervised"``: as above, plus the energy of
  ``unlabelled_batch_size`` potentials streamed from ``data.family``.
* ``"label_free"``: the energy of streamed potentials only; no eigen-solver
  anywhere.

The energy weight follows ``config.loss.schedule``: ``"constant"``, or
``"anneal"``: a smooth ramp from 0 to ``energy_weight`` over
``anneal_steps`` (``w (1 - cos(pi t / T)) / 2``), in the spirit of
CoPhy-PGNN's annealing of competing physics losses: the supervised term
shapes the solution first, the physics term then refines it.

Augmentation (``config.loss.augment``): a random element of the grid's exact
symmetry group (rotations by 90 degrees and reflections of square 2-D grids;
axis reflections otherwise, and axis permutations of equal axes), applied to
``V``, ``psi0`` alike. Reflections are exact symmetries of the Dirichlet and
periodic grids since the coordinates are symmetric about 0.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import data as data_lib
from pgmoe_jax.energy import rayleigh_quotient
from pgmoe_jax.energy import residual_norm
from pgmoe_jax.grid import Grid
from pgmoe_jax.metrics import MHA_PER_HA
from pgmoe_jax.metrics import infidelity

MODES = ("supervised", "semi_supervised", "label_free")
SUPERVISED = ("infidelity", "mse")
SCHEDULES = ("constant", "anneal")

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _inner(a, b, grid: Grid):
  return jnp.sum(a * b, axis=grid.axes)


def normalized_mse(psi, psi0, grid: Grid) -> jax.Array:
  """Per-sample MSE of the normalised states (each with a positive sum)."""
  def unit(x):
    x = x / jnp.sqrt(jnp.expand_dims(_inner(x, x, grid) * grid.volume_element,
                                     grid.axes))
    sign = jnp.where(jnp.sum(x, axis=grid.axes) < 0, -1.0, 1.0)
    return x * jnp.expand_dims(sign, grid.axes)
  return jnp.mean((unit(psi) - unit(psi0))**2, axis=grid.axes)


def eval_metrics(psi, batch: Mapping[str, jax.Array],
                 grid: Grid) -> dict[str, jax.Array]:
  """Per-sample metrics of predictions against a labelled batch.

  Returns:
    ``infidelity``, ``energy_error_mha`` (``E[psi] - E0``) and ``residual``
    (Ha), each of shape ``(b,)``, in the dtype of ``psi``.
  """
  potential = batch["potential"].astype(psi.dtype)
  e = rayleigh_quotient(psi, potential, grid)
  return {
      "infidelity": infidelity(psi, batch["psi0"].astype(psi.dtype), grid),
      "energy_error_mha": (e - batch["E0"].astype(psi.dtype)) * MHA_PER_HA,
      "residual": residual_norm(psi, potential, grid),
  }


Transform = Callable[[jax.Array], jax.Array]


def symmetry_transforms(grid: Grid) -> list[Transform]:
  """The grid's exact symmetries as functions on ``(..., *grid.shape)``.

  Axis reflections always hold (symmetric coordinates); permutations of
  axes hold between axes with equal points and lengths. For a square 2-D
  grid this is the 8-element dihedral group of rotations and reflections.
  """
  d = grid.ndim
  axes = grid.axes
  perms = [p for p in itertools.permutations(range(d))
           if all(grid.shape[i] == grid.shape[p[i]] and
                  grid.length[i] == grid.length[p[i]] for i in range(d))]
  transforms = []
  for perm in perms:
    for flips in itertools.product((False, True), repeat=d):
      def transform(x, perm=perm, flips=flips):
        lead = x.ndim - d
        x = jnp.transpose(x, tuple(range(lead)) + tuple(lead + p
                                                        for p in perm))
        flip_axes = tuple(a for a, f in zip(axes, flips) if f)
        return jnp.flip(x, flip_axes) if flip_axes else x
      transforms.append(transform)
  return transforms


def symmetry_pairs(grid: Grid) -> list[tuple[Transform, Transform]]:
  """:func:`symmetry_transforms`, each paired with its inverse.

  The symmetries form a group, so every inverse is one of them; it is found
  by probing with the grid's flat indices.
  """
  transforms = symmetry_transforms(grid)
  probe = jnp.arange(grid.size).reshape(grid.shape)
  pairs = []
  for transform in transforms:
    image = transform(probe)
    inverse = next(u for u in transforms
                   if np.array_equal(u(image), probe))
    pairs.append((transform, inverse))
  return pairs


def augment(key: jax.Array, batch: Mapping[str, jax.Array],
            grid: Grid) -> dict[str, jax.Array]:
  """Applies one random exact symmetry to the batch's spatial arrays."""
  transforms = symmetry_transforms(grid)
  choice = jax.random.randint(key, (), 0, len(transforms))
  out = dict(batch)
  for name in ("potential", "psi0"):
    if name in batch:
      out[name] = jax.lax.switch(choice, transforms, batch[name])
  return out


def energy_weight(config, step) -> jax.Array:
  """The energy-loss weight at ``step`` under ``config.loss.schedule``."""
  loss = config.loss
  w = float(loss.energy_weight)
  if loss.schedule == "constant":
    return jnp.asarray(w, jnp.float32)
  t = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(loss.anneal_steps), 1),
               0.0, 1.0)
  return w * 0.5 * (1.0 - jnp.cos(math.pi * t))


def needs_labels(config) -> bool:
  """Whether the loss reads labelled batches (all modes but label-free)."""
  return config.loss.mode != "label_free"


def check_config(config) -> None:
  """Raises ValueError for loss settings that cannot work."""
  loss = config.loss
  if loss.mode not in MODES:
    raise ValueError(f"Unknown loss.mode {loss.mode!r}; known: "
                     f"{', '.join(MODES)}.")
  if loss.supervised not in SUPERVISED:
    raise ValueError(f"Unknown loss.supervised {loss.supervised!r}; known: "
                     f"{', '.join(SUPERVISED)}.")
  if loss.schedule not in SCHEDULES:
    raise ValueError(f"Unknown loss.schedule {loss.schedule!r}; known: "
                     f"{', '.join(SCHEDULES)}.")
  if loss.mode != "supervised" and loss.energy_weight <= 0:
    raise ValueError(f"loss.mode={loss.mode!r} trains on the energy, so "
                     "loss.energy_weight must be positive.")
  if loss.mode == "label_free":
    data_lib.potentials_lib.get_family(config.data.family)


def make_loss_fn(config, grid: Grid, apply_fn: ApplyFn):
  """Builds ``loss_fn(params, batch, key, step) -> (loss, metrics)``.

  Args:
    config: the full config (``loss`` and ``data`` sections are read).
    grid: the grid.
    apply_fn: ``apply_fn(params, V) -> psi``.

  Returns:
    A pure function; ``batch`` is a labelled batch (``{}`` in label-free
    mode), ``key`` the step's PRNG key, ``step`` the step number. Metrics are
    scalars: ``loss``, ``energy_weight`` and, as they apply,
    ``supervised`` (the supervised term), ``infidelity``,
    ``energy_error_mha`` (labelled, mean) and ``energy`` (unlabelled, mean,
    Ha).
  """
  check_config(config)
  loss_cfg = config.loss
  supervised_fn = (infidelity if loss_cfg.supervised == "infidelity"
                   else normalized_mse)
  stream = None
  if loss_cfg.mode in ("semi_supervised", "label_free"):
    dtype = jnp.dtype(config.get("dtype", "float32"))
    ranges = config.data.get("ranges", None) or {}
    if hasattr(ranges, "to_dict"):
      ranges = ranges.to_dict()
    stream = data_lib.make_potential_stream(
        config.data.family, grid, int(loss_cfg.unlabelled_batch_size),
        dtype=dtype, **ranges)

  def loss_fn(params, batch, key, step):
    key_aug, key_stream = jax.random.split(key)
    # Label-free training has nothing to anneal against: full weight always.
    w_energy = (energy_weight(config, step) if loss_cfg.mode != "label_free"
                else jnp.asarray(float(loss_cfg.energy_weight), jnp.float32))
    metrics = {"energy_weight": w_energy}
    total = 0.0
    if loss_cfg.mode != "label_free":
      if loss_cfg.augment:
        batch = augment(key_aug, batch, grid)
      v = batch["potential"]
      psi = apply_fn(params, v)
      sup = jnp.mean(supervised_fn(psi, batch["psi0"].astype(psi.dtype),
                                   grid))
      e_err = jnp.mean(rayleigh_quotient(psi, v.astype(psi.dtype), grid)
                       - batch["E0"].astype(psi.dtype))
      total = loss_cfg.supervised_weight * sup
      if loss_cfg.energy_weight > 0:
        total = total + w_energy * e_err
      metrics.update(
          supervised=sup, energy_error_mha=e_err * MHA_PER_HA,
          infidelity=jnp.mean(infidelity(psi, batch["psi0"].astype(psi.dtype),
                                         grid)))
    if stream is not None:
      v_free = stream(key_stream)
      e_free = jnp.mean(rayleigh_quotient(apply_fn(params, v_free), v_free,
                                          grid))
      total = total + w_energy * e_free
      metrics["energy"] = e_free
    metrics["loss"] = total
    return total, metrics

  return loss_fn
