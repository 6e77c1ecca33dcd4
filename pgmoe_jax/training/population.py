"""Populations: K runs of one model trained together in one jitted program.

A PG-MoE has a few tens of thousands of parameters: one run leaves an
accelerator (and even a CPU's vector units) mostly idle. A population stacks
the parameters and optimiser states of K *members* along a leading axis and
trains them with one ``jax.vmap`` of the ordinary train step
(:func:`pgmoe_jax.training.step.make_train_step`), so K runs cost one
program. The vmapped step builds each member's optimiser and loss from its
own hyperparameters (:func:`make_population_step`) and runs in the one
training loop (:func:`pgmoe_jax.training.driver.run_loop`), whose hooks
write each member as a single run writes itself.

Members are ordinary runs: each has its own config and workdir, and ends
with what ``train_and_evaluate`` would have left there (``config.json``,
``metrics.jsonl``, the orbax checkpoints with their checksums), so
``load_model`` loads a member and ``experiments.train`` resumes one. Each
member draws its own parameters, step keys and batches from its own seed,
so a member equals the same run trained alone (to rounding: float64 agrees
to about 1e-12).

What may differ between members (:data:`BATCHABLE`):

* ``seed``: initial parameters, step keys, the order of labelled batches;
* ``data.num_train``: each member reads its own first samples;
* ``optim.learning_rate`` and ``optim.end_learning_rate_factor``: every
  member's schedule is the single run's
  (:func:`~pgmoe_jax.training.step.make_schedule`, a function of the step);
  inside the vmapped step all K are evaluated (K scalars) and each member
  takes its own by its index, so its learning rates are the single run's
  to the bit;
* ``optim.weight_decay``, ``optim.grad_clip``;
* ``loss.energy_weight``, ``loss.supervised_weight``.

Everything else (the model, grid, dtype, loss mode, batch sizes, step
counts, data paths) must be the same: :func:`population_key` says which
configs can share a population and :func:`check_population` names the first
field that differs.

A population trains on the default device of one process. A member whose
loss turns non-finite stops (its last good checkpoints stay) while the
others go on; :func:`train_population` reports it. On SIGTERM every member
saves at the next step and :class:`~pgmoe_jax.training.preemption.Preempted`
is raised; rerunning resumes every member from its checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pgmoe_jax import checks
from pgmoe_jax import locks
from pgmoe_jax import models
from pgmoe_jax.evaluation import scorer
from pgmoe_jax.rundir import checkpoint
from pgmoe_jax.rundir import workdir as workdir_lib
from pgmoe_jax.training import config as config_lib
from pgmoe_jax.training import driver
from pgmoe_jax.training import losses
from pgmoe_jax.training import loop
from pgmoe_jax.training.step import TrainState
from pgmoe_jax.training.step import clipped_adamw
from pgmoe_jax.training.step import create_train_state
from pgmoe_jax.training.step import grad_clip_norm
from pgmoe_jax.training.step import make_train_step
from pgmoe_jax.training.driver import Progress
from pgmoe_jax.training.summaries import MetricsLog

# Traced per member inside the vmapped step.
HYPERPARAMETERS = ("optim.weight_decay", "optim.grad_clip",
                   "loss.energy_weight", "loss.supervised_weight")
# May differ between members: the learning-rate schedule, keys and data too.
BATCHABLE = ("seed", "data.num_train", "optim.learning_rate",
             "optim.end_learning_rate_factor") + HYPERPARAMETERS


class MemberFailed(RuntimeError):
  """Some members stopped on a non-finite loss; the others finished."""

  def __init__(self, failures: Mapping[str, str]):
    super().__init__("; ".join(f"{w}: {why}" for w, why in failures.items()))
    self.failures = dict(failures)


def _flat(config) -> dict:
  return dict(workdir_lib.flatten_config(config))


def population_key(config: ml_collections.ConfigDict) -> str:
  """A string equal for configs that can train in one population."""
  flat = _flat(config)
  for key in BATCHABLE:
    flat.pop(key, None)
  return repr(sorted(flat.items()))


def check_population(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Raises ValueError naming the first non-batchable field that differs."""
  if not configs:
    raise ValueError("A population needs at least one member.")
  first = _flat(configs[0])
  for i, config in enumerate(configs[1:], 1):
    flat = _flat(config)
    for key in sorted(set(first) | set(flat)):
      if key in BATCHABLE:
        continue
      if first.get(key) != flat.get(key):
        raise ValueError(
            f"Member {i} differs from member 0 in {key} ({flat.get(key)!r} "
            f"vs {first.get(key)!r}); only {', '.join(BATCHABLE)} can "
            "differ within a population. Train it as a separate run.")


