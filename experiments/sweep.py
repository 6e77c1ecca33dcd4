r"""Run a hyperparameter sweep: a config, a sweep file, one root folder.

    python -m experiments.sweep --config=experiments/configs/quickstart.py \
        --sweep=experiments/sweeps/lr_seed.py --workdir=runs/lr_seed \
        [--parallel=2] [--extra_flags=--jax_enable_x64]
    # the same trials as shell commands, one per line, for any launcher:
    python -m experiments.sweep ... --print_commands > commands.txt
    # only the leaderboard (any time, finished or not):
    python -m experiments.sweep ... --summarize

A sweep file defines ``get_sweep()``, a list of override dicts
(``experiments/sweeps/``); each trial is an ordinary ``experiments.train``
run in ``<workdir>/trials/<name>`` (the layout is in
``pgmoe_jax/workflows/sweep.py``). Every trial is checked against the
config before anything starts. The local runner runs ``--parallel`` trials
at once, skips finished ones, reports failed ones (their logs' last lines)
and reruns them only with ``--rerun_failed``; rerunning the same command
continues a killed sweep. The runner locks ``<workdir>/.lock`` while it
lives (``pgmoe_jax/locks.py``): a second runner on the same root stops at
once with one line naming the holder, and a runner killed with ``-9``
leaves nothing that blocks the next one. ``--print_commands`` and
``--summarize`` take no lock. At the end (and with ``--summarize``) it
writes ``sweep.csv``, ``sweep.md`` and ``sweep_<metric>.png`` under
``--workdir`` and prints the Markdown table.

Exit codes: 0 every trial done; 1 an error (one line on stderr) or failed
trials; 75 trials stopped to be resumed; 128 + N after signal N.

``--vectorize`` trains the trials that differ only in batchable values
(seeds, learning rates, weight decay, loss weights: the list is in
``pgmoe_jax/workflows/sweep_populations.py``) as populations, K members in
one jitted program; each member still ends in its own trial workdir, loads
with ``load_model`` and resumes from its checkpoints. One job (one command
for ``--print_commands``) per population:

    python -m experiments.sweep ... --vectorize [--parallel=2]
    python -m experiments.sweep ... --vectorize --print_commands
    # = python -m experiments.sweep ... --population=population-0, ...
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from experiments import cli
from pgmoe_jax import locks
from pgmoe_jax import paths
from pgmoe_jax.workflows import leaderboard
from pgmoe_jax.workflows import sweep
from pgmoe_jax.workflows import sweep_populations
from pgmoe_jax.workflows import sweep_runner

_CONFIG = flags.DEFINE_string(
    "config", None, "Config file, as experiments.train takes it "
    "(experiments/configs/*.py, optionally path.py:arg).")
_SWEEP = flags.DEFINE_string(
    "sweep", None, "Sweep file defining get_sweep() (experiments/sweeps/).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The sweep's root: trials/, logs/, sweep.json and the "
    "leaderboard go here.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials run at once.",
                                 lower_bound=1)
_PRINT_COMMANDS = flags.DEFINE_bool(
    "print_commands", False, "Print one shell command per trial (all of "
    "them, nothing else on stdout) and exit.")
_SUMMARIZE = flags.DEFINE_bool(
    "summarize", False, "Only write and print the leaderboard.")
_RERUN_FAILED = flags.DEFINE_bool(
    "rerun_failed", False, "Also rerun trials whose last attempt failed.")
_METRIC = flags.DEFINE_string(
    "metric", "energy_error_mha_median", "Leaderboard metric: a validation "
    "metric (optionally val/...), or train/<name> (train/loss for "
    "label-free runs without a validation set).")
_MODE = flags.DEFINE_enum("mode", "min", ["min", "max"],
                          "Whether lower or higher --metric is better.")
_EXTRA_FLAGS = flags.DEFINE_list(
    "extra_flags", [], "Flags added to every trial's command, comma "
    "separated (--jax_enable_x64, --distributed).")
_PYTHON = flags.DEFINE_string(
    "python", sys.executable, "Interpreter of the trial commands (set it "
    "for --print_commands on another machine, e.g. python3).")
_VECTORIZE = flags.DEFINE_bool(
    "vectorize", False, "Train trials that differ only in batchable values "
    "(seed, data.num_train, optim.learning_rate, "
    "optim.end_learning_rate_factor, optim.weight_decay, optim.grad_clip, "
    "loss.energy_weight, loss.supervised_weight) as one population: one "
    "jitted program per group, each member in its own trial workdir.")
_POPULATION = flags.DEFINE_string(
    "population", None, "Train this one population (population-<i>, as "
    "--vectorize --print_commands names it) in this process, and exit.")

flags.mark_flags_as_required(["config", "sweep", "workdir"])


def make_jobs(trials: list[sweep.Trial],
              configs: dict) -> list[sweep_runner.Job]:
  """The jobs that run the trials: one per trial, or with --vectorize one
  per population (and one per trial that cannot join one, saying why)."""
  if _VECTORIZE.value:
    return sweep_populations.jobs(
        trials, configs, _CONFIG.value, _SWEEP.value, _WORKDIR.value,
        python=_PYTHON.value, extra_flags=_EXTRA_FLAGS.value,
        echo=lambda line: print(line, file=sys.stderr, flush=True))
  return sweep.trial_jobs(trials, configs, _CONFIG.value,
                          python=_PYTHON.value,
                          extra_flags=_EXTRA_FLAGS.value)


def train_one_population(name: str) -> None:
  """``--population``: trains one population here, on this process's
  devices (exit 75 when preempted, 1 when a member failed)."""
  # pylint: disable=g-import-not-at-top
  from pgmoe_jax.training import population
  from pgmoe_jax.training.preemption import EXIT_PREEMPTED
  from pgmoe_jax.training.preemption import Preempted
  # pylint: enable=g-import-not-at-top
  other = [f for f in _EXTRA_FLAGS.value
           if f.lstrip("-").partition("=")[0] not in ("jax_enable_x64",
                                                      "nojax_enable_x64")]
  try:
    if other:
      raise ValueError(f"--extra_flags={','.join(other)}: a population "
                       "trains in one process and takes only "
                       "--jax_enable_x64.")
    config = sweep.load_config_file(_CONFIG.value)
    trials = sweep.make_trials(_WORKDIR.value,
                               sweep.load_sweep(_SWEEP.value))
    configs = sweep.check_trials(config, trials)
    pop = sweep_populations.find(trials, configs, name)
    logging.info("%s: %d members on %s: %s", name, len(pop.trials),
                 jax.devices(), ", ".join(t.name for t in pop.trials))
    population.train_population(
        [configs[t.name] for t in pop.trials],
        [t.workdir for t in pop.trials],
        progress=cli.ProgressBar(name, unit="steps"))
  except Preempted as e:
    print(f"sweep: {e}", file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  except (ValueError, FloatingPointError, population.MemberFailed,
          locks.FolderInUseError) as e:
    raise SystemExit(f"sweep: error: {e}") from None


def _wants_x64(extra_flags) -> bool:
  value = False
  for flag in extra_flags:
    name, _, text = flag.lstrip("-").partition("=")
    if name == "jax_enable_x64":
      value = text.lower() not in ("false", "0")
    elif name == "nojax_enable_x64":
      value = False
  return value


def _lock(root: str, held: contextlib.ExitStack) -> None:
  """Locks ``<root>/.lock`` until ``held`` closes: one runner per root.

  The read-only modes (``--print_commands``, ``--summarize``) take no lock,
  so a leaderboard can be written while the sweep runs.
  """
  os.makedirs(root, exist_ok=True)
  try:
    held.enter_context(locks.exclusive(root, "sweep root"))
  except locks.FolderInUseError as e:
    if e.holder is None:
      by = "another sweep runner"
    else:
      by = (f"another sweep runner (process {e.holder['pid']} on "
            f"{e.holder['host']}, since {e.holder['since']})")
    raise SystemExit(
        f"sweep: error: {root} is in use by {by}; wait for it to finish or "
        "stop it (two runners on one root would start every trial twice). "
        "--summarize and --print_commands need no lock.") from None


def _claim(root: str, trials: list[sweep.Trial]) -> None:
  """Writes ``<root>/sweep.json``; refuses a root holding another sweep."""
  record = json.loads(json.dumps({
      "config": _CONFIG.value, "sweep": _SWEEP.value,
      "trials": sorted(({"name": t.name, "overrides": dict(t.overrides)}
                        for t in trials), key=lambda t: t["name"])}))
  path = os.path.join(root, "sweep.json")
  try:
    with open(path) as f:
      old = json.load(f)
  except FileNotFoundError:
    old = None
  except (OSError, ValueError) as e:
    raise SystemExit(f"sweep: error: {path} is unreadable ({e}).") from None
  if old is not None:
    same = old.get("trials") == record["trials"]
    if not same or old.get("config") != record["config"]:
      what = ("other trials" if not same else
              f"another config, {old.get('config')}")
      raise SystemExit(
          f"sweep: error: {root} holds a sweep with {what} (from "
          f"--sweep={old.get('sweep')} --config={old.get('config')}); use "
          f"another --workdir (or delete {path} to reuse it deliberately).")
  os.makedirs(root, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _wants_x64(_EXTRA_FLAGS.value):
    jax.config.update("jax_enable_x64", True)
  cli.quiet_library_logs()
  if _POPULATION.value:
    train_one_population(_POPULATION.value)
    return
  # This process only checks configs and counts parameters: on the CPU, so
  # it never holds an accelerator the trials need (they inherit the
  # environment, not this setting).
  jax.config.update("jax_platforms", "cpu")
  root = _WORKDIR.value
  run = not (_PRINT_COMMANDS.value or _SUMMARIZE.value)
  try:
    leaderboard.split_metric(_METRIC.value)
    if run and paths.is_remote(root):
      raise ValueError(f"--workdir={root}: the local runner needs a local "
                       "folder; use --print_commands for a launcher there.")
    config = sweep.load_config_file(_CONFIG.value)
    trials = sweep.make_trials(root, sweep.load_sweep(_SWEEP.value))
    configs = sweep.check_trials(config, trials)
    jobs = make_jobs(trials, configs)
  except ValueError as e:
    hint = (" (for the trials: --extra_flags=--jax_enable_x64)"
            if "--jax_enable_x64" in str(e) else "")
    raise SystemExit(f"sweep: error: {e}{hint}") from None
  if _PRINT_COMMANDS.value:
    for job in jobs:
      print(sweep.shell_command(job.argv))
    return
  with contextlib.ExitStack() as held:
    summary = None
    if run:
      _lock(root, held)
      _claim(root, trials)
      try:
        summary = sweep_runner.run_local(
            jobs, _PARALLEL.value, rerun_failed=_RERUN_FAILED.value,
            echo=lambda line: print(line, flush=True))
      except sweep_runner.Interrupted as e:
        print(f"sweep: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    leaderboard.summarize(root, trials, _METRIC.value, _MODE.value,
                          config=config, echo=print)
    table = (paths.resolve(root) / "sweep.md").read_text()
    print("\n" + table, end="", flush=True)
    if summary is not None and (summary.failed or summary.skipped_failed):
      failed = list(summary.failed) + summary.skipped_failed
      raise SystemExit(
          f"sweep: error: {len(failed)} job(s) failed: {', '.join(failed)}; "
          f"logs in {os.path.join(root, 'logs')}; fix the cause and rerun "
          "with --rerun_failed.")
    if summary is not None and summary.retry:
      print(f"sweep: {len(summary.retry)} job(s) stopped to be resumed; "
            "rerun the same command.", file=sys.stderr)
      sys.exit(sweep_runner.EXIT_RETRY)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("sweep"))
