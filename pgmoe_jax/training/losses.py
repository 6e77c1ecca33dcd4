r"""Training objectives: supervised, variational energy, and their mixtures.

* Supervised: the infidelity :math:`1 - F` of the prediction against the
  labelled ground state (scale and sign invariant), or the MSE of the
  normalised states.
* Variational energy: :math:`E[\psi] - E_0` under the exact stencil
  Hamiltonian where labels exist, :math:`E[\psi]` alone where they do not.
  By the variational principle it is minimised if and only if ``psi`` is the
  ground state, so it needs no labels: potentials can be drawn fresh at every
  step from a family (:func:`pgmoe_jax.potentials.make_potential_stream`).

Modes (``config.loss.mode``):

* ``"supervised"``: labelled batches; ``supervised_weight * L_sup +
  energy_weight(step) * (E - E0)`` (``energy_weight = 0`` is plain supervised
  learning).
* ``"semi_supervised"``: as above, plus the energy of
  ``unlabelled_batch_size`` potentials streamed from ``data.family``.
* ``"label_free"``: the energy of streamed potentials only; no eigen-solver
  anywhere.

The streamed potentials' term is their mean energy, or, with
``loss.unlabelled_objective = "log_residual"``, the mean log squared
eigen-residual ``log(|H psi - E psi|^2 / |psi|^2)`` (label-free too, and
scale-free per state: a batch mean of energies is dominated by its worst
states, the log residual weighs each state's relative progress alike; its
minima are every eigenstate, so it suits models that start near the ground
state, such as the ``"sweeps"`` gate). ``loss.unlabelled_energy_weight``
(``w``, 1/Ha) adds ``w`` times the mean energy to it: the residual of a
state that mixes a near-degenerate doublet (split by ``delta``) is about
``sqrt(dE delta)``, below the fine-scale residual of every other error, so
the log residual alone barely sees which well a tunnelling state sits in;
the energy sees it at full weight. ``loss.residual_power`` (``p > 0``)
replaces the mean log by ``(1/p) log mean(r^(2p))``, the log of a power
mean: each state's gradient is weighted by ``r^(2p)``, so the worst
states weigh more (``p -> 0``: the mean log; ``p = 1``: the log of the
mean).

The energy weight follows ``config.loss.schedule``: ``"constant"``, or
``"anneal"``: a smooth ramp from 0 to ``energy_weight`` over
``anneal_steps`` (``w (1 - cos(pi t / T)) / 2``), in the spirit of
CoPhy-PGNN's annealing of competing physics losses: the supervised term
shapes the solution first, the physics term then refines it.

Augmentation (``config.loss.augment``): a random element of the grid's exact
symmetry group (:mod:`pgmoe_jax.symmetry`), applied to ``V`` and ``psi0``
alike.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from pgmoe_jax.grid import Grid
from pgmoe_jax.metrics import MHA_PER_HA
from pgmoe_jax.metrics import infidelity
from pgmoe_jax.sharding import constrain_space
from pgmoe_jax.symmetry import symmetry_transforms
from pgmoe_jax.training.config import LossConfig
from pgmoe_jax.training.config import Run
from pgmoe_jax.variational import normalize_unchecked
from pgmoe_jax.variational import rayleigh_quotient
from pgmoe_jax.variational import residual_norm

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def normalized_mse(psi, psi0, grid: Grid) -> jax.Array:
  """Per-sample MSE of the normalised states (each with a positive sum)."""
  return jnp.mean((normalize_unchecked(psi, grid)
                   - normalize_unchecked(psi0, grid))**2, axis=grid.axes)


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


def energy_weight(loss: LossConfig, step, weight=None) -> jax.Array:
  """The energy-loss weight at ``step`` under ``loss.schedule``.

  ``weight`` (possibly traced) replaces ``loss.energy_weight``; the result
  is float32 either way.
  """
  w = jnp.asarray(loss.energy_weight if weight is None else weight,
                  jnp.float32)
  if loss.schedule == "constant":
    return w
  t = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(loss.anneal_steps), 1),
               0.0, 1.0)
  return w * 0.5 * (1.0 - jnp.cos(math.pi * t))


def make_loss_fn(run: Run, apply_fn: ApplyFn, batch_sharding=None,
                 hparams: Mapping[str, jax.Array] | None = None):
  """Builds ``loss_fn(params, batch, key, step) -> (loss, metrics)``.

  Args:
    run: the resolved config (:func:`pgmoe_jax.training.config.resolve`).
    apply_fn: ``apply_fn(params, V) -> psi``.
    batch_sharding: if given, the streamed potentials are laid out along
      the batch axis with it, so each device draws only its part of the
      global batch (JAX's partitionable PRNG makes the values the same for
      any device count): N devices stream N times the potentials per second.
    hparams: values that replace the config's ``loss.energy_weight`` and
      ``loss.supervised_weight``, by those names; other keys are ignored.
      They may be traced (a population member's, passed in by its vmapped
      step, :mod:`pgmoe_jax.training.population`).

  Returns:
    A pure function; ``batch`` is a labelled batch (``{}`` in label-free
    mode), ``key`` the step's PRNG key, ``step`` the step number. Metrics are
    scalars: ``loss``, ``energy_weight`` and, as they apply,
    ``log_residual`` (unlabelled, with that objective),
    ``supervised`` (the supervised term), ``infidelity``,
    ``energy_error_mha`` (labelled, mean) and ``energy`` (unlabelled, mean,
    Ha).
  """
  grid, stream, loss_cfg = run.grid, run.stream, run.loss
  supervised_fn = (infidelity if loss_cfg.supervised == "infidelity"
                   else normalized_mse)
  hparams = hparams or {}
  w_config = hparams.get("loss.energy_weight", loss_cfg.energy_weight)
  w_supervised = hparams.get("loss.supervised_weight",
                             loss_cfg.supervised_weight)
  # An energy weight fixed at 0 leaves the term out of the gradient; a
  # traced one may be 0 or not.
  energy_term = not isinstance(w_config, (int, float)) or w_config > 0

  def loss_fn(params, batch, key, step):
    key_aug, key_stream = jax.random.split(key)
    # Label-free training has nothing to anneal against: full weight always.
    w_energy = (jnp.asarray(w_config, jnp.float32)
                if loss_cfg.mode == "label_free"
                else energy_weight(loss_cfg, step, w_config))
    metrics = {"energy_weight": w_energy}
    total = 0.0
    if loss_cfg.mode != "label_free":
      if loss_cfg.augment:
        batch = augment(key_aug, batch, grid)
      # Split along the first grid axis on a spatially sharded mesh (a
      # no-op otherwise).
      v = constrain_space(batch["potential"], grid.ndim)
      psi = apply_fn(params, v)
      psi0 = constrain_space(batch["psi0"], grid.ndim)
      sup = jnp.mean(supervised_fn(psi, psi0.astype(psi.dtype), grid))
      e_err = jnp.mean(rayleigh_quotient(psi, v.astype(psi.dtype), grid)
                       - batch["E0"].astype(psi.dtype))
      total = w_supervised * sup
      if energy_term:
        total = total + w_energy * e_err
      metrics.update(
          supervised=sup, energy_error_mha=e_err * MHA_PER_HA,
          infidelity=jnp.mean(infidelity(psi, psi0.astype(psi.dtype),
                                         grid)))
    if stream is not None:
      v_free = stream(key_stream)
      if batch_sharding is not None:
        v_free = jax.lax.with_sharding_constraint(v_free, batch_sharding)
      psi_free = apply_fn(params, v_free)
      e_free = rayleigh_quotient(psi_free, v_free, grid)
      if loss_cfg.unlabelled_objective == "log_residual":
        r2 = residual_norm(psi_free, v_free.astype(psi_free.dtype), grid,
                           e_free)**2
        log_r2 = jnp.log(jnp.maximum(r2, jnp.finfo(r2.dtype).tiny))
        power = loss_cfg.residual_power
        if power:
          # (1/p) log mean(r2^p): each state's gradient weighs r2^p.
          term = (jax.nn.logsumexp(power * log_r2)
                  - math.log(log_r2.size)) / power
        else:
          term = jnp.mean(log_r2)
        metrics["log_residual"] = term
        if loss_cfg.unlabelled_energy_weight:
          term = term + loss_cfg.unlabelled_energy_weight * jnp.mean(e_free)
      else:
        term = jnp.mean(e_free)
      total = total + w_energy * term
      metrics["energy"] = jnp.mean(e_free)
    metrics["loss"] = total
    return total, metrics

  return loss_fn
