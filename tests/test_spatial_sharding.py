"""Spatial sharding: a grid split across devices computes what one device does.

On 4 forced CPU devices, a ("batch", "space") = 2 x 2 mesh splits the batch
and the first grid axis. The energy, its gradient, the PG-MoE forward pass
(full-grid and coarse gates) and one label-free train step on 2-D and 3-D
grids must equal the unsharded computation to float32 round-off, and the
compiled programs must hold no all-gather of a full-resolution field (only
the gate's coarse grid may be gathered). Each case runs in a child process
(the device count is fixed when JAX starts) that prints one JSON line.
"""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
import numpy as np
import optax
import pytest

from experiments.configs import test as test_config
from helpers import four_cpu_devices_env
from pgmoe_jax import Grid
from pgmoe_jax import energy
from pgmoe_jax import potentials
from pgmoe_jax import sharding
from pgmoe_jax.training import config as config_lib
from pgmoe_jax.training import losses
from pgmoe_jax.training import step
from pgmoe_jax.training.loop import make_apply_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = [
    # grid, model fields, dtype: float64 shows the computations are the same
    # (differences at 1e-16 rounding), float32 that training's dtype is too.
    ((16, 16), dict(tiles=4, halo=2, coarse=None, envelope_iters=4),
     "float32"),
    ((8, 8, 8), dict(tiles=2, halo=2, coarse=None, envelope_iters=4),
     "float64"),
]
# Largest relative differences allowed: round-off of each dtype (the
# solver's iterations and the reductions run in another order on split
# arrays; a parameter update is the gradient, a sum over tiles and batch).
TOLERANCES = {"float32": dict(energy=1e-6, grad=1e-6, forward=1e-5, loss=1e-6,
                              params=3e-4),
              "float64": dict(energy=1e-13, grad=1e-13, forward=1e-11,
                              loss=1e-13, params=1e-10)}


def full_gathers(hlo: str, grid_shape) -> list[str]:
  """All-gathers and all-reduces whose result holds a whole grid-sized field
  per sample (an all-reduce of partial sums leaves the whole field on every
  device just as a gather does)."""
  size = int(np.prod(grid_shape))
  found = []
  for line in hlo.splitlines():
    m = re.search(r"= (\S+) (all-gather|all-reduce)(-start)?\(", line)
    if not m:
      continue
    for dims in re.findall(r"\[([\d,]*)\]", m.group(1)):
      shape = [int(d) for d in dims.split(",") if d]
      # (batch, ...): the per-sample part is everything after the batch.
      if shape and int(np.prod(shape[1:])) >= size:
        found.append(m.group(1))
  return found


def scale(x) -> float:
  return float(jnp.max(jnp.abs(x)))


def diff(a, b) -> float:
  """The largest difference, relative to the largest entry of ``a``."""
  return scale(a - b) / scale(a)


