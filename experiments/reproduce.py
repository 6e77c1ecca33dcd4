r"""Reproduce the paper's claims and go past them (issue 5), part by part.

    python -m experiments.reproduce --parts=scaling,warm_start \
        [--workdir=runs/quickstart --data=data/quickstart/test_interp]

Parts:

* ``scaling``: parameters and forward time (batch 16, float32, jitted, best
  of 5) of the dense baseline (hidden 512, 512) and PG-MoE (8x8 tiles, the
  quick-start expert, coarse envelope at half resolution) at 32, 64, 128 and
  256 points per axis, 2-D, and the time of PG-MoE's coarse envelope alone
  (the physics gate). Models are untrained: size and speed do not depend on
  the weights.
* ``warm_start``: LOBPCG iterations to residuals of 1e-8 Ha and 1e-4 Ha
  started from a trained model's prediction (``init=model.predict(V)``),
  against the default cold start (lowest kinetic modes), a random start, the
  exact state rounded to float32 (the ceiling for any float32 predictor) and
  SciPy eigsh, on the first ``--num`` potentials of ``--data``: the start's
  infidelity and residual, iterations, time per potential and the agreement
  of the energies.
* ``grid``: the grid of runs of the issue, on the same data and step budget:
  dense and PG-MoE, each with the supervised loss alone and with the energy
  loss added, and PG-MoE label-free (energy only, potentials streamed), at
  the labelled training sizes ``--train_sizes``; evaluated on
  ``--eval_splits``. Data are generated under ``--data_root`` (standard
  splits) if missing; each run trains in ``<out>/runs/<variant>_n<size>``
  and resumes if killed (finished runs are skipped). Writes
  ``<out>/results.csv``, ``<out>/results.md`` and ``<out>/error_vs_size.png``
  and ``<out>/params_vs_error.png``. PG-MoE's coarse envelope is at half the
  grid's resolution unless ``--coarse`` says otherwise.

        python -m experiments.reproduce --parts=grid --grid=32 \
            --train_sizes=100,300,1000,3000 --steps=20000 \
            --data_root=data/repro32 --out=results/repro32

* ``ablation``: a trained PG-MoE (``--workdir``) on ``--data`` with and
  without its experts (their parameters zeroed): what the gate alone gives.

The 64x64 comparison is ``grid`` at ``--grid=64``; RESULTS.md gives every
command and its figures.
"""

from __future__ import annotations

import functools
import os
import time
import warnings

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import cli

_PARTS = flags.DEFINE_list("parts", ["scaling", "warm_start"],
                           "Parts to run: scaling, warm_start, grid, "
                           "ablation.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart",
                               "Trained model for warm_start and ablation.")
_DATA = flags.DEFINE_string("data", "data/quickstart/test_interp",
                            "Dataset for warm_start and ablation.")
_NUM = flags.DEFINE_integer("num", 50, "Potentials for warm_start.")
_SIZES = flags.DEFINE_list("sizes", ["32", "64", "128", "256"],
                           "Points per axis for scaling.")
_GRID = flags.DEFINE_integer("grid", 32, "grid: points per axis (2-D).")
_TRAIN_SIZES = flags.DEFINE_list("train_sizes", ["100", "300", "1000", "3000"],
                                 "grid: labelled training sizes.")
_STEPS = flags.DEFINE_integer("steps", 20000, "grid: steps per run.")
_NUM_EVAL = flags.DEFINE_integer("num_eval", 200, "grid: samples per "
                                 "evaluation split.")
_DATA_ROOT = flags.DEFINE_string("data_root", "data/repro32",
                                 "grid: standard splits (made if missing).")
_OUT = flags.DEFINE_string("out", "results/repro32", "grid: results folder.")
_VARIANTS = flags.DEFINE_list(
    "variants", ["dense_sup", "dense_energy", "pgmoe_sup", "pgmoe_energy",
                 "pgmoe_label_free"], "grid: runs (model_loss).")
