r"""Benchmarks: figures and ratios printed, never asserted.

    python -m experiments.benchmark --what=matvec,solvers [--quick]

Every timed row is a warm-up call (compilation, caches; untimed) and then
the best of ``--repeats`` timed calls on the same inputs
(:func:`pgmoe_jax.timing.timed_best`), so both sides of every ratio are
timed alike; ``matvec`` and ``multihost``, whose calls take microseconds,
take the best of a fixed multiple of ``--repeats`` on every row, and
``front`` its own ``--front_repeats`` round-robin rounds for models and
cascade alike. What is done once (``datagen`` writing a dataset) is one
timed pass on every row of its table, after a warm-up, and says so.

* ``matvec``: the stencil ``apply_hamiltonian`` in float32, its achieved
  memory bandwidth (reads psi and V, writes H psi) against a jitted copy that
  moves the same number of bytes on this machine, both timed per call (so
  both include dispatch and a fresh output buffer).
* ``solvers``: seconds per ground state and accuracy, on gaussian_wells
  potentials in float64, for SciPy eigsh shift-invert (the reference), SciPy
  LOBPCG (with the same sine-transform preconditioner, fixed shift), and the
  JAX LOBPCG one potential at a time and as one batch. Times exclude JAX
  compilation (every row's warm-up, the SciPy LOBPCG's jitted
  preconditioner included) and include SciPy's factorisations.
* ``sine``: K's eigenbasis transform on 2-D fields (both axes), by dense
  per-axis sine matrices against the FFT-based DST-I, float64 and float32,
  at 16 ... 1024 points per axis: their largest difference, the time per
  field and which one ``kinetic.FFT_MIN_SIZE`` picks. The solver
  benchmark's 256x256 and 512x512 rows use what it picks.
* ``multihost``: potentials per second of the label-free stream drawn
  under a batch sharding, for 1 process x 1 and 2 devices and 2 processes
  x 1 device (real processes, jax.distributed on loopback), and what each
  device computes in the compiled program.
* ``population``, ``predict`` and ``gate``: the models' training and
  prediction speed and the physics gate's accuracy-speed front
  (``experiments/bench_models.py`` says what each measures).
* ``front``: models against the parameter-free cascade's accuracy-speed
  front on labelled splits, with each model's matched-accuracy speed-up
  (``experiments/bench_front.py``; ``--model``, ``--data``).
* ``datagen``: samples/s of dataset generation (2-D 64x64) with worker
  processes and with the JAX LOBPCG, against a one-at-a-time eigsh loop
  (each row one timed pass after a warm-up: the loop's first solve, or
  generating the first shard into a scratch folder); and the loader's
  batches/s against what a (proxy) training step consumes (both best of
  ``--repeats``).

Machine-dependent: the header prints what ran it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import shutil
import tempfile
import warnings

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg as sla

from experiments import bench_front
from experiments import bench_models
from experiments import cli
from pgmoe_jax import Grid
from pgmoe_jax import data
from pgmoe_jax import energy
from pgmoe_jax import hamiltonian
from pgmoe_jax import kinetic
from pgmoe_jax import potentials
from pgmoe_jax import solvers
from pgmoe_jax.timing import best_time
from pgmoe_jax.timing import timed
from pgmoe_jax.timing import timed_best

_WHAT = flags.DEFINE_list("what", ["matvec", "solvers"],
                          "Benchmarks to run: matvec, solvers, sine, "
                          "datagen, multihost, population, predict, gate, "
                          "front.")
_QUICK = flags.DEFINE_bool("quick", False,
                           "Small sizes only (a smoke run, for tests).")
_REPEATS = flags.DEFINE_integer(
    "repeats", 5, "Timed calls of every row, after an untimed warm-up (the "
    "best is kept).", lower_bound=1)


def bench_matvec(quick: bool, repeats: int) -> None:

  cases = [((64, 64), 16), ((256, 256), 16)] if not quick else [((32, 32), 4)]
  if not quick:
    cases += [((512, 512), 4), ((64, 64, 64), 4)]
  print("\n## matvec: apply_hamiltonian, float32, one jitted call (best of "
        f"{repeats * 6} after a warm-up, the copy alike)\n")
  print("| grid | batch | MiB per array | matvec us | matvec GB/s | "
        "copy GB/s | matvec / copy |")
  print("|---|---|---|---|---|---|---|")
  for shape, batch in cases:
    grid = Grid(shape, 20.0)
    rng = np.random.default_rng(0)
    psi = jnp.asarray(rng.normal(size=(batch,) + shape), jnp.float32)
    v = jnp.asarray(rng.normal(size=(batch,) + shape), jnp.float32)
    # The copy moves the same bytes as the matvec: it reads and writes an
    # array 1.5 times the size of psi (3 psi-sized transfers in all).
    source = jnp.asarray(rng.normal(size=(3 * psi.size // 2,)), jnp.float32)
    matvec = jax.jit(hamiltonian.apply_hamiltonian)
    copy = jax.jit(lambda x: x * 0.5)
    t_h = best_time(lambda: matvec(psi, v, grid), repeats * 6)
    t_c = best_time(lambda: copy(source), repeats * 6)
    nbytes = 3 * psi.size * psi.dtype.itemsize  # read psi and V, write H psi
    bw_h, bw_c = nbytes / t_h / 1e9, nbytes / t_c / 1e9
    print(f"| {'x'.join(map(str, shape))} | {batch} | "
          f"{psi.nbytes / 2**20:.1f} | {1e6 * t_h:.0f} | {bw_h:.1f} | "
          f"{bw_c:.1f} | {bw_h / bw_c:.2f} |")


@functools.lru_cache(maxsize=None)
def _kinetic_inverse(grid):
  """The jitted ``(K + c)^-1``, one per grid, so a warm-up compiles it."""
  return jax.jit(kinetic.make_kinetic_inverse(grid, np.float64))


def _scipy_lobpcg(potentials, grid, tol):
  """SciPy LOBPCG with the (K + c)^-1 preconditioner at a fixed c = 5 Ha."""

  k_matrix = kinetic.kinetic_matrix(grid)
  inverse = _kinetic_inverse(grid)
  n = grid.size
  precond = sla.LinearOperator(
      (n, n), dtype=np.float64,
      matvec=lambda r: np.asarray(inverse(
          jnp.asarray(r.reshape((1,) + grid.shape)), 5.0)).ravel(),
      matmat=lambda r: np.asarray(inverse(
          jnp.asarray(r.T.reshape((-1,) + grid.shape)), 5.0)).reshape(
              r.shape[1], n).T)
  x0 = kinetic.kinetic_modes(grid, 2).reshape(2, n).T
  energies, iterations = [], []
  for v in potentials.reshape(len(potentials), n):
    h = k_matrix + scipy.sparse.diags(v)
    w, _, history = sla.lobpcg(h, x0.copy(), M=precond, tol=tol, maxiter=500,
                               largest=False, retResidualNormsHistory=True)
    energies.append(w[0])
    iterations.append(len(history))
  return np.array(energies), np.array(iterations)


def bench_solvers(quick: bool, repeats: int) -> None:

  cases = [((32, 32), 8), ((64, 64), 8), ((128, 128), 4), ((32, 32, 32), 2),
           ((256, 256), 2), ((512, 512), 1)]
  if quick:
    cases = [((16, 16), 2)]
  tol = 1e-8
  print("\n## solvers: one gaussian_wells ground state, float64, residual "
        f"tolerance {tol:g} Ha; every row the best of {repeats} after a "
        "warm-up (compilation excluded)\n")
  print("| grid | method | ms per state | iterations (mean) | max abs(E - "
        "E_eigsh) Ha | max residual Ha | speed-up vs eigsh |")
  print("|---|---|---|---|---|---|---|")
  for shape, count in cases:
    grid = Grid(shape, 20.0)
    v = np.asarray(potentials.gaussian_wells(jax.random.key(0), grid,
                                             (count,)))
    rows = []
    ref, t_ref = timed_best(
        lambda: solvers.solve(v, grid, method="eigsh", tol=tol), repeats)
    t_ref /= count
    rows.append(("eigsh shift-invert", t_ref, ref.iterations, ref.energies,
                 ref.residuals))
    (e_sp, it_sp), t_sp = timed_best(lambda: _scipy_lobpcg(v, grid, tol),
                                     repeats)
    t_sp /= count
    rows.append(("scipy lobpcg", t_sp, it_sp, e_sp[:, None], None))
    for label, chunk in (("jax lobpcg, one by one", 1),
                         (f"jax lobpcg, batch of {count}", count)):
      run = lambda chunk=chunk: solvers.solve(v, grid, method="lobpcg",
                                              tol=tol, chunk_size=chunk)
      out, t = timed_best(run, repeats)
      t /= count
      rows.append((label, t, out.iterations, out.energies, out.residuals))
    for label, t, its, energies, residuals in rows:
      err = np.max(np.abs(np.asarray(energies)[:, 0] - ref.energies[:, 0]))
      res = "-" if residuals is None else f"{np.max(residuals):.1e}"
      print(f"| {'x'.join(map(str, shape))} | {label} | {1e3 * t:.2f} | "
            f"{np.mean(its):.1f} | {err:.1e} | {res} | {t_ref / t:.1f} |")
  bench_solvers_tolerance(quick, repeats)


def bench_solvers_tolerance(quick: bool, repeats: int) -> None:
  """States/s and energy error at residual tolerances, cascade included."""
  cases = [((64, 64), 32), ((256, 256), 8), ((32, 32, 32), 8)]
  if quick:
    cases = [((16, 16), 4)]
  tols = (1e-3, 1e-5, 1e-8)
  print("\n## solvers at residual tolerances: many gaussian_wells ground "
        f"states, one batch each, best of {repeats} (compilation excluded)"
        "\n\nThe energy error is against eigsh in float64 (median and max, "
        "Ha). float32 rows only where the tolerance is above float32's "
        "rounding floor on that grid (5 eps ||K||, solvers.default_tol)."
        "\n")
  print("| grid | batch | method | dtype | tol Ha | states/s | iterations "
        "(mean) | median abs dE Ha | max abs dE Ha | converged |")
  print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
  for shape, count in cases:
    grid = Grid(shape, 20.0)
    v = np.asarray(potentials.gaussian_wells(jax.random.key(0), grid,
                                             (count,)))
    ref = solvers.solve(v, grid, method="eigsh")
    name = "x".join(map(str, shape))

    def row(method, dtype, tol, ref=ref, v=v, grid=grid, count=count,
            name=name):
      run = lambda: solvers.solve(jnp.asarray(v, dtype), grid, method=method,
                                  tol=tol)
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out, t = timed_best(run, repeats)
      err = np.abs(np.asarray(out.energies[:, 0], np.float64)
                   - ref.energies[:, 0])
      print(f"| {name} | {count} | {method} | {np.dtype(dtype).name} | "
            f"{tol:g} | {count / t:,.1f} | {np.mean(out.iterations):.1f} | "
            f"{np.median(err):.1e} | {np.max(err):.1e} | "
            f"{np.count_nonzero(out.converged)}/{count} |", flush=True)

    row("eigsh", jnp.float64, 1e-8)
    for tol in tols:
      for dtype in (jnp.float32, jnp.float64):
        floor = 5 * float(jnp.finfo(dtype).eps) * kinetic.kinetic_norm(grid)
        if tol < floor:  # float32's rounding floor (solvers.default_tol)
          continue
        for method in ("lobpcg", "cascade"):
          row(method, dtype, tol)


def bench_sine(quick: bool, repeats: int) -> None:

  sizes = [16, 32] if quick else [16, 32, 64, 128, 256, 512, 1024]
  print("\n## sine: K's eigenbasis transform of 2-D fields (both axes), "
        f"dense matrices against the FFT DST-I (best of {repeats} after a "
        "warm-up, both alike)\n")
  print("| n | fields | dtype | max abs(fft - dense) | dense us/field | "
        "fft us/field | dense / fft | picked |")
  print("|---|---|---|---|---|---|---|---|")
  for n in sizes:
    grid = Grid((n, n), 20.0)
    count = max(1, 2**20 // (n * n))
    picked = kinetic.transform_methods(grid)[0]
    x64 = np.random.default_rng(n).normal(size=(count, n, n))
    for dtype in (jnp.float64, jnp.float32):
      x = jnp.asarray(x64, dtype)
      dense = jax.jit(kinetic.make_eigenbasis_transforms(
          grid, dtype, fft_min_size=None)[0])
      fast = jax.jit(kinetic.make_eigenbasis_transforms(
          grid, dtype, fft_min_size=1)[0])
      err = float(jnp.max(jnp.abs(dense(x) - fast(x))))
      t_dense = best_time(lambda: dense(x), repeats) / count
      t_fast = best_time(lambda: fast(x), repeats) / count
      print(f"| {n} | {count} | {jnp.dtype(dtype).name} | {err:.1e} | "
            f"{1e6 * t_dense:.1f} | {1e6 * t_fast:.1f} | "
            f"{t_dense / t_fast:.2f} | {picked} |")


def _proxy_train_step(grid, batch_size):
  """A stand-in for the dense baseline's train step.

  An MLP (n^d -> 512 -> 512 -> n^d) trained on the energy loss:
  value_and_grad plus an SGD update.
  """
  del batch_size
  n = grid.size
  keys = jax.random.split(jax.random.key(0), 3)
  sizes = [(n, 512), (512, 512), (512, n)]
  params = [(jax.random.normal(k, s, jnp.float32) / np.sqrt(s[0]),
             jnp.zeros(s[1], jnp.float32)) for k, s in zip(keys, sizes)]

  def loss(params, v):
    x = v.reshape(len(v), -1)
    for i, (w, b) in enumerate(params):
      x = x @ w + b
      if i < len(params) - 1:
        x = jax.nn.gelu(x)
    psi = jax.nn.softplus(x).reshape(v.shape)
    return jnp.mean(energy(psi, v, grid))

  @jax.jit
  def step(params, v):
    value, grads = jax.value_and_grad(loss)(params, v)
    params = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
    return params, value

  return params, step


def bench_datagen(quick: bool, repeats: int) -> None:

  shape, count = ((16, 16), 16) if quick else ((64, 64), 256)
  grid = Grid(shape, 20.0)
  spec = data.DatasetSpec("gaussian_wells", grid, count, shard_size=64)
  label = "x".join(map(str, shape))
  print(f"\n## datagen: {count} gaussian_wells samples at {label} "
        "(E0, E1, psi0; float64; residual 1e-8 Ha)\n")
  print("Writing a dataset is done once: every row of this table is one "
        "timed pass, after an untimed warm-up (the loop's first solve; "
        "generate's first shard into a scratch folder), so compilation is "
        "excluded and the ratio compares one pass with one pass.\n")
  print("| how | seconds (one pass) | samples/s | vs one-at-a-time eigsh |")
  print("|---|---|---|---|")
  potentials = data.make_split_sampler(spec)(0, count)
  solve = lambda v: solvers.solve(v, grid, method="eigsh",
                                  num_states=2).energies
  timed(lambda: solve(potentials[0]))  # warm-up, untimed
  _, t_loop = timed(lambda: [solve(v) for v in potentials])
  rows = [("eigsh loop, one process (no I/O)", t_loop)]
  tmp = tempfile.mkdtemp()
  try:
    for how, solver, workers, chunk in (
        (f"generate, eigsh, {os.cpu_count()} workers", "eigsh",
         os.cpu_count(), None),
        ("generate, eigsh, 1 process", "eigsh", 1, None),
        ("generate, JAX LOBPCG one by one", "lobpcg", 1, 1)):
      path = os.path.join(tmp, how.replace(" ", "_").replace(",", ""))
      run_spec = dataclasses.replace(spec, solver=solver)
      data.generate(path + "_warmup", run_spec, workers=workers,
                    chunk_size=chunk, max_shards=1)  # warm-up, untimed
      rows.append((how, timed(lambda: data.generate(
          path, run_spec, workers=workers, chunk_size=chunk))[1]))
    for how, seconds in rows:
      print(f"| {how} | {seconds:.2f} | {count / seconds:.1f} | "
            f"{t_loop / seconds:.2f} |")

    ds = data.open_dataset(path)
    batch_size = 16 if quick else 64
    epochs = 2 if quick else 20

    def read_all():
      out = [jax.block_until_ready(batch) for epoch in range(epochs)
             for batch in ds.batches(batch_size, epoch=epoch)]
      return len(out), out[-1]
    (batches, batch), seconds = timed_best(read_all, repeats)
    loader = batches / seconds
    params, step = _proxy_train_step(grid, batch_size)
    v = batch["potential"]
    steps = 3 if quick else 30

    def train_steps(params=params):
      for _ in range(steps):
        params, value = step(params, v)
      return value
    consumed = steps / timed_best(train_steps, repeats)[1]
    print(f"\nLoader: {loader:.0f} batches/s of {batch_size} (memory-mapped "
          f"shards, shuffled, float32, to device). A proxy train step (dense "
          f"MLP {grid.size}->512->512->{grid.size}, energy loss, "
          f"value_and_grad) consumes {consumed:.0f} batches/s: the loader is "
          f"{loader / consumed:.0f}x faster than training needs. Both the "
          f"best of {repeats} after a warm-up.")
  finally:
    shutil.rmtree(tmp)


_STREAM_SCRIPT = """
import sys, jax
jax.config.update("jax_num_cpu_devices", {devices})
if {processes} > 1:
  jax.distributed.initialize("127.0.0.1:{port}", {processes}, int(sys.argv[1]))
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pgmoe_jax import potentials
from pgmoe_jax.grid import Grid
from pgmoe_jax.timing import best_time
grid = Grid(({n}, {n}), 20.0)
mesh = Mesh(np.asarray(jax.devices()), ("batch",))
batch = NamedSharding(mesh, PartitionSpec("batch"))
stream = potentials.make_potential_stream("gaussian_wells", grid, {batch})
draw = jax.jit(lambda k: jax.lax.with_sharding_constraint(stream(k), batch))
key = jax.random.key(0)
seconds = best_time(lambda: draw(key), {timed_calls})
# The label-free training loss itself, compiled for this mesh: its streamed
# potentials are per-device arrays of the device's rows.
from experiments.configs import test as test_config
from pgmoe_jax.training import config as config_lib
from pgmoe_jax.training import losses
config = test_config.get_config()
config.grid.shape = ({n}, {n})
config.loss.unlabelled_batch_size = {batch}
run = config_lib.resolve(config)
model = run.model
params = jax.jit(model.init,
                 out_shardings=NamedSharding(mesh, PartitionSpec()))(
    key, np.zeros((1, {n}, {n}), np.float32))["params"]
