"""Training: config resolution, losses, the step, the loop, summaries.

* :mod:`~pgmoe_jax.training.config`: :func:`resolve`, the whole config
  checked once into a :class:`~pgmoe_jax.training.config.Run` of frozen,
  typed sections, the model, the optimiser and the stream (the model part
  is :func:`pgmoe_jax.models.resolve.resolve_model`); training reads the
  run, never the ConfigDict.
* :mod:`~pgmoe_jax.training.losses`: supervised, variational-energy and
  label-free objectives.
* :mod:`~pgmoe_jax.training.step`: optimiser, :class:`TrainState`, the pure
  train step.
* :mod:`~pgmoe_jax.training.driver`: the one training loop
  (:func:`~pgmoe_jax.training.driver.run_loop`), the step a parameter and
  the periodic work on hooks.
* :mod:`~pgmoe_jax.training.loop`: :func:`train_and_evaluate`, a single
  run; :mod:`~pgmoe_jax.training.population`: K runs in one vmapped step.
* :mod:`~pgmoe_jax.training.summaries`: ``metrics.jsonl`` and TensorBoard.

The run directory it writes (the sealed ``config.json``, the checkpoints)
is :mod:`pgmoe_jax.rundir`, a layer below, which
:func:`pgmoe_jax.load_model` reads too.

Submodules load on first use, so importing the package does not import
the loop, the checkpoints or TensorBoard.
"""

import importlib

_LAZY = {
    "train_and_evaluate": "loop",
    "make_mesh": "loop",
    "TrainState": "step",
    "create_train_state": "step",
    "make_optimizer": "step",
    "make_schedule": "step",
    "make_train_step": "step",
    "make_loss_fn": "losses",
    "resolve": "config",
}
_SUBMODULES = ("config", "driver", "losses", "loop", "population",
               "preemption", "step", "summaries")

__all__ = sorted(_LAZY) + list(_SUBMODULES)


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  if name in _LAZY:
    module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return __all__
