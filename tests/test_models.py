"""Models: shapes, positivity, normalisation, expert vmap, physics limits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import fidelity
from pgmoe_jax import ground_state
from pgmoe_jax import potentials
from pgmoe_jax.models import build_model
from pgmoe_jax.models import common
from pgmoe_jax.models import count_params
from pgmoe_jax.models import gates
from pgmoe_jax.models import tiling

GRIDS = [Grid((16,), 10.0), Grid((16, 8), (12.0, 8.0)), Grid((8, 8, 8), 8.0)]


def wells(grid, count=3, seed=0):
  return potentials.gaussian_wells(jax.random.key(seed), grid, (count,))


@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("config", [
    dict(name="dense", hidden=(32,)),
    dict(name="pgmoe", tiles=2, coarse=4, expert_hidden=(16,)),
    dict(name="pgmoe", tiles=2, coarse=4, expert_hidden=(16,),
         shared_expert=False, gate="mlp", expert_init_scale=1.0),
    dict(name="pgmoe", tiles=4, coarse=4, expert_hidden=(16,), gate="both",
         envelope_iters=4, halo=1),
], ids=["dense", "pgmoe", "pgmoe-separate-mlp", "pgmoe-both-lobpcg"])
def test_shapes_positivity_and_normalisation(grid, config):
  model = build_model(config, grid)
  v = wells(grid)
  variables = jax.jit(model.init)(jax.random.key(1), v)
  psi = jax.jit(model.apply)(variables, v)
  assert psi.shape == v.shape
  assert bool(jnp.all(psi > 0))
  np.testing.assert_allclose(
      jnp.sum(psi**2, axis=grid.axes) * grid.volume_element, 1.0, rtol=1e-10)
  assert count_params(variables["params"]) > 0


def test_dense_parameter_count_is_exact():
  grid = Grid((8, 8), 5.0)
  model = build_model(dict(name="dense", hidden=(32, 16)), grid)
  params = model.init(jax.random.key(0), wells(grid, 1))["params"]
  assert count_params(params) == (64 * 32 + 32) + (32 * 16 + 16) + (16 * 64
                                                                    + 64)


def test_vmapped_experts_equal_a_loop_over_experts():
  grid = Grid((16, 16), 10.0)
  model = build_model(dict(name="pgmoe", tiles=4, coarse=8, halo=2,
                           expert_hidden=(8,), shared_expert=False,
                           expert_init_scale=1.0), grid)
  v = wells(grid, 2)
  params = jax.jit(model.init)(jax.random.key(0), v)["params"]
  stacked = params["experts"]
  assert jax.tree.leaves(stacked)[0].shape[0] == 16  # one slice per tile
  features = jax.random.normal(jax.random.key(1), (2, 16, 128))  # 2 x 8x8
  mlp = jax.jit(common.MLP((8,), 16).apply)  # one compile for every tile
  vmapped = jax.vmap(lambda p, x: mlp({"params": p}, x),
                     in_axes=(0, 1), out_axes=1)(stacked, features)
  loop = jnp.stack([
      mlp({"params": jax.tree.map(lambda p, i=i: p[i], stacked)},
          features[:, i]) for i in range(16)], axis=1)
  np.testing.assert_allclose(vmapped, loop, rtol=1e-6, atol=1e-6)
  # The model's nn.vmap experts apply exactly this per-tile map.
  module = nn.vmap(
      common.MLP, variable_axes={"params": 0}, split_rngs={"params": True},
      in_axes=1, out_axes=1, axis_size=16)((8,), 16)
  np.testing.assert_allclose(module.apply({"params": stacked}, features),
                             loop, rtol=1e-6, atol=1e-6)


def test_tiles_gather_and_scatter_round_trip():
  for shape, tiles in (((12,), (3,)), ((8, 12), (2, 4)),
                       ((4, 6, 8), (2, 3, 4))):
    gather, scatter = tiling.tile_indices(shape, tiles, 0)
    x = np.arange(np.prod(shape))
    patches = x[gather]  # (T, S) without halo: exactly the tile's points
    np.testing.assert_array_equal(patches.reshape(-1)[scatter], x)
    gather_h, _ = tiling.tile_indices(shape, tiles, 1)
    assert gather_h.shape == (np.prod(tiles),
                              np.prod([n // t + 2 for n, t in zip(shape,
                                                                  tiles)]))


@pytest.mark.parametrize("shape, tiles, halo", [
    ((12,), (3,), 4), ((64, 64), (8, 8), 2), ((32, 32), (4, 4), 2),
    ((16, 16), (8, 8), 3), ((16, 16), (4, 4), 0), ((8, 12, 16), (2, 3, 4), 1),
])
def test_tile_slicing_equals_the_index_gather(shape, tiles, halo):
  # The model cuts tiles by slices and reshapes; they must hold exactly the
  # points the index tables name, in the same order (checkpoints of models
  # that gathered by index predict bitwise the same).
  tile_shape = [n // t for n, t in zip(shape, tiles)]
  gather, scatter = tiling.tile_indices(shape, tiles, halo)
  padded = jax.random.normal(jax.random.key(0),
                             (3,) + tuple(n + 2 * halo for n in shape))
  np.testing.assert_array_equal(
      tiling.extract_tiles(padded, tiles, tile_shape, halo),
      padded.reshape(3, -1)[:, gather])
  values = jax.random.normal(jax.random.key(1),
                             (3, np.prod(tiles), np.prod(tile_shape)))
  np.testing.assert_array_equal(
      tiling.merge_tiles(values, tiles, tile_shape),
      values.reshape(3, -1)[:, scatter].reshape((3,) + shape))


@pytest.mark.parametrize("shape, tiles, halo", [
    ((12,), (3,), 4), ((64, 64), (8, 8), 2), ((32, 32), (4, 4), 2),
    ((16, 16), (4, 4), 0), ((8, 12, 16), (2, 3, 4), 1),
    ((8, 8, 8), (2, 2, 2), 4), ((6, 8), (1, 2), 2),
])
@pytest.mark.parametrize("mode", ["constant", "edge", "wrap"])
def test_neighbour_halos_equal_tiles_of_the_padded_grid(shape, tiles, halo,
                                                        mode):
  # Halos taken from the neighbouring tiles (shifts along the tile axis,
  # which a spatially sharded grid turns into neighbour exchanges) hold
  # exactly the points of the padded grid's tiles.
  tile_shape = [n // t for n, t in zip(shape, tiles)]
  x = jax.random.normal(jax.random.key(0), (3,) + shape)
  pad = [(0, 0)] + [(halo, halo)] * len(shape)
  kwargs = dict(constant_values=-7.5) if mode == "constant" else {}
  padded = jnp.pad(x, pad, mode=mode, **kwargs)
  np.testing.assert_array_equal(
      tiling.extract_tiles_with_halos(x, tiles, tile_shape, halo, mode,
                                      constant=-7.5),
      tiling.extract_tiles(padded, tiles, tile_shape, halo))


def test_neighbour_halos_need_a_halo_within_a_tile():
  with pytest.raises(ValueError, match="halo=5"):
    tiling.extract_tiles_with_halos(jnp.zeros((1, 8, 8)), (2, 2), (4, 4), 5,
                                    "edge")


@pytest.mark.parametrize("envelope_iters, solver", [
    (0, "lobpcg"), (30, "lobpcg"), (40, "fixed")])
def test_envelope_on_the_full_grid_is_the_exact_ground_state(envelope_iters,
                                                             solver):
  # With the coarse grid equal to the grid and experts switched off, the gate
  # is the exact discrete ground state: the physics prior is exact.
  grid = Grid((12, 12), 10.0)
  model = build_model(dict(name="pgmoe", tiles=2, coarse=12, gate="envelope",
                           expert_init_scale=0.0,
                           envelope_iters=envelope_iters,
                           envelope_solver=solver), grid)
  v = wells(grid, 2)
  psi = jax.jit(model.apply)(jax.jit(model.init)(jax.random.key(0), v), v)
  _, psi0 = ground_state(np.asarray(v), grid)
  assert (1 - np.asarray(fidelity(psi, psi0, grid)) < 1e-9).all()


def test_coarse_envelope_interpolates_linearly():
  m = tiling.interpolation_matrix(9, 4, 10.0, "dirichlet")
  np.testing.assert_allclose(m.sum(1), 1.0)
  coarse = Grid((4,), 10.0).coordinates()[0]
  fine = Grid((9,), 10.0).coordinates()[0]
  np.testing.assert_allclose(m @ (2 * coarse + 1), 2 * fine + 1, atol=1e-12)


@pytest.mark.parametrize("config, names", [
    (dict(shared_expert=True, gate="envelope"), {"expert", "tile_embedding"}),
    (dict(shared_expert=False, gate="envelope"), {"experts"}),
    (dict(shared_expert=True, gate="mlp"), {"expert", "tile_embedding",
                                            "gate"}),
    (dict(shared_expert=False, gate="both"), {"experts", "gate"}),
])
def test_parameter_names_are_stable(config, names):
  # Checkpoints store the tree by these names: the gate and expert modules
  # share the model's scope, so the tree is what every release wrote.
  grid = Grid((16, 16), 10.0)
  model = build_model(dict(name="pgmoe", tiles=4, coarse=8,
                           expert_hidden=(8,), **config), grid)
  params = model.init(jax.random.key(0), wells(grid, 1))["params"]
  assert set(params) == names
  mlp = params.get("expert") or params.get("experts")
  assert set(mlp) == {"Dense_0", "Dense_1"}


@pytest.mark.parametrize("gate", ["envelope", "mlp", "both"])
def test_experts_switched_off_leave_the_gate_envelope(gate):
  grid = Grid((16, 16), 10.0)
  model = build_model(dict(name="pgmoe", tiles=4, coarse=8, gate=gate,
                           expert_hidden=(8,), expert_init_scale=1.0), grid)
  v = wells(grid, 2)
  variables = model.init(jax.random.key(0), v)
  psi = model.apply(variables, v)
  gate_only = model.apply(variables, v, use_experts=False)
  # Zeroing the expert parameters makes every correction exactly zero.
  zeroed = {"params": {k: (jax.tree.map(jnp.zeros_like, p)
                           if k in ("expert", "experts") else p)
                       for k, p in variables["params"].items()}}
  np.testing.assert_array_equal(gate_only, model.apply(zeroed, v))
  assert float(jnp.max(jnp.abs(psi - gate_only))) > 1e-3
  # The envelope gate's output interpolated to the grid is that state.
  log_env, energy = model.apply(variables, v, method="coarse_envelope")
  assert log_env.shape == (2, 8, 8) and energy.shape == (2,)


def test_gate_interface():
  grid = Grid((16, 16), 10.0)
  v = wells(grid, 3)
  envelope = gates.EnvelopeGate(grid, (8, 8))
  out = envelope.apply({}, v)
  assert isinstance(out, gates.GateOutput)
  assert out.log_envelope.shape == (3, 8, 8) and out.energy.shape == (3,)
  # Its energy is the coarse Hamiltonian's ground-state energy, and the
  # envelope peaks where the potential is deepest.
  coarse_v = tiling.block_mean(v, grid, (8, 8))
  e_coarse, _ = ground_state(np.asarray(coarse_v), Grid((8, 8), 10.0))
  np.testing.assert_allclose(out.energy, e_coarse, rtol=1e-10)
  learned = gates.LearnedGate(grid, (8, 8), hidden=(8,))
  variables = learned.init(jax.random.key(0), v)
  out = learned.apply(variables, v)
  assert out.log_envelope.shape == (3, 8, 8) and out.energy is None
  corrected = gates.LearnedGate(grid, (8, 8), hidden=(8,), base=envelope)
  variables = corrected.init(jax.random.key(0), v)
  out_c = corrected.apply(variables, v)
  # The correction starts at exactly zero: the envelope itself.
  np.testing.assert_array_equal(out_c.log_envelope,
                                envelope.apply({}, v).log_envelope)
  np.testing.assert_array_equal(out_c.energy, envelope.apply({}, v).energy)


def test_bad_model_configs():
  grid = Grid((16, 16), 10.0)
  with pytest.raises(ValueError, match="known models: dense, pgmoe"):
    build_model(dict(name="transformer"), grid)
  with pytest.raises(ValueError, match="takes no field.*tilez"):
    build_model(dict(name="pgmoe", tilez=4), grid)
  with pytest.raises(ValueError, match="tiles=5 must divide the grid"):
    build_model(dict(name="pgmoe", tiles=5), grid)
  with pytest.raises(ValueError, match="known gates: envelope, mlp, both"):
    build_model(dict(name="pgmoe", gate="attention"), grid)
  model = build_model(dict(name="dense", hidden=(8,)), grid)
  with pytest.raises(ValueError, match=r"expects potentials of shape \(batch, "
                     r"16, 16\)"):
    model.init(jax.random.key(0), jnp.zeros((16, 16)))


def test_coarse_zero_is_the_full_grid():
  grid = Grid((16, 16), 10.0)
  v = wells(grid, 2)
  outputs = []
  for coarse in (0, 16):
    model = build_model(dict(name="pgmoe", tiles=4, coarse=coarse,
                             envelope_iters=3, envelope_solver="fixed",
                             expert_hidden=(8,)), grid)
    assert model.coarse_shape == (16, 16)
    outputs.append(model.apply(model.init(jax.random.key(0), v), v))
  np.testing.assert_array_equal(outputs[0], outputs[1])
