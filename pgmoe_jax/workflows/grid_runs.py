"""The grid of training runs: models x losses x labelled-set sizes.

:func:`run_grid` trains, on the same data and step budget, the dense
baseline and PG-MoE, each with the supervised loss alone and with the
energy loss added, and PG-MoE label-free (energy only, potentials streamed),
at the labelled training sizes given; evaluates every run on the evaluation
splits; and writes ``<out>/results.csv``, ``<out>/results.md``,
``<out>/error_vs_size.png`` and ``<out>/params_vs_error.png``. Data are
generated under ``data_root`` (standard splits) if missing. PG-MoE keeps
8x8 tiles at every grid size, and its coarse envelope is at half the grid's
resolution unless ``coarse`` says otherwise.

The runs are a sweep (:mod:`pgmoe_jax.workflows.sweep`): each is a trial,
the overrides of :func:`run_overrides` on its base config file, trained as
an ordinary ``experiments.train`` command (with ``--jax_enable_x64``, as
the reproduction has always run) by the local runner in
``<out>/runs/<variant>_n<size>``, its output in ``<out>/logs/``. Finished
runs (a checkpoint at the last step) are skipped and killed ones resume;
``parallel`` runs train at once.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Callable, Mapping, Sequence

from pgmoe_jax import data
from pgmoe_jax.evaluation import report
from pgmoe_jax.evaluation import scorer
from pgmoe_jax.grid import Grid
from pgmoe_jax.inference import load_model
from pgmoe_jax.workflows import leaderboard
from pgmoe_jax.workflows import sweep
from pgmoe_jax.workflows import sweep_runner

VARIANTS = ("dense_sup", "dense_energy", "pgmoe_sup", "pgmoe_energy",
            "pgmoe_label_free")
SUMMARY_KEYS = ("num_params", "infidelity_median", "infidelity_p90",
                "energy_error_mha_median", "energy_error_mha_p90",
                "frac_chemical_accuracy", "predictions_per_s")


def model_family(variant: str) -> str:
  """``"dense"`` or ``"pgmoe"``: the base config a variant starts from."""
  return "dense" if variant.startswith("dense") else "pgmoe"


def run_overrides(variant: str, size: int, grid: Grid, root: str,
                  steps: int, base, coarse: int = 0,
                  envelope_solver: str = "") -> dict[str, Any]:
  """The config overrides of one run: a base recipe with a few changes.

  Args:
    variant: one of :data:`VARIANTS`.
    size: labelled training samples.
    grid: the grid.
    root: the standard splits' directory.
    steps: training steps.
    base: the variant's base config (``experiments/configs/default.py``
      for PG-MoE, ``dense.py`` for the dense network, in RESULTS.md).
    coarse: PG-MoE's coarse envelope points per axis; 0: half the grid.
    envelope_solver: PG-MoE's gate solver (``"fixed"`` or ``"lobpcg"``);
      empty: the base config's.
  """
  overrides = {
      "grid.shape": tuple(grid.shape), "grid.length": float(grid.length[0]),
      "data.train": f"{root}/train", "data.val": f"{root}/val",
      "data.num_train": size, "train.num_steps": steps,
      "optim.warmup_steps": min(base.optim.warmup_steps, steps // 10),
      "train.batch_size": min(base.train.batch_size, size),
      "loss.schedule": "constant"}
  if model_family(variant) == "pgmoe":
    overrides["model.tiles"] = max(grid.shape[0] // 8, 1)
    overrides["model.coarse"] = coarse or grid.shape[0] // 2
    if envelope_solver:
      overrides["model.envelope_solver"] = envelope_solver
  if variant.endswith("_sup"):
    overrides["loss.energy_weight"] = 0.0
  elif variant.endswith("_energy"):
    overrides["loss.energy_weight"] = 1.0
  else:  # label-free: no labels at all
    overrides.update({"loss.mode": "label_free", "loss.energy_weight": 1.0,
                      "data.train": ""})
  return overrides


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
             base_configs: Mapping[str, str],
             variants: Sequence[str] = VARIANTS, coarse: int = 0,
             envelope_solver: str = "",
             eval_splits: Sequence[str] = ("test_interp", "test_extrap",
                                           "ood_harmonic",
                                           "ood_random_smooth"),
             workers: int = 1, parallel: int = 1,
             echo: Callable[[str], None] = print) -> tuple[list[dict], str]:
  """Trains and evaluates the grid of runs (see the module docstring).

  Args:
    base_configs: ``{"pgmoe": path, "dense": path}``: the base config files
      (``experiments/configs/default.py`` and ``dense.py`` for RESULTS.md),
      as ``experiments.train --config`` takes them, from the working
      directory the runs start in.
    envelope_solver: PG-MoE's gate solver; empty: the base config's.
    workers: processes generating the data.
    parallel: runs trained at once.

  Returns:
    ``(rows, table)``: one row per run and split, and the Markdown table.

  Raises:
    ValueError: an unknown variant or split, a coarse size that does not
      divide the grid, or a run whose config does not resolve (before any
      run starts).
    RuntimeError: a run failed (its log's last lines were echoed).
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
  bases = {family: sweep.load_config_file(path)
           for family, path in base_configs.items()}
  trials, jobs = [], []
  for variant in variants:
    family = model_family(variant)
    group = []
    for size in (sizes[:1] if variant.endswith("label_free") else sizes):
      label = variant if variant.endswith("label_free") else (
          f"{variant}_n{size}")
      group.append(sweep.Trial(label, run_overrides(
          variant, size, grid, data_root, steps, bases[family], coarse,
          envelope_solver),
                               os.path.join(out, "runs", label)))
    configs = sweep.check_trials(bases[family], group)
    jobs += sweep.trial_jobs(group, configs, base_configs[family],
                             extra_flags=("--jax_enable_x64",))
    trials += [(variant, t) for t in group]
  summary = sweep_runner.run_local(jobs, parallel, echo=echo)
  unfinished = [*summary.failed, *summary.skipped_failed, *summary.retry]
  if unfinished:
    raise RuntimeError(
        f"Run(s) {', '.join(unfinished)} did not finish; their logs are in "
        f"{os.path.join(out, 'logs')} (rerun to resume).")
  rows = []
  for variant, trial in trials:
    seconds = leaderboard.train_seconds(
        leaderboard.read_records(trial.workdir))
    model = load_model(trial.workdir)
    for split, ds in evals.items():
      # No reference timing: the grid's table has no speed-up column.
      summary_ = scorer.evaluate_predictor(model, ds,
                                           num_reference=0).summary()
      rows.append({"variant": variant, "train_size": (
          0 if variant.endswith("label_free") else trial.overrides[
              "data.num_train"]),
                   "split": split, "train_seconds": seconds,
                   **{k: summary_[k] for k in SUMMARY_KEYS}})
    echo(f"{trial.name}: " + ", ".join(
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