loss = losses.make_loss_fn(run, lambda p, v: model.apply({{"params": p}}, v),
                           batch)
text = jax.jit(loss).lower(params, {{}}, key, 0).compile().as_text()
local = "f32[{per_device},{n},{n}]" in text
if jax.process_index() == 0:
  print(f"RESULT {{{batch} / seconds:.0f}} {{local}}")
"""


def bench_multihost(quick: bool, repeats: int) -> None:
  """Streamed potentials per second, 1 process x 1 or 2 devices, 2 x 1."""
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  n, batch = (16, 64) if quick else (64, 256)
  timed_calls = 4 * repeats  # a draw takes microseconds
  print(f"\n## multihost: gaussian_wells potentials streamed per second "
        f"({n}x{n}, global batch {batch}, float32, drawn inside jit under a "
        f"batch sharding; every row the best of {timed_calls} after a "
        "warm-up)\n")
  print("| processes x devices | potentials/s | vs 1 x 1 | streamed rows "
        "per device in the compiled label-free loss |")
  print("|---|---|---|---|")
  base = None
  for processes, devices in ((1, 1), (1, 2), (2, 1)):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    code = _STREAM_SCRIPT.format(
        devices=devices, processes=processes, port=port, n=n, batch=batch,
        per_device=batch // (devices * processes), timed_calls=timed_calls)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, start_new_session=True,
                              cwd=os.path.dirname(os.path.dirname(
                                  os.path.abspath(__file__))))
             for i in range(processes)]
    outputs = []
    try:
      for p in procs:
        outputs.append(p.communicate(timeout=300))
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
    line = next((row for out, _ in outputs for row in out.splitlines()
                 if row.startswith("RESULT")), None)
    if line is None:
      raise RuntimeError("the stream benchmark failed: "
                         + outputs[0][1][-2000:])
    rate, local = float(line.split()[1]), line.split()[2] == "True"
    base = base or rate
    count = processes * devices
    shard = ("the whole batch on its one device" if count == 1 else
             f"{batch // count} of {batch} rows (sharded)" if local else
             "the whole batch (replicated)")
    print(f"| {processes} x {devices} | {rate:,.0f} | {rate / base:.2f} | "
          f"{shard} |")
  print("\nEach device draws only its rows of the global batch (the "
        "compiled program holds per-device arrays of that size), so the "
        "stream scales with the devices until the cores run out; on a pod "
        "slice every chip draws its own share.")


BENCHMARKS = {"matvec": bench_matvec, "solvers": bench_solvers,
              "datagen": bench_datagen, "multihost": bench_multihost,
              "sine": bench_sine,
              "population": bench_models.bench_population,
              "predict": bench_models.bench_predict,
              "gate": bench_models.bench_gate,
              "front": bench_front.bench_front}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.check_names(_WHAT.value, BENCHMARKS, "benchmark")
  jax.config.update("jax_enable_x64", True)
  print(f"# pgmoe_jax benchmark: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__} on "
        f"{jax.devices()[0].device_kind}")
  for name in _WHAT.value:
    BENCHMARKS[name](_QUICK.value, _REPEATS.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("benchmark"))
