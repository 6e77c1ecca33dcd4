"""Where a sweep's trials stand: status, and the leaderboard.

:func:`trial_status` reads a trial's checkpoint folders and the runner's
markers. :func:`summarize` reads each trial's workdir (``metrics.jsonl``,
the checkpoint folders, ``config.json``) and the runner's markers, so it
works for trials run by any launcher, finished or not, and writes::

    <root>/sweep.csv             every column, one row per trial
    <root>/sweep.md              the main columns, best trial first
    <root>/sweep_<metric>.png    the metric against each swept key
                                 (when matplotlib is installed)

Columns: the trial's name, one per swept key, ``status``
(:func:`trial_status`), ``step`` (the latest record or checkpoint),
``num_params``, ``best_<metric>`` and ``best_step``
over the run's records, ``final_<metric>``, ``train_seconds`` (the sum over
train records of the steps since the previous record over
``steps_per_sec``: time spent in training steps, from any launcher),
``wall_seconds`` (the local runner's, for the attempt that finished),
``train_loss`` (the last train record's) and ``val_<name>`` for every
value of the last validation record.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from pgmoe_jax import paths
from pgmoe_jax.evaluation import report
from pgmoe_jax.rundir import workdir as workdir_lib
from pgmoe_jax.training import summaries
from pgmoe_jax.workflows import sweep as sweep_lib
from pgmoe_jax.workflows import sweep_runner

MODES = ("min", "max")
STATUSES = ("done", "failed", "partial", "new")


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints under ``<workdir>/checkpoints``.

  Read from the folder names, without orbax: a step folder appears under
  its number only once written (orbax renames a temporary folder; on
  object stores it adds ``commit_success.txt``, checked there).
  """
  folder = paths.resolve(workdir_lib.checkpoint_dir(workdir))
  try:
    entries = list(folder.iterdir())
  except (FileNotFoundError, NotADirectoryError):
    return []
  remote = paths.is_remote(workdir)
  return sorted(int(e.name) for e in entries if e.name.isdigit() and (
      not remote or (e / "commit_success.txt").exists()))


def trial_status(trial: sweep_lib.Trial, num_steps: int) -> str:
  """``"done"``, ``"failed"``, ``"partial"`` or ``"new"``.

  done: a complete checkpoint at ``num_steps`` (or later) exists, and the
  runner did not record a non-zero exit code for the last attempt (the
  final checkpoint marks a run finished by any launcher: it is written
  last and appears whole). failed: not done, and the runner recorded a
  failure (``<root>/logs/<name>.failed``). partial: the workdir holds
  something. new: nothing yet.
  """
  marker = sweep_runner.read_json(
      sweep_runner.marker_path(trial.log_dir, trial.name))
  steps = checkpoint_steps(trial.workdir)
  if steps and steps[-1] >= num_steps and (
      marker is None or marker.get("returncode") == 0):
    return "done"
  if os.path.exists(sweep_runner.failure_path(trial.log_dir, trial.name)):
    return "failed"
  if steps or paths.resolve(trial.workdir).exists():
    return "partial"
  return "new"


def split_metric(metric: str) -> tuple[str, str]:
  """``"x"`` or ``"val/x"`` -> ``("val", "x")``; ``"train/x"`` -> train's."""
  split, _, key = metric.rpartition("/")
  split = split or "val"
  if split not in ("val", "train") or not key:
    raise ValueError(f"metric={metric!r}: expected a validation metric "
                     "name ('energy_error_mha_median', optionally 'val/...') "
                     "or 'train/<name>' ('train/loss').")
  return split, key


def read_records(workdir: str) -> list[dict[str, Any]]:
  """A run's ``metrics.jsonl`` records; ``[]`` when there are none yet."""
  try:
    return report.read_metrics(os.path.join(workdir, summaries.METRICS_FILE))
  except ValueError:
    return []