_COARSE = flags.DEFINE_integer(
    "coarse", 0, "grid: points per axis of PG-MoE's coarse envelope; 0 "
    "takes half the grid. Must divide --grid.")
_EVAL_SPLITS = flags.DEFINE_list(
    "eval_splits", ["test_interp", "test_extrap", "ood_harmonic",
                    "ood_random_smooth"], "grid: evaluation splits.")


def scaling() -> None:
  from pgmoe_jax import Grid  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import potentials  # pylint: disable=g-import-not-at-top
  from pgmoe_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from pgmoe_jax.models import count_params  # pylint: disable=g-import-not-at-top

  print("\n## Scaling: parameters and forward time, 2-D, batch 16, float32\n")
  print("| n per axis | dense params | PG-MoE params | ratio | dense ms | "
        "PG-MoE ms | dense / PG-MoE time | PG-MoE envelope alone ms |")
  print("|---|---|---|---|---|---|---|---|")
  for n in (int(s) for s in _SIZES.value):
    grid = Grid((n, n), 20.0)
    v = jnp.asarray(potentials.gaussian_wells(jax.random.key(0), grid, (16,)),
                    jnp.float32)
    row = []
    for config in (dict(name="dense", hidden=(512, 512)),
                   dict(name="pgmoe", tiles=n // 8, coarse=n // 2,
                        envelope_iters=6, gate="envelope")):
      model = build_model(config, grid)
      variables = jax.jit(model.init)(jax.random.key(0), v[:1])
      apply = jax.jit(model.apply)
      row.append((count_params(variables["params"]),
                  cli.best_time(lambda: apply(variables, v), 5)))
    # The physics gate alone (model is PG-MoE, the loop's last): the coarse
    # ground state inside the model.
    envelope = jax.jit(functools.partial(model.apply,
                                         method="coarse_envelope"))
    te = cli.best_time(lambda: envelope(variables, v), 5)
    (pd, td), (pm, tm) = row
    print(f"| {n} | {pd:,} | {pm:,} | {pd / pm:.0f}x | {1e3 * td:.1f} | "
          f"{1e3 * tm:.1f} | {td / tm:.2f} | {1e3 * te:.1f} |")