def member_hyperparameters(runs: Sequence[config_lib.Run],
                           dtype) -> dict[str, jax.Array]:
  """The members' :data:`HYPERPARAMETERS` (from their resolved configs),
  stacked ``(K,)`` arrays.

  Each in the dtype the single run computes it in: the energy weight in
  float32 (as :func:`pgmoe_jax.training.losses.energy_weight`), the rest in
  the training dtype; ``grad_clip = 0`` as an infinite norm.
  """
  values = {}
  for key in HYPERPARAMETERS:
    section, name = key.split(".")
    values[key] = [getattr(getattr(r, section), name) for r in runs]
  values["optim.grad_clip"] = [grad_clip_norm(v)
                               for v in values["optim.grad_clip"]]
  out = {key: jnp.asarray(v, jnp.float32 if key == "loss.energy_weight"
                          else dtype) for key, v in values.items()}
  out["member"] = jnp.arange(len(runs))
  return out


def make_population_step(runs: Sequence[config_lib.Run], apply_fn):
  """``step(states, batches, keys, hparams) -> (states, metrics)``, vmapped.

  Every argument has a leading member axis; ``keys`` are the members'
  step keys (folded with each member's step, as a single run does) and
  ``hparams`` come from :func:`member_hyperparameters` of ``runs`` (the
  members' resolved configs). Each
  member's step is the single run's
  (:func:`~pgmoe_jax.training.step.make_train_step`) with its optimiser
  (:func:`~pgmoe_jax.training.step.clipped_adamw`) and loss weights
  (:func:`~pgmoe_jax.training.losses.make_loss_fn`'s ``hparams``) taken
  from ``hparams``.
  """
  run = runs[0]
  schedules = [r.schedule for r in runs]

  def member_step(state: TrainState, batch, key, hparams):
    def schedule(count):
      return jnp.stack([s(count) for s in schedules])[hparams["member"]]

    optimizer = clipped_adamw(schedule, hparams["optim.weight_decay"],
                              hparams["optim.grad_clip"])
    step = make_train_step(
        losses.make_loss_fn(run, apply_fn, hparams=hparams), optimizer,
        schedule)
    return step(state, batch, jax.random.fold_in(key, state.step))

  return jax.vmap(member_step)


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree, k: int):
  return jax.tree.map(lambda x: x[k], tree)


def train_population(configs: Sequence[ml_collections.ConfigDict],
                     workdirs: Sequence[str], *,
                     progress: Progress | None = None) -> list[TrainState]:
  """Trains (or resumes) a population: member ``k`` of ``configs[k]`` in
  ``workdirs[k]`` (see the module docstring).

  Args:
    configs: the members' full configs; they may differ only in
      :data:`BATCHABLE` fields.
    workdirs: one run directory per member, each as ``train_and_evaluate``
      would use it (created if missing; a workdir of another model is
      refused).
    progress: called as ``progress(step, num_steps)`` after every step.

  Returns:
    The members' final states.

  Raises:
    ValueError: invalid configs (nothing is written then), configs that
      cannot share a population, repeated workdirs, several processes.
    MemberFailed: a member's loss turned non-finite (the others finished).
    Preempted: a SIGTERM stopped training after every member saved.
    locks.FolderInUseError: a member's workdir is in use.
  """
  configs, workdirs = list(configs), [os.fspath(w) for w in workdirs]
  if len(configs) != len(workdirs):
    raise ValueError(f"{len(configs)} configs but {len(workdirs)} workdirs.")
  check_population(configs)
  if len(set(map(os.path.abspath, workdirs))) != len(workdirs):
    raise ValueError("Two members share a workdir; each needs its own.")
  if jax.process_count() > 1:
    raise ValueError("A population trains in one process; launch one "
                     "population per process instead.")
  runs = [config_lib.resolve(c) for c in configs]
  datasets = [loop.open_datasets(r, 1) for r in runs]
  workdirs = [checks.prepare_output_dir(w, "workdir") for w in workdirs]
  with contextlib.ExitStack() as held:
    for w in workdirs:
      held.enter_context(locks.exclusive(w, "workdir"))
    return _train(runs, workdirs, datasets, progress)


