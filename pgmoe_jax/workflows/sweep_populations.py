"""``--vectorize``: a sweep's trials grouped into populations.

Trials whose configs differ only in batchable fields
(:data:`pgmoe_jax.training.population.BATCHABLE`: ``seed``,
``data.num_train``, ``optim.learning_rate``,
``optim.end_learning_rate_factor``, ``optim.weight_decay``,
``optim.grad_clip``, ``loss.energy_weight``, ``loss.supervised_weight``)
train as one population, one jitted program
(:func:`pgmoe_jax.training.population.train_population`); each member still
lives in its own trial workdir. A trial that differs from every other in
another field (the model's shape, the step count, the dtype) cannot share a
program: it runs as an ordinary trial, and :func:`group` says why.

Populations are named ``population-<i>`` in the order of their first trial
in the sweep; ``sweep.json`` pins the trials, so the names are stable
across reruns. A population job is one command
(``python -m experiments.sweep ... --population=<name>``), for the local
runner and ``--print_commands`` alike.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Mapping, Sequence

import ml_collections

from pgmoe_jax.training import population as population_lib
from pgmoe_jax.workflows import sweep as sweep_lib
from pgmoe_jax.workflows import sweep_runner


@dataclasses.dataclass(frozen=True)
class Population:
  """Trials trained together.

  Attributes:
    name: ``population-<i>``.
    trials: its members, in sweep order.
  """
  name: str
  trials: tuple[sweep_lib.Trial, ...]


def group(trials: Sequence[sweep_lib.Trial],
          configs: Mapping[str, ml_collections.ConfigDict]
          ) -> tuple[list[Population], list[tuple[sweep_lib.Trial, str]]]:
  """``(populations, alone)``: groups of two or more trials, and the trials
  that run by themselves, each with the reason."""
  groups: dict[str, list[sweep_lib.Trial]] = {}
  for trial in trials:
    key = population_lib.population_key(configs[trial.name])
    groups.setdefault(key, []).append(trial)
  populations, alone = [], []
  largest = max(groups.values(), key=len)
  for members in groups.values():
    if len(members) > 1:
      populations.append(Population(f"population-{len(populations)}",
                                    tuple(members)))
      continue
    (trial,) = members
    if len(trials) == 1:
      reason = "it is the sweep's only trial"
    else:
      other = largest[0] if largest[0] is not trial else next(
          t for t in trials if t is not trial)
      try:
        population_lib.check_population([configs[other.name],
                                         configs[trial.name]])
        reason = "no other trial shares its configuration"
      except ValueError as e:
        field = str(e).split(" differs from member 0 in ", 1)[-1]
        reason = (f"it differs from {other.name} in "
                  f"{field.split(' (', 1)[0]}, which cannot be batched")
    alone.append((trial, reason))
  return populations, alone


def find(trials: Sequence[sweep_lib.Trial],
         configs: Mapping[str, ml_collections.ConfigDict],
         name: str) -> Population:
  """The population called ``name``; ValueError lists the known ones."""
  populations, _ = group(trials, configs)
  for pop in populations:
    if pop.name == name:
      return pop
  known = ", ".join(p.name for p in populations) or "none"
  raise ValueError(f"--population={name!r}: no such population in this "
                   f"sweep; known: {known}.")


def population_command(config_path: str, sweep_path: str, root: str,
                       pop: Population, python: str = sys.executable,
                       extra_flags: Sequence[str] = ()) -> list[str]:
  """The argv that trains ``pop`` in one process."""
  argv = [python, "-m", "experiments.sweep", f"--config={config_path}",
          f"--sweep={sweep_path}", f"--workdir={root}",
          f"--population={pop.name}"]
  if extra_flags:
    argv.append("--extra_flags=" + ",".join(extra_flags))
  return argv


def jobs(trials: Sequence[sweep_lib.Trial],
         configs: Mapping[str, ml_collections.ConfigDict], config_path: str,
         sweep_path: str, root: str, *, python: str = sys.executable,
         extra_flags: Sequence[str] = (), echo=print
         ) -> list[sweep_runner.Job]:
  """One job per population and one per trial that runs alone (with a
  message saying why)."""
  # pylint: disable-next=g-import-not-at-top
  from pgmoe_jax.workflows import leaderboard  # it builds on sweep
  populations, alone = group(trials, configs)
  out = []
  for pop in populations:
    steps = int(configs[pop.trials[0].name].train.num_steps)

    def done(pop=pop, steps=steps):
      return all(leaderboard.trial_status(t, steps) == "done"
                 for t in pop.trials)

    out.append(sweep_runner.Job(
        pop.name, tuple(population_command(config_path, sweep_path, root,
                                           pop, python, extra_flags)),
        os.path.join(pop.trials[0].log_dir, f"{pop.name}.log"),
        tuple(t.name for t in pop.trials), done))
    echo(f"{pop.name}: {len(pop.trials)} trials in one program: "
         + ", ".join(t.name for t in pop.trials))
  for trial, reason in alone:
    echo(f"{trial.name}: runs alone ({reason}).")
  out += sweep_lib.trial_jobs([t for t, _ in alone], configs, config_path,
                              python=python, extra_flags=extra_flags)
  return out