def _number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _trial_config(trial: sweep_lib.Trial,
                  config: ml_collections.ConfigDict | None):
  """The trial's ``config.json`` if written, else the base plus overrides."""
  if paths.resolve(os.path.join(trial.workdir,
                                workdir_lib.CONFIG_FILE)).exists():
    try:
      return workdir_lib.load_config(trial.workdir)
    except ValueError:
      pass
  return None if config is None else sweep_lib.apply_overrides(
      config, trial.overrides)


def _num_params(config, cache: dict) -> int | None:
  """Parameters of the config's model (shapes only, nothing restored)."""
  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import models
  from pgmoe_jax.models import resolve
  # pylint: enable=g-import-not-at-top
  key = json.dumps(workdir_lib.config_to_dict(config).get("model"),
                   sort_keys=True) + str(tuple(config.grid.shape))
  if key not in cache:
    try:
      config = sweep_lib.apply_overrides(config, {"dtype": "float32"})
      setup = resolve.resolve_model(config)
      cache[key] = models.count_params(resolve.param_shapes(setup))
    except ValueError:
      cache[key] = None
  return cache[key]


def train_seconds(records: Sequence[Mapping[str, Any]]) -> float | None:
  """Seconds in training steps: the sum over a run's train records of the
  steps since the last record over their ``steps_per_sec`` (evaluation and
  saving are not counted; works for runs of any launcher); ``None``
  without train records."""
  train = [r for r in records if r.get("split") == "train"]
  seconds, last = 0.0, 0
  for r in train:
    if _number(r.get("steps_per_sec")) and r["steps_per_sec"] > 0:
      seconds += (r.get("step", last) - last) / r["steps_per_sec"]
    last = r.get("step", last)
  return round(seconds, 2) if train else None


def trial_row(trial: sweep_lib.Trial, keys: Sequence[str], metric: str,
              mode: str = "min",
              config: ml_collections.ConfigDict | None = None,
              cache: dict | None = None) -> dict[str, Any]:
  """One leaderboard row (the columns of the module docstring)."""
  split, key = split_metric(metric)
  records = read_records(trial.workdir)
  trial_config = _trial_config(trial, config)
  num_steps = (math.inf if trial_config is None
               else trial_config.train.num_steps)
  steps = checkpoint_steps(trial.workdir)
  row = {"trial": trial.name}
  row.update({k: trial.overrides.get(k, "") for k in keys})
  row["status"] = trial_status(trial, num_steps)
  row["step"] = max([r.get("step", 0) for r in records] + steps + [0])
  row["num_params"] = (None if trial_config is None
                       else _num_params(trial_config, {} if cache is None
                                        else cache))
  scored = [r for r in records if r.get("split") == split
            and _number(r.get(key))]
  pick = min if mode == "min" else max
  best = pick(scored, key=lambda r: r[key]) if scored else None
  row[f"best_{key}"] = None if best is None else best[key]
  row["best_step"] = None if best is None else best.get("step")
  row[f"final_{key}"] = scored[-1][key] if scored else None
  train = [r for r in records if r.get("split") == "train"]
  row["train_seconds"] = train_seconds(records)
  marker = sweep_runner.read_json(
      sweep_runner.marker_path(trial.log_dir, trial.name))
  row["wall_seconds"] = None if marker is None or (
      marker.get("returncode") != 0) else marker.get("seconds")
  row["train_loss"] = train[-1].get("loss") if train else None
  val = [r for r in records if r.get("split") == "val"]
  if val:
    row.update({f"val_{k}": v for k, v in val[-1].items()
                if k not in ("step", "split")})
  return row