class _Members:
  """A population's :class:`~pgmoe_jax.training.driver.Hooks`: each member
  still training is written through its own
  :class:`~pgmoe_jax.training.driver.RunOutputs`; one that turned non-finite
  stops there (:attr:`failed`: member -> step)."""

  def __init__(self, outputs: list[driver.RunOutputs], workdirs, num_steps):
    self.outputs, self.workdirs, self.num_steps = outputs, workdirs, num_steps
    self.failed: dict[int, int] = {}
    self.directory = ", ".join(o.directory for o in outputs)

  def _live(self):
    return [k for k in range(len(self.outputs)) if k not in self.failed]

  def check(self, state, pending, step) -> None:
    del pending, step
    for k, bad in enumerate(np.asarray(state.nonfinite_step)):
      if bad >= 0 and k not in self.failed:
        self.failed[k] = int(bad)
        logging.warning("Member %d (%s): non-finite loss or gradients at "
                        "step %d; it stops there.", k, self.workdirs[k], bad)

  def write_train(self, step, pending, steps_per_sec) -> None:
    values = jax.device_get(pending)
    for k in self._live():
      self.outputs[k].write_train(step, [_member(m, k) for m in values],
                                  steps_per_sec)
    logging.info("step %d/%d: population of %d at %.3g steps/s", step,
                 self.num_steps, len(self.outputs), steps_per_sec)

  def evaluate_and_save(self, step, state, *, evaluate, save) -> None:
    for k in self._live():
      # A member resumed from before its newest checkpoint has them already.
      self.outputs[k].evaluate_and_save(
          step, _member(state, k), evaluate=evaluate,
          save=save and step not in self.outputs[k].ckpts.steps())

  def wait(self) -> None:
    for o in self.outputs:
      o.wait()


def _train(runs, workdirs, datasets, progress) -> list[TrainState]:
  """:func:`train_population` in checked, locked workdirs."""
  run = runs[0]
  grid, model, train = run.grid, run.model, run.train
  configs = [r.config for r in runs]
  for c, w in zip(configs, workdirs):
    loop.save_config(c, w)
  apply_fn = loop.make_apply_fn(model)
  example = np.zeros((1,) + grid.shape, run.dtype)
  keys = [jax.random.split(jax.random.key(r.seed)) for r in runs]
  states = [create_train_state(k[0], model, r.optimizer, example)
            for k, r in zip(keys, runs)]
  step_keys = jnp.stack([k[1] for k in keys])
  logging.info("Population of %d x %s on %s: %d parameters each; device %s",
               len(runs), run.config.model.name, grid,
               models.count_params(states[0].params), jax.devices()[0])
  evaluate = datasets[0][1] is not None
  with driver.closing() as closers:
    ckpts = []
    for w in workdirs:
      ckpts.append(checkpoint.Checkpoints(
          checkpoint.checkpoint_dir(w), keep=train.keep_checkpoints,
          best_metric=train.best_metric if evaluate else None))
      closers.append(ckpts[-1].close)
    states, start = _restore(ckpts, states, workdirs)
    score_fn = jax.jit(scorer.make_score_batch(apply_fn, grid))
    outputs = []
    for w, c, (_, val_ds) in zip(workdirs, ckpts, datasets):
      log = MetricsLog(w, start, advice=c.resume_advice)
      closers.append(log.close)
      outputs.append(driver.RunOutputs(
          log, c, loop.validation(score_fn, val_ds, run)))
    hparams = member_hyperparameters(runs, run.dtype)
    step_fn = jax.jit(make_population_step(runs, apply_fn),
                      donate_argnums=0)
    streams = [loop.train_batches(ds[0], r.train.batch_size, r.seed, start,
                                  np.dtype(r.dtype), None)
               if r.uses_labels else itertools.repeat({})
               for ds, r in zip(datasets, runs)]
    members = _Members(outputs, workdirs, train.num_steps)
    state = driver.run_loop(
        _stack(states),
        lambda state, batch: step_fn(state, batch, step_keys, hparams),
        map(lambda *batches: _stack(batches), *streams), members,
        train, start=start, evaluate=evaluate, progress=progress)
    if members.failed:
      raise MemberFailed({workdirs[k]: (
          f"non-finite loss or gradients at step {s}; its last good "
          f"checkpoint is step {ckpts[k].latest_step()}")
                          for k, s in members.failed.items()})
    return [_member(state, k) for k in range(len(runs))]


def _restore(ckpts, states, workdirs) -> tuple[list[TrainState], int]:
  """Every member at the newest step all of them have intact.

  A member with newer checkpoints (a population killed between its members'
  saves) restarts from the common step; its newer checkpoints hold the same
  states again, so they are kept and not saved twice.
  """
  found = [loop.restore_or_keep(c, state, w)
           for c, state, w in zip(ckpts, states, workdirs)]
  newest = min(step for _, step in found)
  common = set.intersection(*(set(c.steps()) for c in ckpts))
  start = max([s for s in common if s <= newest], default=0)
  out = []
  for c, (state, step), initial in zip(ckpts, found, states):
    if step != start:
      state = initial
      if start:
        params, opt_state = c.restore(start, initial.params,
                                      initial.opt_state)
        state = state.replace(params=params, opt_state=opt_state,
                              step=jnp.asarray(start, jnp.int32))
    out.append(state)
  if start != newest or any(step != start for _, step in found):
    logging.info("Members resume from step %d, the newest step all have.",
                 start)
  return out, start
