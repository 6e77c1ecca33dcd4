"""A run's ``config.json``: written once validated, sealed, compared on reuse.

:func:`save_config` writes ``<workdir>/config.json`` with its seal
``config.sha256`` unless the workdir belongs to another model;
:func:`load_config` reads it back and names an edit made after training
wrote it (:class:`ConfigEditedError`); :func:`accept_config_edit` records a
deliberate one. Workdirs written before the seal existed are read unchecked.
A ``model`` section written by an older version is read with its meaning
in today's spelling (:func:`pgmoe_jax.rundir.legacy.upgrade_model_section`);
the file itself is never rewritten on reading.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import ml_collections

from pgmoe_jax import checks
from pgmoe_jax import paths
from pgmoe_jax.paths import PathLike
from pgmoe_jax.rundir.legacy import upgrade_model_section

CONFIG_FILE = "config.json"
CONFIG_SEAL = "config.sha256"
# Config sections a checkpoint depends on: a workdir whose config.json
# differs in one of these holds parameters another model cannot use.
MODEL_SECTIONS = ("model", "grid", "dtype")
CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: PathLike) -> str:
  """The absolute checkpoint directory of a workdir (orbax needs absolute;
  a ``gs://`` URL is used as it is)."""
  return os.fspath(paths.resolve(workdir) / CHECKPOINT_DIR)


def config_to_dict(config: ml_collections.ConfigDict | Mapping) -> dict:
  """A config as plain JSON data (tuples become lists)."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json())
  return json.loads(json.dumps(config))


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
  """``{"optim.learning_rate": 1e-3, ...}``: a config (or its JSON dict)
  as dotted keys and JSON values (tuples as lists)."""
  if isinstance(config, ml_collections.ConfigDict):
    config = config_to_dict(config)
  if isinstance(config, Mapping) and config:
    out = {}
    for key, value in config.items():
      out.update(flatten_config(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: config}


def _current(config: Mapping) -> dict:
  """A config's JSON dict with its model section in today's spelling."""
  if not isinstance(config, Mapping):
    return config
  config = dict(config)
  if isinstance(config.get("model"), Mapping):
    config["model"] = upgrade_model_section(config["model"])
  return config


def _differences(old: Mapping, new: Mapping) -> list[str]:
  """``"a.b: old -> new"`` per differing field; model sections are
  compared in today's spelling, so a field an older version did not write
  and an old encoding are no difference from the same model today."""
  old = flatten_config(_current(config_to_dict(old)))
  new = flatten_config(_current(config_to_dict(new)))
  return [f"{k}: {old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r}"
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


class ConfigEditedError(ValueError):
  """``config.json`` no longer matches the seal written with it."""


def _digest(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def load_config(workdir: PathLike) -> ml_collections.ConfigDict:
  """Reads ``<workdir>/config.json`` and checks its seal.

  Returns:
    The config, its ``model`` section in today's spelling (an older
    version's is mapped by :mod:`pgmoe_jax.rundir.legacy`; the file is
    not changed).

  Raises:
    ValueError: no such file (not a training workdir) or invalid JSON.
    ConfigEditedError: the file was edited after training wrote it.
      Workdirs written before the seal existed are read unchecked.
  """
  path = paths.resolve(workdir) / CONFIG_FILE
  try:
    raw = path.read_bytes()
    data = json.loads(raw)
  except FileNotFoundError:
    raise ValueError(
        f"{workdir} is not a training workdir: it has no {CONFIG_FILE}. "
        "Train a model with python -m experiments.train --workdir=..."
    ) from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON ({e}).") from None
  seal_path = paths.resolve(workdir) / CONFIG_SEAL
  if seal_path.exists():
    seal = seal_path.read_text().strip()
    if seal != _digest(raw):
      raise ConfigEditedError(
          f"{path} was edited after training wrote it (it no longer matches "
          f"{CONFIG_SEAL}): the model would be rebuilt and reported with "
          "values it was not trained with. Restore the file; if the edit is "
          "intended (a field that keeps the parameter shapes, such as "
          "model.input_clip), record it with: python -c \"from "
          "pgmoe_jax.rundir import workdir; "
          f"workdir.accept_config_edit('{workdir}')\". Settings of a "
          "continued run (steps, learning rate) change by rerunning "
          "experiments.train with them.")
  return ml_collections.ConfigDict(_current(data))


def _write_config(workdir: PathLike, config_dict: dict) -> None:
  """Writes config.json and its seal (each atomically)."""
  raw = (json.dumps(config_dict, indent=2, sort_keys=True) + "\n").encode()
  folder = paths.resolve(workdir)
  for name, data in ((CONFIG_FILE, raw),
                     (CONFIG_SEAL, (_digest(raw) + "\n").encode())):
    with checks.writing(name, os.fspath(folder)):
      paths.write_atomic(folder / name, data)


def accept_config_edit(workdir: PathLike) -> None:
  """Records a deliberate edit of ``<workdir>/config.json`` (new seal).

  Raises:
    ValueError: the file is missing or not valid JSON.
  """
  path = paths.resolve(workdir) / CONFIG_FILE
  try:
    raw = path.read_bytes()
    json.loads(raw)
  except (OSError, ValueError) as e:
    raise ValueError(f"Cannot accept {path}: {e}") from None
  paths.write_atomic(path.parent / CONFIG_SEAL,
                     (_digest(raw) + "\n").encode())


def save_config(config: ml_collections.ConfigDict,
                workdir: PathLike) -> list[str]:
  """Writes the config to ``<workdir>/config.json`` unless it would mismatch.

  A workdir belongs to one model: if its ``config.json`` differs in the
  ``model`` or ``grid`` section or the ``dtype``, nothing is written and a
  ValueError names the differences. Other differences (more steps, another
  learning rate) are a continued run: the file is replaced.

  Args:
    config: the resolved config.
    workdir: the run directory (created if missing).

  Returns:
    The differing fields outside the model sections (``"a.b: old -> new"``),
    empty for a new workdir or the same config.

  Raises:
    ValueError: the workdir was set up for another model, or it holds
      checkpoints but no ``config.json``.
  """
  new = config_to_dict(config)
  folder = paths.resolve(workdir)
  changed = []
  if (folder / CONFIG_FILE).exists():
    old = config_to_dict(load_config(workdir))
    clash = _differences({k: old.get(k) for k in MODEL_SECTIONS},
                         {k: new.get(k) for k in MODEL_SECTIONS})
    if clash:
      raise ValueError(
          f"workdir {workdir} holds another model's checkpoints: its "
          f"{CONFIG_FILE} differs in {'; '.join(clash)}. Use a new --workdir "
          "(or delete this one); nothing was overwritten.")
    changed = _differences(old, new)
  elif (folder / CHECKPOINT_DIR).is_dir() and any(
      (folder / CHECKPOINT_DIR).iterdir()):
    raise ValueError(
        f"workdir {workdir} holds checkpoints but no {CONFIG_FILE}, so "
        "they cannot be checked against this config. Use a new --workdir.")
  folder.mkdir(parents=True, exist_ok=True)
  _write_config(folder, new)
  return changed