def summarize(root: str, trials: Sequence[sweep_lib.Trial],
              metric: str = "energy_error_mha_median", mode: str = "min", *,
              config: ml_collections.ConfigDict | None = None,
              echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Writes the leaderboard files of the module docstring.

  Args:
    root: the sweep's root.
    trials: its trials (:func:`pgmoe_jax.workflows.sweep.make_trials`).
    metric: a validation metric (``energy_error_mha_median`` or
      ``val/...``), or ``train/<name>`` for train records.
    mode: ``"min"`` or ``"max"``: which values are best.
    config: the base config, for trials without a ``config.json`` yet
      (their steps to go and parameters); optional.
    echo: where notices go (a skipped figure).

  Returns:
    The rows, best first (trials without the metric last, in order).

  Raises:
    ValueError: an unknown mode or malformed metric name.
  """
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)}.")
  split_metric(metric)
  keys = list(dict.fromkeys(k for t in trials for k in t.overrides))
  cache: dict = {}
  rows = [trial_row(t, keys, metric, mode, config, cache) for t in trials]
  best = f"best_{split_metric(metric)[1]}"
  sign = 1 if mode == "min" else -1
  rows.sort(key=lambda r: (r[best] is None,
                           0 if r[best] is None else sign * r[best]))
  folder = paths.resolve(root)
  folder.mkdir(parents=True, exist_ok=True)
  columns = list(dict.fromkeys(k for r in rows for k in r))
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  writer.writerows({k: "" if v is None else v for k, v in r.items()}
                   for r in rows)
  paths.write_atomic(folder / "sweep.csv", text.getvalue().encode())
  paths.write_atomic(folder / "sweep.md", markdown(
      rows, keys, metric, mode, title=f"Sweep {root}").encode())
  try:
    _plot(rows, keys, metric, mode, os.fspath(
        folder / f"sweep_{metric.replace('/', '_')}.png"))
  except (ImportError, ValueError) as e:
    echo(f"No figure: {e}")
  return rows


def markdown(rows: Sequence[dict], keys: Sequence[str], metric: str,
             mode: str = "min", title: str = "Sweep") -> str:
  """The leaderboard as Markdown: a title line and the main columns."""
  key = split_metric(metric)[1]
  columns = list(keys) + ["status", "step", f"best_{key}", "best_step",
                          f"final_{key}", "num_params", "train_seconds",
                          "wall_seconds"]
  lines = [f"# {title}: {len(rows)} trials, best {metric} ({mode}) first",
           "", "| " + " | ".join(columns) + " |",
           "|" + "|".join("---" if c in keys or c == "status" else "---:"
                          for c in columns) + "|"]
  for row in rows:
    cells = []
    for column in columns:
      value = row.get(column)
      if column in keys or isinstance(value, str):
        cells.append(str(value))
      elif column in (f"best_{key}", f"final_{key}"):
        cells.append(report.format_value(key, value))
      elif column in ("step", "best_step") and value is not None:
        cells.append(str(int(value)))
      else:
        cells.append(report.format_value(column, value))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _plot(rows, keys, metric: str, mode: str, path: str) -> None:
  """One panel per swept key: the best metric against the key's value."""
  best = f"best_{split_metric(metric)[1]}"
  scored = [r for r in rows if r[best] is not None]
  if not keys or not scored:
    raise ValueError(f"no trial has {metric} yet" if keys else
                     "no swept keys")
  cols = min(len(keys), 3)
  fig = report.new_figure(figsize=(4.2 * cols,
                                   3.4 * math.ceil(len(keys) / cols)))
  axes = fig.subplots(math.ceil(len(keys) / cols), cols, squeeze=False)
  for ax in axes.flat[len(keys):]:
    ax.set_visible(False)
  ys = [r[best] for r in scored]
  for ax, key in zip(axes.flat, keys):
    xs = [r.get(key, "") for r in scored]
    if all(_number(x) for x in xs):
      positive = min(xs) > 0
      if positive and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
      points = list(zip(xs, ys))
      groups: dict = {}
      for x, y in points:
        groups.setdefault(x, []).append(y)
      line = sorted((x, sorted(v)[len(v) // 2]) for x, v in groups.items())
      ax.plot(*zip(*line), "-", color="0.6", zorder=1)
    else:
      labels = list(dict.fromkeys(str(x) for x in xs))
      points = [(labels.index(str(x)), y) for x, y in zip(xs, ys)]
      ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    ax.scatter(*zip(*points), zorder=2)
    if min(ys) > 0 and max(ys) / min(ys) > 10:
      ax.set_yscale("log")
    ax.set(xlabel=key, ylabel=f"{best} ({mode})")
    ax.grid(True, which="both", alpha=0.3)
  report.save_figure(fig, path)
