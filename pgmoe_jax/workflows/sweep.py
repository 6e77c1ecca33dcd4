r"""Hyperparameter sweeps: trials as ordinary training runs under one root.

A sweep is a list of trials, each a flat dict of config overrides keyed by
dotted paths (``{"optim.learning_rate": 3e-4, "seed": 1}``), built with
:func:`product`, :func:`zip_axes` and :func:`concat` in a sweep file that
defines ``get_sweep()`` (:func:`load_sweep`). Each trial is one ordinary
``python -m experiments.train`` run (:func:`train_command`), so any launcher
can run it and every trial can be resumed, inspected and loaded like any
run. Layout of a sweep's root::

    <root>/sweep.json          the config and sweep files and the trials
                               (``experiments.sweep`` refuses another sweep)
    <root>/.lock               held by the local runner while it runs
                               (:mod:`pgmoe_jax.locks`): one runner per root
    <root>/trials/<name>/      each trial's workdir; <name> is
                               :func:`trial_name` of its overrides
    <root>/logs/<name>.log     its output, one header line per attempt
    <root>/logs/<name>.json    its last finished attempt: returncode,
                               seconds, finished (the local runner's)
    <root>/logs/<name>.failed  its last attempt's failure, with the log tail
    <root>/sweep.csv, sweep.md, sweep_<metric>.png   the leaderboard
                               (:mod:`pgmoe_jax.workflows.leaderboard`)

:func:`trial_jobs` turns trials into jobs for the local runner
(:mod:`pgmoe_jax.workflows.sweep_runner`);
:func:`pgmoe_jax.workflows.leaderboard.trial_status` says where a trial
stands.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import json
import math
import numbers
import os
import re
import shlex
import sys
from typing import Any, Mapping, Sequence

import ml_collections

from pgmoe_jax.workflows import sweep_runner

Overrides = Mapping[str, Any]
MAX_NAME = 100
TRIALS_DIR = "trials"
LOGS_DIR = "logs"
_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_SAFE = re.compile(r"^[A-Za-z0-9._-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------
# Building sweeps.


def _axis(key: str, values) -> list:
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
    raise ValueError(f"Axis {key!r}: expected a list of values, got "
                     f"{values!r}.")
  if not values:
    raise ValueError(f"Axis {key!r} has no values.")
  return list(values)


def product(axes: Mapping[str, Sequence]) -> list[dict]:
  """Every combination of the axes' values; the last key varies fastest.

  ``product({"seed": [0, 1], "optim.learning_rate": [1e-3, 3e-3]})`` is
  four trials. Keys keep the given order.
  """
  keys = list(axes)
  values = [_axis(k, axes[k]) for k in keys]
  return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def zip_axes(axes: Mapping[str, Sequence]) -> list[dict]:
  """The i-th values of every axis together; the axes have equal lengths.

  Raises:
    ValueError: lengths differ (each is named).
  """
  keys = list(axes)
  values = [_axis(k, axes[k]) for k in keys]
  if len({len(v) for v in values}) > 1:
    raise ValueError("zip_axes needs axes of equal length; got " + ", ".join(
        f"{k}: {len(v)}" for k, v in zip(keys, values)) + ".")
  return [dict(zip(keys, combo)) for combo in zip(*values)]


def concat(*sweeps: Sequence[Mapping]) -> list[dict]:
  """The trials of several sweeps, one after another."""
  return [dict(trial) for sweep in sweeps for trial in sweep]


# --------------------------------------------------------------------------
# Checking and loading sweep and config files.


def _plain(value, where: str):
  """A sweep value as a plain bool/int/float/str or a tuple of them."""
  if isinstance(value, tuple):
    if any(isinstance(v, (tuple, list)) for v in value):
      raise ValueError(f"{where}: {value!r} nests tuples; values are "
                       "tuples of bool, int, float or str.")
    return tuple(_plain(v, where) for v in value)
  if isinstance(value, bool) or type(value).__name__ == "bool_":
    return bool(value)
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    if not math.isfinite(value):
      raise ValueError(f"{where}: {value!r} is not a finite number.")
    return float(value)
  if isinstance(value, str):
    return str(value)
  hint = " (use a tuple)" if isinstance(value, list) else ""
  raise ValueError(f"{where}: {value!r} is a {type(value).__name__}; "
                   f"values are bool, int, float, str or tuples of them"
                   f"{hint}.")


def check_overrides(overrides, where: str = "overrides") -> dict:
  """One trial, checked and made plain (NumPy scalars become Python's).

  Raises:
    ValueError: not a dict, a key that is not a dotted name, or a value
      that is not bool/int/float/str or a tuple of them.
  """
  if not isinstance(overrides, Mapping):
    raise ValueError(f"{where}: expected a dict of overrides, got "
                     f"{overrides!r}.")
  out = {}
  for key, value in overrides.items():
    if not isinstance(key, str) or not _KEY.match(key):
      raise ValueError(f"{where}: key {key!r} is not a dotted config path "
                       "like 'optim.learning_rate'.")
    out[key] = _plain(value, f"{where} {key!r}")
  return out


def _canonical(overrides: Overrides) -> str:
  return json.dumps(overrides, sort_keys=True, separators=(",", ":"))


def _import_file(path: str, what: str):
  if not os.path.isfile(path):
    raise ValueError(f"The {what} file {path!r} does not exist.")
  digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(
      f"_pgmoe_{what}_{digest}", path)
  if spec is None or spec.loader is None:
    raise ValueError(f"The {what} file {path!r} is not a Python file.")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"The {what} file {path!r} failed to import: "
                     f"{type(e).__name__}: {e}") from e
  return module


def load_sweep(path: str) -> list[dict]:
  """The trials of a sweep file: its ``get_sweep()``, checked.

  Args:
    path: a Python file defining ``get_sweep() -> list[dict]``; imported by
      its path (it may import ``pgmoe_jax``).

  Returns:
    The trials, plain (see :func:`check_overrides`).

  Raises:
    ValueError: a missing file or ``get_sweep``, an empty or non-list
      result, a bad trial (named by its index), or two identical trials.
  """
  module = _import_file(path, "sweep")
  get_sweep = getattr(module, "get_sweep", None)
  if not callable(get_sweep):
    raise ValueError(f"The sweep file {path!r} defines no get_sweep() "
                     "function.")
  try:
    trials = get_sweep()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path}: get_sweep() raised {type(e).__name__}: "
                     f"{e}") from e
  if not isinstance(trials, list) or not trials:
    raise ValueError(f"{path}: get_sweep() must return a non-empty list of "
                     f"dicts, got {trials!r:.200}.")
  out, seen = [], {}
  for i, trial in enumerate(trials):
    plain = check_overrides(trial, f"{path}: trial {i}")
    text = _canonical(plain)
    if text in seen:
      raise ValueError(f"{path}: trials {seen[text]} and {i} are the same: "
                       f"{plain}.")
    seen[text] = i
    out.append(plain)
  return out


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """A config file's ``get_config()``, locked (as ``--config=`` loads it).

  ``path`` may end in ``:arg`` for ``get_config(arg)``.

  Raises:
    ValueError: a missing file or ``get_config``, or an error inside it.
  """
  file, _, arg = path.partition(":")
  module = _import_file(file, "config")
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ValueError(f"The config file {file!r} defines no get_config().")
  config = get_config(arg) if arg else get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"{path}: get_config() returned a "
                     f"{type(config).__name__}, not a ConfigDict.")
  config.lock()
  return config


# --------------------------------------------------------------------------
# Overrides.


def _leaf_keys(config, prefix: str = "") -> list[str]:
  out = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out += _leaf_keys(value, f"{prefix}{key}.")
    else:
      out.append(prefix + key)
  return out


def _coerce(key: str, old, value):
  """``value`` for a field holding ``old``, as config_flags would parse it."""
  kind = type(old).__name__
  if isinstance(old, bool):
    ok = isinstance(value, bool)
  elif isinstance(old, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(old, float):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  elif isinstance(old, str):
    ok = isinstance(value, str)
  elif isinstance(old, tuple):
    ok = isinstance(value, tuple)
  else:
    raise ValueError(f"Config key {key!r} holds a {kind} ({old!r}), which "
                     "cannot be set from the command line.")
  if not ok:
    article = "an" if kind[0] in "aeiou" else "a"
    raise ValueError(f"Config key {key!r} takes {article} {kind} (it is "
                     f"{old!r}); got {value!r} ({type(value).__name__}).")
  return value


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Overrides) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``overrides`` applied (``config`` unchanged).

  Types follow ``ml_collections.config_flags``' command-line parsing, so
  the copy equals what ``--config.<key>=<value>`` flags give
  (:func:`train_command`): an int sets a float field (as a float); a bool
  sets only a bool field; a str only a str field; a tuple a tuple field.

  Raises:
    ValueError: an unknown key (naming the closest known ones), a section
      instead of a field, or a value of the wrong type (naming the key).
  """
  overrides = check_overrides(overrides)
  new = copy.deepcopy(config)
  for key, value in overrides.items():
    *sections, field = key.split(".")
    node = new
    for i, part in enumerate(sections + [field]):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = _leaf_keys(config)
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = (f"closest: {', '.join(close)}" if close else "sections: " +
                ", ".join(k for k, v in config.items()
                          if isinstance(v, ml_collections.ConfigDict)))
        raise ValueError(f"Unknown config key {key!r}; {hint}.")
      if i < len(sections):
        node = node[part]
    old = node[field]
    if isinstance(old, ml_collections.ConfigDict):
      raise ValueError(f"Config key {key!r} is a section; override its "
                       f"fields ({', '.join(f'{key}.{k}' for k in old)}).")
    node[field] = _coerce(key, old, value)
  return new


def check_trials(config: ml_collections.ConfigDict,
                 trials: Sequence["Trial"]) -> dict[str, Any]:
  """Every trial's config, applied and resolved, before anything runs.

  Returns:
    ``{trial name: its config}``.

  Raises:
    ValueError: the first trial whose overrides or config are invalid (the
      message names the trial).
  """
  # pylint: disable-next=g-import-not-at-top
  from pgmoe_jax.training import config as config_lib
  out = {}
  for trial in trials:
    try:
      out[trial.name] = apply_overrides(config, trial.overrides)
      config_lib.resolve(out[trial.name])
    except ValueError as e:
      raise ValueError(f"trial {trial.name}: {e}") from None
  return out


# --------------------------------------------------------------------------
# Names, trials, commands and jobs.


def flag_value(value) -> str:
  """The text of ``--config.<key>=<text>`` that parses back to ``value``."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str):
    return value
  if isinstance(value, tuple):  # ast.literal_eval reads it back
    return "(" + ",".join(repr(v) for v in value) + (
        "," if len(value) == 1 else "") + ")"
  raise ValueError(f"Cannot write {value!r} as a flag value.")


def _name_value(value) -> tuple[str, bool]:
  """(text, exact): exact when distinct values give distinct texts."""
  if isinstance(value, bool):
    return ("true" if value else "false"), True
  if isinstance(value, (int, float)):
    return repr(value), True
  if isinstance(value, str):
    return (value, True) if _SAFE.match(value) else (
        _UNSAFE.sub("_", value), False)
  numeric = value and all(isinstance(v, (int, float)) and
                          not isinstance(v, bool) for v in value)
  text = "x".join(_name_value(v)[0] for v in value) or "empty"
  return _UNSAFE.sub("_", text), bool(numeric)


def trial_name(overrides: Overrides) -> str:
  """A stable, filesystem-safe, readable name for a trial.

  ``{"optim.learning_rate": 3e-4, "seed": 1}`` -> ``learning_rate=0.0003,
  seed=1``: each key shown by its last component unless two keys share it
  (then in full), sorted by that, tuples of numbers as ``16x16``. Characters are
  ``[A-Za-z0-9._=,-]``. A name longer than 100 characters, or with a value
  that had to be rewritten (a str with other characters, a tuple of
  non-numbers), is cut and ends in ``-`` plus 8 hex digits of the SHA-256
  of the overrides' canonical JSON. No overrides: ``base``.
  """
  overrides = check_overrides(overrides)
  if not overrides:
    return "base"
  last = [k.rsplit(".", 1)[-1] for k in overrides]
  labels = sorted((short if last.count(short) == 1 else key, key)
                  for key, short in zip(overrides, last))
  parts, exact = [], True
  for label, key in labels:
    text, ok = _name_value(overrides[key])
    exact &= ok
    parts.append(f"{label}={text}")
  name = ",".join(parts)
  if not exact or len(name) > MAX_NAME:
    digest = hashlib.sha256(_canonical(overrides).encode()).hexdigest()
    name = f"{name[:MAX_NAME - 9]}-{digest[:8]}"
  return name


@dataclasses.dataclass(frozen=True)
class Trial:
  """One run of a sweep.

  Attributes:
    name: :func:`trial_name` of the overrides.
    overrides: dotted config path -> value.
    workdir: ``<root>/trials/<name>``, an ordinary training workdir.
  """
  name: str
  overrides: Mapping[str, Any] = dataclasses.field(hash=False)
  workdir: str

  @property
  def log_dir(self) -> str:
    """``<root>/logs``, the runner's files (the workdir's grandparent)."""
    return os.path.join(os.path.dirname(os.path.dirname(self.workdir)),
                        LOGS_DIR)

  @property
  def log_path(self) -> str:
    """``<root>/logs/<name>.log``."""
    return os.path.join(self.log_dir, f"{self.name}.log")


def make_trials(root: str, sweep: Sequence[Overrides]) -> list[Trial]:
  """The sweep's trials with workdirs ``<root>/trials/<name>``.

  Raises:
    ValueError: a bad trial, or two trials with the same name.
  """
  trials, seen = [], {}
  for i, overrides in enumerate(sweep):
    overrides = check_overrides(overrides, f"trial {i}")
    name = trial_name(overrides)
    if name in seen:
      raise ValueError(f"Trials {seen[name]} ({sweep[seen[name]]}) and {i} "
                       f"({overrides}) have the same name {name!r}.")
    seen[name] = i
    trials.append(Trial(name, overrides, os.path.join(
        os.path.normpath(root), TRIALS_DIR, name)))
  return trials


def train_command(config_path: str, trial: Trial,
                  python: str = sys.executable,
                  extra_flags: Sequence[str] = ()) -> list[str]:
  """The argv of the trial's ordinary ``experiments.train`` run.

  ``[python, -m, experiments.train, --config=<config_path>,
  --workdir=<workdir>, --config.<key>=<value> ..., *extra_flags]``, run
  from the repository root; the values parse back (through
  ``ml_collections.config_flags``) to :func:`apply_overrides`'s config.
  """
  return [python, "-m", "experiments.train", f"--config={config_path}",
          f"--workdir={trial.workdir}"] + [
              f"--config.{key}={flag_value(trial.overrides[key])}"
              for key in sorted(trial.overrides)] + list(extra_flags)


def shell_command(argv: Sequence[str]) -> str:
  """``argv`` as one line for a shell (quoted where needed)."""
  return shlex.join(argv)


def trial_jobs(trials: Sequence[Trial],
               configs: Mapping[str, ml_collections.ConfigDict],
               config_path: str, *, python: str = sys.executable,
               extra_flags: Sequence[str] = ()) -> list[sweep_runner.Job]:
  """One runner job per trial: its :func:`train_command`.

  Args:
    trials: the trials.
    configs: each trial's config by name (:func:`check_trials`); its
      ``train.num_steps`` decides when the trial is done.
    config_path: the base config file, as ``--config`` takes it.
    python: the interpreter of the commands.
    extra_flags: more flags for every command (``--jax_enable_x64``).
  """
  # pylint: disable-next=g-import-not-at-top
  from pgmoe_jax.workflows import leaderboard  # it builds on this module

  def done(trial, steps):
    return lambda: leaderboard.trial_status(trial, steps) == "done"

  return [sweep_runner.Job(
      trial.name, tuple(train_command(config_path, trial, python,
                                      extra_flags)),
      trial.log_path, (trial.name,),
      done(trial, int(configs[trial.name].train.num_steps)))
          for trial in trials]