def warm_start() -> None:
  """LOBPCG iterations from a model's prediction against other starts.

  Each start is solved to two residuals: 1e-8 Ha (the issue's target) and
  1e-4 Ha (about float32 round-off on these grids; the energy is then within
  roughly 1e-8 Ha, since its error is quadratic in the state's). Besides the
  default cold start and the model, two references bound what any warm start
  can gain: a random start (the textbook cold start), and the exact state
  rounded to float32 (the best a float32 predictor could ever hand over).
  """
  from pgmoe_jax import data  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import infidelity  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import load_model  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import solvers  # pylint: disable=g-import-not-at-top

  model = load_model(_WORKDIR.value)
  ds = data.open_dataset(_DATA.value, grid=model.grid)
  grid = model.grid
  v = np.asarray(ds.potentials[:_NUM.value], np.float64)
  e0 = np.asarray(ds.E0[:_NUM.value], np.float64)
  psi0 = np.asarray(ds.psi0[:_NUM.value], np.float64)
  guess = np.asarray(model.predict(jnp.asarray(v, jnp.float32)), np.float64)
  rounded = psi0.astype(np.float32).astype(np.float64)
  noise = np.random.default_rng(0).standard_normal(
      (len(v), 2) + grid.shape)
  tols = (1e-8, 1e-4)

  def run(init, tol):
    solve = lambda: solvers.solve(v, grid, method="lobpcg", tol=tol,
                                  chunk_size=1, init=init)
    jax.block_until_ready(solve().energies)  # compile every shape involved
    start = time.perf_counter()
    out = solve()
    jax.block_until_ready(out.energies)
    return out, (time.perf_counter() - start) / len(v)

  starts = (("cold: lowest kinetic modes (default)", None),
            ("cold: random", noise),
            ("warm: `init=model.predict(V)`", guess),
            ("warm: exact state rounded to float32", rounded))
  results = {label: [run(init, tol) for tol in tols]
             for label, init in starts}
  start = time.perf_counter()
  ref = solvers.solve(v, grid, method="eigsh", tol=tols[0])
  t_ref = (time.perf_counter() - start) / len(v)
  t_pred = cli.best_time(
      lambda: model.predict(jnp.asarray(v, jnp.float32)), 5) / len(v)

  print(f"\n## Warm start: {len(v)} potentials of {_DATA.value}, model "
        f"{_WORKDIR.value} ({model.num_params:,} parameters)\n")
  print("| start | start 1-F median | start residual median (Ha) | "
        "iterations to 1e-8 Ha (mean) | ms per potential | "
        "max abs(E - E0) Ha | converged | iterations to 1e-4 Ha (mean) |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  mean_iters = {}
  for label, init in starts:
    (tight, t_tight), (loose, _) = results[label]
    if init is None:  # the lowest kinetic mode, the same for every V
      first = np.broadcast_to(solvers.kinetic_modes(grid, 1)[0], v.shape)
    else:
      first = init if init.ndim == v.ndim else init[:, 0]
    start_inf = np.median(np.asarray(infidelity(first, psi0, grid)))
    start_res = np.median(_residuals(first, v, grid))
    mean_iters[label] = (np.mean(tight.iterations), np.mean(loose.iterations))
    err = np.max(np.abs(np.asarray(tight.energies)[:, 0] - e0))
    print(f"| {label} | {start_inf:.1e} | {start_res:.1e} | "
          f"{mean_iters[label][0]:.1f} | {1e3 * t_tight:.2f} | {err:.1e} | "
          f"{int(np.sum(tight.converged))}/{len(v)} | "
          f"{mean_iters[label][1]:.1f} |")
  print(f"| SciPy eigsh shift-invert | - | - | - | {1e3 * t_ref:.2f} | "
        f"{np.max(np.abs(ref.energies[:, 0] - e0)):.1e} | - | - |")
  # The residual history: LOBPCG converges linearly, at about the same rate
  # from the default, the model's and the exact start, so a start saves
  # iterations only by its log residual.
  counts = (1, 2, 4, 8, 12)
  print("\n| start | " + " | ".join(f"residual after {k} (Ha)"
                                    for k in counts)
        + " | reduction per iteration, 1 to 8 |")
  print("|---|" + "---:|" * (len(counts) + 1))
  for label, init in starts:
    with warnings.catch_warnings():  # exactly k iterations never reach tol
      warnings.simplefilter("ignore", RuntimeWarning)
      history = [np.median(np.asarray(solvers.solve(
          v, grid, method="lobpcg", tol=1e-300, max_iters=k, chunk_size=1,
          init=init).residuals)[:, 0]) for k in counts]
    rate = (history[0] / history[3])**(1 / (counts[3] - counts[0]))
    print(f"| {label} | " + " | ".join(f"{r:.1e}" for r in history)
          + f" | {rate:.1f}x |")
  cold, model_row, ceiling = (mean_iters[starts[i][0]] for i in (0, 2, 3))
  ratio = lambda a, b: f"{a / b:.2f}" if b else "no iterations needed"
  print(f"\nwarm-start iteration ratio (cold / warm) at 1e-8 Ha: "
        f"{ratio(cold[0], model_row[0])} (at 1e-4 Ha: "
        f"{ratio(cold[1], model_row[1])}); exact state in float32: "
        f"{ratio(cold[0], ceiling[0])} (at 1e-4 Ha: "
        f"{ratio(cold[1], ceiling[1])}). The prediction costs "
        f"{1e3 * t_pred:.3f} ms per potential (batched).")


def _residuals(psi, v, grid) -> np.ndarray:
  """``||H psi - E psi|| / ||psi||`` per state, in Ha (the solver's norm)."""
  from pgmoe_jax import residual  # pylint: disable=g-import-not-at-top
  return np.asarray(residual(jnp.asarray(psi), jnp.asarray(v), grid))


VARIANTS = ("dense_sup", "dense_energy", "pgmoe_sup", "pgmoe_energy",
            "pgmoe_label_free")


def _run_config(variant: str, size: int, grid, root: str, steps: int,
                coarse: int = 0):
  """The config of one run: the quick-start recipe with a few changes."""
  from experiments.configs import default  # pylint: disable=g-import-not-at-top
  from experiments.configs import dense  # pylint: disable=g-import-not-at-top

  config = (dense if variant.startswith("dense") else default).get_config()
  if not variant.startswith("dense"):
    # The quick-start layout at any size: 8x8 tiles, and the envelope at
    # half the resolution (16 at 32x32) unless told otherwise.
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


def _plot_grid(rows, out: str, split: str) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  rows = [r for r in rows if r["split"] == split]
  fig = Figure(figsize=(11, 4.2))
  FigureCanvasAgg(fig)
  for i, key in enumerate(("energy_error_mha_median", "infidelity_median")):
    ax = fig.add_subplot(1, 2, i + 1)
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
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "error_vs_size.png"), dpi=110)

  fig = Figure(figsize=(5.5, 4.2))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for variant in sorted({r["variant"] for r in rows}):
    pts = [(r["num_params"], r["energy_error_mha_median"]) for r in rows
           if r["variant"] == variant]
    ax.scatter(*zip(*pts), label=variant)
  ax.set(xscale="log", yscale="log", xlabel="parameters",
         ylabel="dE median (mHa)", title=f"{split}: size against error")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "params_vs_error.png"), dpi=110)


