"""The grid of training runs: models x losses x labelled-set sizes.

:func:`run_grid` trains, on the same data and step budget, the dense
baseline and PG-MoE, each with the supervised loss alone and with the
energy loss added, and PG-MoE label-free (energy only, potentials streamed),
at the labelled training sizes given; evaluates every run on the evaluation
splits; and writes ``<out>/results.csv``, ``<out>/results.md``,
``<out>/error_vs_size.png`` and ``<out>/params_vs_error.png``. Data are
generated under ``data_root`` (standard splits) if missing; each run trains
in ``<out>/runs/<variant>_n<size>`` and resumes if killed (finished runs,
marked by ``done.json``, are skipped). PG-MoE keeps 8x8 tiles at every grid
size, and its coarse envelope is at half the grid's resolution unless
``coarse`` says otherwise.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Callable, Mapping, Sequence

from pgmoe_jax import data
from pgmoe_jax import timing
from pgmoe_jax.evaluation import report
from pgmoe_jax.evaluation import scorer
from pgmoe_jax.grid import Grid
from pgmoe_jax.inference import load_model
from pgmoe_jax.training import train_and_evaluate

VARIANTS = ("dense_sup", "dense_energy", "pgmoe_sup", "pgmoe_energy",
            "pgmoe_label_free")
SUMMARY_KEYS = ("num_params", "infidelity_median", "infidelity_p90",
                "energy_error_mha_median", "energy_error_mha_p90",
                "frac_chemical_accuracy", "predictions_per_s")


def run_config(variant: str, size: int, grid: Grid, root: str, steps: int,
               base_configs: Mapping[str, Callable[[], Any]],
               coarse: int = 0):
  """The config of one run: a base recipe with a few changes.

  Args:
    variant: one of :data:`VARIANTS`.
    size: labelled training samples.
    grid: the grid.
    root: the standard splits' directory.
    steps: training steps.
    base_configs: ``{"pgmoe": get_config, "dense": get_config}`` returning
      the base recipes (``experiments/configs/default.py`` and ``dense.py``
      for RESULTS.md).
    coarse: PG-MoE's coarse envelope points per axis; 0: half the grid.
  """
  config = base_configs["dense" if variant.startswith("dense")
                        else "pgmoe"]()
  if not variant.startswith("dense"):
    config.model.tiles = max(grid.shape[0] // 8, 1)
    config.model.coarse = coarse or grid.shape[0] // 2
  config.grid.shape = grid.shape
  config.grid.length = grid.length[0]
  config.data.train = f"{root}/train"
  config.data.val = f"{root}/val"
  config.data.num_train = size
  config.train.num_steps = steps
  config.optim.warmup_steps = min(config.optim.warmup_steps, steps // 10)
  config.train.batch_size = min(config.train.batch_size, size)
  config.loss.schedule = "constant"
  if variant.endswith("_sup"):
    config.loss.energy_weight = 0.0
  elif variant.endswith("_energy"):
    config.loss.energy_weight = 1.0
  else:  # label-free: no labels at all
    config.loss.mode = "label_free"
    config.loss.energy_weight = 1.0
    config.data.train = ""
  return config


def _plot(rows, out: str, split: str) -> None:
  fig = report.new_figure(figsize=(11, 4.2))
  rows = [r for r in rows if r["split"] == split]
  axes = fig.subplots(1, 2)
  for ax, key in zip(axes, ("energy_error_mha_median", "infidelity_median")):
    for variant in sorted({r["variant"] for r in rows}):
      pts = sorted((r["train_size"], r[key]) for r in rows
                   if r["variant"] == variant and r[key] is not None)
      if variant.endswith("label_free"):
        ax.axhline(pts[0][1], ls="--", color="k", label=variant)
      else:
        ax.plot(*zip(*pts), "o-", label=variant)
    ax.set(xscale="log", yscale="log", xlabel="labelled training samples",
           ylabel=key.replace("_", " "), title=f"{split}: {key}")
    ax.grid(True, which="both", alpha=0.3)
  axes[-1].legend(fontsize=8)
  report.save_figure(fig, os.path.join(out, "error_vs_size.png"))

  fig = report.new_figure(figsize=(5.5, 4.2))
  ax = fig.add_subplot(1, 1, 1)
  for variant in sorted({r["variant"] for r in rows}):
    pts = [(r["num_params"], r["energy_error_mha_median"]) for r in rows
           if r["variant"] == variant]
    ax.scatter(*zip(*pts), label=variant)
  ax.set(xscale="log", yscale="log", xlabel="parameters",
         ylabel="dE median (mHa)", title=f"{split}: size against error")
  ax.legend(fontsize=8)
  report.save_figure(fig, os.path.join(out, "params_vs_error.png"))


def run_grid(*, grid_size: int, train_sizes: Sequence[int], steps: int,
             num_eval: int, data_root: str, out: str,
             base_configs: Mapping[str, Callable[[], Any]],
             variants: Sequence[str] = VARIANTS, coarse: int = 0,
             eval_splits: Sequence[str] = ("test_interp", "test_extrap",
                                           "ood_harmonic",
                                           "ood_random_smooth"),
             workers: int = 1,
             echo: Callable[[str], None] = print) -> tuple[list[dict], str]:
  """Trains and evaluates the grid of runs (see the module docstring).

  Returns:
    ``(rows, table)``: one row per run and split, and the Markdown table.

  Raises:
    ValueError: an unknown variant or split, or a coarse size that does not
      divide the grid.
  """
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise ValueError(f"Unknown variant(s) {', '.join(unknown)}; known: "
                     f"{', '.join(VARIANTS)}.")
  if coarse < 0 or (coarse and (coarse < 2 or grid_size % coarse)):
    raise ValueError(f"--coarse={coarse} must divide --grid={grid_size} and "
                     "be >= 2 (or 0: half the grid).")
  grid = Grid((grid_size, grid_size), 20.0)
  sizes = sorted(int(s) for s in train_sizes)
  specs = data.standard_splits("gaussian_wells", grid, max(sizes), num_eval)
  for name in ["train", "val"] + list(eval_splits):
    if name not in specs:
      raise ValueError(f"Unknown split {name!r}; known: {', '.join(specs)}.")
    data.generate(f"{data_root}/{name}", specs[name], workers=workers)
  evals = {name: data.open_dataset(f"{data_root}/{name}", grid=grid)
           for name in eval_splits}
  os.makedirs(out, exist_ok=True)
  rows = []
  for variant in variants:
    for size in (sizes[:1] if variant.endswith("label_free") else sizes):
      label = variant if variant.endswith("label_free") else (
          f"{variant}_n{size}")
      workdir = os.path.join(out, "runs", label)
      done_file = os.path.join(workdir, "done.json")
      if not os.path.exists(done_file):
        config = run_config(variant, size, grid, data_root, steps,
                            base_configs, coarse)
        _, seconds = timing.timed(lambda: train_and_evaluate(config,
                                                             workdir))
        with open(done_file, "w") as f:
          json.dump({"train_seconds": seconds}, f)
      with open(done_file) as f:
        seconds = json.load(f)["train_seconds"]
      model = load_model(workdir)
      for split, ds in evals.items():
        summary = scorer.evaluate_predictor(model, ds,
                                            num_reference=4).summary()
        rows.append({"variant": variant, "train_size": (
            0 if variant.endswith("label_free") else size),
                     "split": split, "train_seconds": round(seconds, 1),
                     **{k: summary[k] for k in SUMMARY_KEYS}})
      echo(f"{label}: " + ", ".join(
          f"{r['split']} dE {r['energy_error_mha_median']:.3g} mHa"
          for r in rows[-len(evals):]))
  with open(os.path.join(out, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  header = list(rows[0])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    lines.append("| " + " | ".join(
        report.format_value(k, r[k]) if isinstance(r[k], float) else
        str(r[k]) for k in header) + " |")
  table = "\n".join(lines)
  with open(os.path.join(out, "results.md"), "w") as f:
    shown = coarse or grid.shape[0] // 2
    f.write(f"# Grid of runs, 2-D {grid.shape[0]}x{grid.shape[1]}, "
            f"{steps} steps each, PG-MoE envelope {shown}x{shown}"
            f"\n\n{table}\n")
  _plot(rows, out, eval_splits[0])
  return rows, table
