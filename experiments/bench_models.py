r"""Benchmarks of the models' speed (``python -m experiments.benchmark``).

* ``population``: member-steps per second of K members of the default
  config's PG-MoE (16x16 coarse envelope) trained in one vmapped program
  (:mod:`pgmoe_jax.training.population`), K = 1 ... 32, against K runs one
  after another (the single run's steps per second, whatever K: the first
  figure printed is that config's training steps per second, the pure
  step on random labelled batches of 64, float32, no data I/O).
* ``predict``: PG-MoE predictions per second (the default config's shape:
  8x8 tiles, envelope at half resolution; untrained, the speed does not
  depend on the weights; float32, batches of 256) against the JAX LOBPCG's
  ground states per second (float64, the datasets' reference, one batch of
  the same potentials on the default device) at 32, 64 and 128 points per
  axis.
* ``gate``: the physics gate's accuracy-speed front. For each coarse
  solver (the reference LOBPCG with a 2-vector block, the fixed-cost
  batched single-vector LOBPCG, k iterations) and coarse grid (a quarter,
  half and all of the fine grid per axis): gate calls per second (batch 256,
  float32) and the median energy error of the envelope alone (interpolated
  to the fine grid, no experts; mHa against the fine grid's E0 from the
  reference solver in float64) on 32 potentials of each family.

Every figure is the best of ``--repeats`` timed calls after an untimed
warm-up (compilation excluded), on both sides of every ratio. Figures
depend on the machine; compare within one run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import default as default_config
from experiments.configs import test as test_config
from pgmoe_jax import potentials
from pgmoe_jax import solvers
from pgmoe_jax import variational
from pgmoe_jax.grid import Grid
from pgmoe_jax.models import build_model
from pgmoe_jax.timing import best_time
from pgmoe_jax.timing import timed_best
from pgmoe_jax.training import config as config_lib
from pgmoe_jax.training import losses
from pgmoe_jax.training import population
from pgmoe_jax.training import step as step_lib


def bench_population(quick: bool, repeats: int) -> None:
  """Member-steps/s of one vmapped population against sequential runs."""
  base = (test_config if quick else default_config).get_config()
  base.loss.mode = "supervised"
  base.data.train = "unused"  # random batches below, no dataset
  sizes = (1, 2) if quick else (1, 2, 4, 8, 16, 32)
  num_steps = 5 if quick else 20
  run = config_lib.resolve(base)
  grid, model, batch_size = run.grid, run.model, run.train.batch_size
  print(f"\n## population: member-steps/s, {len(sizes)} population sizes "
        f"of {base.model.name} on {grid} (batch {batch_size}, float32), "
        f"best of {repeats} x {num_steps} steps\n")

  def apply_fn(params, v):
    return model.apply({"params": params}, v)

  def batch_of(key, k):
    v = potentials.sample("gaussian_wells", key, grid, (k, batch_size),
                          dtype=np.float32)
    psi0 = jnp.exp(-v)  # any positive state: the step's cost is the same
    return {"potential": v, "psi0": psi0,
            "E0": jnp.zeros(v.shape[:2], jnp.float32)}

  example = np.zeros((1,) + grid.shape, np.float32)
  single = jax.jit(step_lib.make_train_step(
      losses.make_loss_fn(run, apply_fn), run.optimizer, run.schedule))
  state = step_lib.create_train_state(jax.random.key(0), model,
                                      run.optimizer, example)
  batch = jax.tree.map(lambda x: x[0], batch_of(jax.random.key(1), 1))
  key = jax.random.key(2)

  def run_single(state=state):
    for _ in range(num_steps):
      state, metrics = single(state, batch, key)
    return metrics

  sequential = num_steps / best_time(run_single, repeats)
  single_flops = _flops(single, state, batch, key)
  print("| members K | member-steps/s | vs K runs one after another | "
        "steps/s of the population | GFLOP per step | GFLOP/s |")
  print("|---:|---:|---:|---:|---:|---:|")
  for k in sizes:
    runs = []
    for seed in range(k):
      config = base.copy_and_resolve_references()
      config.seed = seed
      config.optim.learning_rate = base.optim.learning_rate * (1 + seed / k)
      runs.append(config_lib.resolve(config))
    pop_step = jax.jit(population.make_population_step(runs, apply_fn))
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[
        step_lib.create_train_state(jax.random.key(s), model, r.optimizer,
                                    example)
        for s, r in enumerate(runs)])
    hparams = population.member_hyperparameters(runs, jnp.float32)
    batches = batch_of(jax.random.key(1), k)
    keys = jax.random.split(jax.random.key(2), k)

    def run_population(states=states, pop_step=pop_step, batches=batches,
                       keys=keys, hparams=hparams):
      for _ in range(num_steps):
        states, metrics = pop_step(states, batches, keys, hparams)
      return metrics

    rate = num_steps / best_time(run_population, repeats)
    flops = _flops(pop_step, states, batches, keys, hparams)
    print(f"| {k} | {k * rate:,.0f} | {k * rate / sequential:.2f}x | "
          f"{rate:,.1f} | {flops / 1e9:.3g} | {flops * rate / 1e9:,.1f} |")
  print(f"\nSequential: one run at {sequential:,.1f} steps/s "
        f"({single_flops / 1e9:.3g} GFLOP per step, "
        f"{single_flops * sequential / 1e9:,.1f} GFLOP/s), so K runs one "
        "after another make that many member-steps/s whatever K. GFLOP per "
        "step is XLA's count for the compiled step: when GFLOP/s stops "
        "growing with K the device is busy, and only a wider one (an "
        "accelerator) makes more members cheaper.")


def _flops(jitted, *args) -> float:
  """XLA's floating-point operation count of ``jitted(*args)``."""
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def bench_gate(quick: bool, repeats: int) -> None:
  """The physics gate's speed and the accuracy of its envelope alone."""
  n, batch, count = (16, 16, 4) if quick else (64, 256, 32)
  grid = Grid((n, n), 20.0)
  families = ("gaussian_wells",) if quick else tuple(potentials.FAMILIES)
  labelled = {}
  for i, family in enumerate(families):
    v = np.asarray(potentials.sample(family, jax.random.key(100 + i), grid,
                                     count, dtype=jnp.float64))
    labelled[family] = (v, solvers.solve(v, grid, method="lobpcg").energies[
        :, 0])
  v_speed = jnp.asarray(potentials.sample(
      "gaussian_wells", jax.random.key(0), grid, batch), jnp.float32)
  device = jax.devices()[0]
  print(f"\n## gate: the physics envelope alone on {grid}, float32, on "
        f"{device.platform} ({device.device_kind}); gate calls/s for "
        f"batches of {batch}; envelope dE = median E[envelope] - E0 (mHa) "
        f"over {count} potentials per family\n")
  print("| coarse | solver | iterations | start (iterations per level) | "
        "envelopes/s | " + " | ".join(f"dE {f}" for f in families) + " |")
  print("|---:|---|---:|---|---:|" + "---:|" * len(families))
  # (coarse, solver, iterations, start grid, start iterations per level)
  if quick:  # one setting per solver and a start chain (a smoke run)
    settings = [(n // 2, "lobpcg", 6, None, ()),
                (n // 2, "fixed", 6, None, ()),
                (n, "fixed", 1, n // 2, (2, 2))]
  else:
    settings = [(n // 4, "lobpcg", 6, None, ()),
                (n // 2, "lobpcg", 6, None, ())]
    settings += [(c, "fixed", k, None, ()) for c in (n // 4, n // 2, n)
                 for k in (2, 4, 6, 8)]
    # Coarse-to-fine: the full-grid iterations start from a coarser solve.
    settings += [(n, "fixed", k, n // 2, levels) for k in (1, 2)
                 for levels in ((6,), (4, 2), (6, 2))]
  for coarse, solver, iters, start, levels in settings:
    model = build_model(dict(name="pgmoe", tiles=max(n // 8, 1),
                             coarse=coarse, envelope_iters=iters,
                             envelope_solver=solver, envelope_start=start,
                             envelope_start_iters=levels or 6), grid)
    variables = jax.jit(model.init)(jax.random.key(0), v_speed[:1])
    gate = jax.jit(lambda v, m=model, p=variables: m.apply(
        p, v, use_experts=False))
    rate = batch / best_time(lambda g=gate: g(v_speed), repeats)
    errors = []
    for v, e0 in labelled.values():
      psi = gate(jnp.asarray(v, jnp.float32))
      e = variational.energy(np.asarray(psi, np.float64), v, grid)
      errors.append(1e3 * float(np.median(np.asarray(e) - e0)))
    chain = "-" if not start else f"{start} ({', '.join(map(str, levels))})"
    print(f"| {coarse} | {solver} | {iters} | {chain} | {rate:,.0f} | "
          + " | ".join(f"{x:.3g}" for x in errors) + " |")


def bench_predict(quick: bool, repeats: int) -> None:
  """PG-MoE predictions/s against JAX LOBPCG solves/s per grid size."""
  sizes, batch = ((16,), 16) if quick else ((32, 64, 128), 256)
  device = jax.devices()[0]
  print(f"\n## predict: PG-MoE predictions/s (float32, batch {batch}) "
        f"against JAX LOBPCG ground states/s (float64, one batch of "
        f"{batch}), on {device.platform} ({device.device_kind}); both the "
        f"best of {repeats} after a warm-up\n")
  print("| n per axis | PG-MoE params | predictions/s | LOBPCG solves/s | "
        "LOBPCG iterations | speed-up |")
  print("|---:|---:|---:|---:|---:|---:|")
  base = default_config.get_config()
  for n in sizes:
    grid = Grid((n, n), 20.0)
    v = potentials.sample("gaussian_wells", jax.random.key(n), grid, batch)
    config = base.model.copy_and_resolve_references()
    config.tiles, config.coarse = max(n // 8, 1), n // 2
    model = build_model(config, grid)
    v32 = jnp.asarray(v, jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), v32[:1])
    apply = jax.jit(model.apply)
    predict_s = best_time(lambda: apply(variables, v32), repeats)
    v64 = np.asarray(v, np.float64)
    result, solve_s = timed_best(
        lambda: solvers.solve(v64, grid, method="lobpcg"), repeats)
    params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    print(f"| {n} | {params:,} | {batch / predict_s:,.0f} | "
          f"{batch / solve_s:,.1f} | {int(np.max(result.iterations))} | "
          f"{solve_s / predict_s:,.0f}x |")