def grid_runs() -> None:
  import csv  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import Grid  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import data  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import evaluate  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import load_model  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import train  # pylint: disable=g-import-not-at-top

  cli.check_names(_VARIANTS.value, VARIANTS, "variant")
  grid = Grid((_GRID.value, _GRID.value), 20.0)
  if _COARSE.value < 0 or (_COARSE.value and (
      _COARSE.value < 2 or _GRID.value % _COARSE.value)):
    raise app.UsageError(f"--coarse={_COARSE.value} must divide --grid="
                         f"{_GRID.value} and be >= 2 (or 0: half the grid).")
  sizes = sorted(int(s) for s in _TRAIN_SIZES.value)
  root, out = _DATA_ROOT.value, _OUT.value
  specs = data.standard_splits("gaussian_wells", grid, max(sizes),
                               _NUM_EVAL.value)
  for name in ["train", "val"] + list(_EVAL_SPLITS.value):
    if name not in specs:
      raise app.UsageError(f"Unknown split {name!r}; known: "
                           f"{', '.join(specs)}.")
    data.generate(f"{root}/{name}", specs[name], workers=os.cpu_count() or 1)
  evals = {name: data.open_dataset(f"{root}/{name}", grid=grid)
           for name in _EVAL_SPLITS.value}
  os.makedirs(out, exist_ok=True)
  rows = []
  for variant in _VARIANTS.value:
    for size in (sizes[:1] if variant.endswith("label_free") else sizes):
      label = variant if variant.endswith("label_free") else (
          f"{variant}_n{size}")
      workdir = os.path.join(out, "runs", label)
      done_file = os.path.join(workdir, "done.json")
      if not os.path.exists(done_file):
        config = _run_config(variant, size, grid, root, _STEPS.value,
                             _COARSE.value)
        start = time.perf_counter()
        train.train_and_evaluate(config, workdir)
        with open(done_file, "w") as f:
          json.dump({"train_seconds": time.perf_counter() - start}, f)
      with open(done_file) as f:
        seconds = json.load(f)["train_seconds"]
      model = load_model(workdir)
      for split, ds in evals.items():
        summary = evaluate.evaluate_predictor(
            model, ds, num_reference=4).summary()
        rows.append({"variant": variant, "train_size": (
            0 if variant.endswith("label_free") else size),
                     "split": split, "train_seconds": round(seconds, 1),
                     **{k: summary[k] for k in (
                         "num_params", "infidelity_median", "infidelity_p90",
                         "energy_error_mha_median", "energy_error_mha_p90",
                         "frac_chemical_accuracy", "predictions_per_s")}})
      print(f"{label}: " + ", ".join(
          f"{r['split']} dE {r['energy_error_mha_median']:.3g} mHa"
          for r in rows[-len(evals):]), flush=True)
  with open(os.path.join(out, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  header = list(rows[0])
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  for r in rows:
    lines.append("| " + " | ".join(
        evaluate.format_value(k, r[k]) if isinstance(r[k], float) else
        str(r[k]) for k in header) + " |")
  table = "\n".join(lines)
  with open(os.path.join(out, "results.md"), "w") as f:
    coarse = _COARSE.value or grid.shape[0] // 2
    f.write(f"# Grid of runs, 2-D {grid.shape[0]}x{grid.shape[1]}, "
            f"{_STEPS.value} steps each, PG-MoE envelope {coarse}x{coarse}"
            f"\n\n{table}\n")
  _plot_grid(rows, out, _EVAL_SPLITS.value[0])
  print(f"\n## Grid of runs ({out}/results.md)\n\n{table}")


def ablation() -> None:
  """A trained PG-MoE with and without its experts, on ``--data``.

  Zeroing the experts' parameters makes their corrections exactly zero, so
  what remains is the gate's log-envelope (for ``gate="envelope"`` the
  coarse Hamiltonian's ground state, with no learned parameter at all).
  """
  from pgmoe_jax import data  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import evaluate  # pylint: disable=g-import-not-at-top
  from pgmoe_jax import load_model  # pylint: disable=g-import-not-at-top
  from pgmoe_jax.inference import Predictor  # pylint: disable=g-import-not-at-top

  model = load_model(_WORKDIR.value)
  if model.config.model.name != "pgmoe":
    raise app.UsageError(f"ablation needs a PG-MoE run; {_WORKDIR.value} "
                         f"holds a {model.config.model.name} model.")
  ds = data.open_dataset(_DATA.value, grid=model.grid)
  experts = ("expert", "experts")
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x) if path[0].key in experts else x,
      model.params)
  gate_only = Predictor(model.config, model.grid, model.model, zeroed,
                        model.step)
  print(f"\n## Ablation: {_WORKDIR.value} (gate {model.config.model.gate!r}, "
        f"coarse {model.config.model.coarse}) on {_DATA.value}\n")
  print("| model | 1-F median | 1-F p90 | dE median (mHa) | dE p90 (mHa) | "
        "dE < 1.6 mHa |")
  print("|---|---:|---:|---:|---:|---:|")
  for label, predictor in (("PG-MoE", model),
                           ("gate alone (experts zeroed)", gate_only)):
    summary = evaluate.evaluate_predictor(predictor, ds,
                                          num_reference=0).summary()
    print(f"| {label} | " + " | ".join(
        evaluate.format_value(k, summary[k]) for k in (
            "infidelity_median", "infidelity_p90", "energy_error_mha_median",
            "energy_error_mha_p90", "frac_chemical_accuracy")) + " |")


PARTS = {"scaling": scaling, "warm_start": warm_start, "grid": grid_runs,
         "ablation": ablation}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.check_names(_PARTS.value, PARTS, "part")
  jax.config.update("jax_enable_x64", True)
  print(f"# reproduce on {jax.devices()[0].device_kind}")
  for name in _PARTS.value:
    PARTS[name]()


if __name__ == "__main__":
  app.run(main)