def child(case: int) -> None:
  """Checks ``CASES[case]``; prints its report as one JSON line."""
  jax.config.update("jax_enable_x64", True)
  mesh = Mesh(np.asarray(jax.devices()).reshape(2, 2), ("batch", "space"))
  shape, fields, dtype = CASES[case]
  grid = Grid(shape, 20.0)
  spec = sharding.spatial_spec(1 + grid.ndim, grid.ndim)
  split = NamedSharding(mesh, spec)
  v = potentials.sample("gaussian_wells", jax.random.key(0), grid, (4,),
                        dtype=dtype)
  psi = jnp.exp(-0.05 * v**2)

  def total(p, v):
    return jnp.sum(energy(p, v, grid))

  grad = jax.jit(jax.grad(total))

  config = test_config.get_config()
  config.grid.shape = shape
  config.dtype = dtype
  config.loss.mode = "label_free"
  config.data.train = config.data.val = ""
  config.data.family = "gaussian_wells"
  config.loss.unlabelled_batch_size = 4
  config.model.update(fields)
  config.model.envelope_solver = "fixed"
  config.mesh.space = 2
  run = config_lib.resolve(config)
  apply_fn = make_apply_fn(run.model)
  params = run.model.init(jax.random.key(1), v[:1])["params"]
  # Plain SGD: the step's change is the gradient itself (Adam's first
  # step, g / |g|, would turn round-off in tiny gradients into sign flips).
  optimizer = optax.sgd(1e-2)
  state = step.TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      opt_state=optimizer.init(params),
      nonfinite_step=-jnp.ones((), jnp.int32))
  key = jax.random.key(2)

  def train_step(state, key, stream_sharding):
    loss_fn = losses.make_loss_fn(run, apply_fn, stream_sharding)
    return step.make_train_step(loss_fn, optimizer)(state, {}, key)

  # One device.
  e_one = float(jax.jit(total)(psi, v))
  g_one = grad(psi, v)
  f_one = jax.jit(apply_fn)(params, v)
  s_one, m_one = jax.jit(lambda s, k: train_step(s, k, None))(state, key)
  # 2 x 2, under the mesh.
  with jax.set_mesh(mesh):
    psi_s, v_s = jax.device_put((psi, v), split)
    e_two = float(jax.jit(total)(psi_s, v_s))
    g_two = grad(psi_s, v_s)
    forward = jax.jit(apply_fn).lower(params, v_s).compile()
    f_two = forward(params, v_s)
    train = jax.jit(lambda s, k: train_step(s, k, split)).lower(
        state, key).compile()
    s_two, m_two = train(state, key)
  # The steps' changes of the parameters (the gradients times the rate).
  delta_one = [a - b for a, b in zip(jax.tree.leaves(s_one.params),
                                     jax.tree.leaves(params))]
  delta_two = [a - b for a, b in zip(jax.tree.leaves(s_two.params),
                                     jax.tree.leaves(params))]
  update = max(scale(a) for a in delta_one)
  params_diff = max(scale(a - b)
                    for a, b in zip(delta_one, delta_two)) / update
  print(json.dumps(dict(
      shape=list(shape), fields=fields, dtype=dtype,
      energy=abs(e_one - e_two) / abs(e_one),
      grad=diff(g_one, g_two), grad_spec=str(g_two.sharding.spec),
      forward=diff(f_one, f_two), forward_spec=str(f_two.sharding.spec),
      loss=abs(float(m_one["loss"]) - float(m_two["loss"])) / abs(
          float(m_one["loss"])),
      params=params_diff, update=update,
      gathers_forward=full_gathers(forward.as_text(), shape),
      gathers_step=full_gathers(train.as_text(), shape),
      all_to_all="all-to-all" in forward.as_text(),
      permutes="collective-permute" in train.as_text())))


# Slow tier, both cases (a child process on four devices). Fast tier: the
# halo exchange (test_models' test_neighbour_halos_equal_tiles_of_the_padded_
# grid) and a sharded loss (test_multihost's
# test_the_compiled_loss_streams_per_device_rows).
@pytest.mark.slow
@pytest.mark.parametrize("case", [0, 1])
def test_sharded_grids_equal_one_device_without_gathering_them(case):
  out = subprocess.run([sys.executable, __file__, str(case)], cwd=ROOT,
                       env=four_cpu_devices_env(PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=400,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  name = f"{result['shape']} {result['fields']} {result['dtype']}"
  # Outputs stay split: batch and first grid axis.
  for spec in (result["grad_spec"], result["forward_spec"]):
    assert spec.startswith("P('batch', 'space'"), name
  # No device gathers a whole field; halos travel between neighbours.
  assert not result["gathers_forward"], name
  assert not result["gathers_step"], name
  assert result["permutes"], name
  if result["fields"]["coarse"] is None:  # the full-grid gate's transforms
    assert result["all_to_all"], name
  for key, tol in TOLERANCES[result["dtype"]].items():
    assert result[key] < tol, f"{name}: {key} differs by {result[key]:.2g}"
  # The step changed the parameters (the comparison is not vacuous).
  assert result["update"] > 1e-6, name


if __name__ == "__main__":
  child(int(sys.argv[1]))
