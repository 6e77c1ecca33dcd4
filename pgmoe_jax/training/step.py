"""The optimiser, the train state and the pure train step.

* :func:`make_optimizer` builds :func:`clipped_adamw`
  (``clip_by_global_norm -> adamw``) on a warmup-cosine learning-rate
  schedule (:func:`make_schedule`) from the resolved ``optim`` section;
  :func:`create_train_state` initialises a :class:`TrainState`;
  :func:`make_train_step` returns the pure, undecorated
  ``train_step(state, batch, key) -> (state, metrics)`` that callers jit
  (alone, or vmapped over a population's members).

Non-finite guard: a step whose loss or gradient norm is not finite applies
no update and records its step in ``TrainState.nonfinite_step``; once set,
every later step leaves the state as it is (the last good parameters), and
the loop stops with a message naming the step (in a population, that member
stops).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax


PyTree = Any
LossFn = Callable[[PyTree, Mapping[str, jax.Array], jax.Array, jax.Array],
                  tuple[jax.Array, Mapping[str, jax.Array]]]
TrainStep = Callable[["TrainState", Mapping[str, jax.Array], jax.Array],
                     tuple["TrainState", dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: int32 scalar, the number of updates applied to ``params``.
    params: the model parameters.
    opt_state: the optimiser state.
    nonfinite_step: int32 scalar, the first step whose loss or gradients
      were not finite, or -1 while all were (see the module docstring).
  """
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  nonfinite_step: jax.Array


def make_schedule(optim, num_steps: int) -> optax.Schedule:
  """Linear warmup to ``optim.learning_rate``, cosine decay to step
  ``num_steps`` (``optim``: a
  :class:`~pgmoe_jax.training.config.OptimConfig`)."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.learning_rate,
      warmup_steps=optim.warmup_steps, decay_steps=num_steps,
      end_value=optim.learning_rate * optim.end_learning_rate_factor)


def grad_clip_norm(value: float) -> float:
  """``optim.grad_clip`` as a norm: 0 clips at infinity (no clipping)."""
  return float(value) if value > 0 else float("inf")


def make_optimizer(optim,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """:func:`clipped_adamw` on ``schedule`` with ``optim``'s weight decay
  and clip (``optim``: a :class:`~pgmoe_jax.training.config.OptimConfig`).

  ``grad_clip = 0`` clips at infinity rather than dropping the transform, so
  the optimiser state has the same structure either way and a run can be
  resumed with the other setting.
  """
  return clipped_adamw(schedule, optim.weight_decay,
                       grad_clip_norm(optim.grad_clip))


def clipped_adamw(learning_rate: optax.ScalarOrSchedule, weight_decay: Any,
                  clip_norm: Any) -> optax.GradientTransformation:
  """``clip_by_global_norm(clip_norm)`` then AdamW.

  The values may be traced (a population's step passes each member's), and
  the state's structure does not depend on them, so a population member's
  state is an ordinary run's.
  """
  return optax.chain(optax.clip_by_global_norm(clip_norm),
                     optax.adamw(learning_rate, weight_decay=weight_decay))


def create_train_state(key: jax.Array, model,
                       optimizer: optax.GradientTransformation,
                       example_v: jax.Array, sharding=None) -> TrainState:
  """Initialises parameters and the optimiser state.

  Args:
    key: the initialisation key.
    model: the flax module (:func:`pgmoe_jax.models.build_model`).
    optimizer: the run's optimiser (:func:`make_optimizer`).
    example_v: ``(b, *grid.shape)`` potentials fixing the input shape and
      the dtype of the parameters (the training dtype).
    sharding: where the state lives (default: the default device).

  Returns:
    A :class:`TrainState` at step 0.
  """
  dtype = jnp.asarray(example_v).dtype

  # Jitted: op-by-op initialisation of a PG-MoE is slower than compiling
  # it. With a sharding (replicated over a mesh that may span
  # processes) every process makes the same state in place.
  @functools.partial(jax.jit, out_shardings=sharding)
  def init(key, v):
    params = model.init(key, v)["params"]
    # Flax creates float32 parameters whatever the input; training in
    # float64 needs float64 parameters.
    params = jax.tree.map(lambda x: x.astype(dtype), params)
    return TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      nonfinite_step=jnp.asarray(-1, jnp.int32))

  return init(key, jnp.asarray(example_v))


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None) -> TrainStep:
  """Returns the pure ``train_step(state, batch, key) -> (state, metrics)``.

  Args:
    loss_fn: ``loss_fn(params, batch, key, step) -> (loss, metrics)``
      (:func:`pgmoe_jax.training.losses.make_loss_fn`).
    optimizer: the optax transformation the state was created with.
    schedule: the learning-rate schedule, reported as ``lr`` if given.

  Returns:
    An undecorated function: jit it at the call site (with
    ``donate_argnums=0``). Its metrics are scalars: the loss's own plus
    ``grad_norm`` (before clipping), ``lr`` and ``finite`` (1.0 or 0.0). A
    non-finite step returns the state unchanged but for
    ``nonfinite_step``; see the module docstring.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch, key):
    (loss, metrics), grads = grad_fn(state.params, batch, key, state.step)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    healthy = state.nonfinite_step < 0
    apply = finite & healthy

    def pick(new, old):
      return jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)

    new_state = TrainState(
        step=jnp.where(apply, state.step + 1, state.step),
        params=pick(params, state.params),
        opt_state=pick(opt_state, state.opt_state),
        nonfinite_step=jnp.where(healthy & ~finite, state.step,
                                 state.nonfinite_step))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   finite=finite.astype(jnp.float32))
    if schedule is not None:
      metrics["lr"] = schedule(state.step)
    return new_state, metrics

  return train_step
