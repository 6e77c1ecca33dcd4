"""Models: shapes, positivity, normalisation, expert vmap, physics limits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import fidelity
from pgmoe_jax import ground_state
from pgmoe_jax import kinetic
from pgmoe_jax import energy
from pgmoe_jax import potentials
from pgmoe_jax.models import build_model
from pgmoe_jax.models import common
from pgmoe_jax.models import count_params
from pgmoe_jax.models import gates
from pgmoe_jax.models import learned_cascade
from pgmoe_jax.models import tiling
from pgmoe_jax.solvers.coarse_to_fine import cascade_unchecked
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed
from pgmoe_jax.variational import normalize_unchecked

SLOW = pytest.mark.slow
GRIDS = [Grid((16,), 10.0), Grid((16, 8), (12.0, 8.0)), Grid((8, 8, 8), 8.0)]


def wells(grid, count=3, seed=0):
  return potentials.gaussian_wells(jax.random.key(seed), grid, (count,))


SHAPE_CONFIGS = {
    "dense": dict(name="dense", hidden=(32,)),
    "pgmoe": dict(name="pgmoe", tiles=2, coarse=4, expert_hidden=(16,)),
    "pgmoe-separate-mlp": dict(name="pgmoe", tiles=2, coarse=4,
                               expert_hidden=(16,), shared_expert=False,
                               gate="mlp", expert_init_scale=1.0),
    "pgmoe-both-lobpcg": dict(name="pgmoe", tiles=4, coarse=4,
                              expert_hidden=(16,), gate="both",
                              envelope_iters=4, envelope_solver="lobpcg",
                              halo=1),
}


# Fast tier: every config on the 2-D grid, dense and pgmoe on 1-D and 3-D;
# the separate-expert and both-gate configs on 1-D and 3-D are in the slow
# tier.
@pytest.mark.parametrize("config, grid", [
    pytest.param(config, grid, id=f"{name}-{grid}",
                 marks=SLOW if grid.ndim != 2 and name in (
                     "pgmoe-separate-mlp", "pgmoe-both-lobpcg") else ())
    for name, config in SHAPE_CONFIGS.items() for grid in GRIDS])
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


def test_tiling_cuts_padded_patches_and_merges_tiles():
  grid = Grid((8, 12), 10.0)
  t = tiling.Tiling(grid, [2, 3], 1)
  assert (t.tiles, t.tile_shape, t.patch_shape, t.num_tiles) == (
      (2, 3), (4, 4), (6, 6), 6)
  assert t == tiling.Tiling(grid, (2, 3), 1) and hash(t) == hash(
      tiling.Tiling(grid, (2, 3), 1))
  x = jnp.arange(2 * 8 * 12, dtype=jnp.float64).reshape(2, 8, 12)
  patches = t.cut(x, "constant", -1.0)
  assert patches.shape == (2, 6, 6, 6)
  padded = jnp.pad(x, [(0, 0), (1, 1), (1, 1)], constant_values=-1.0)
  np.testing.assert_array_equal(patches[:, 1 * 3 + 2], padded[:, 4:10, 8:14])
  # Each patch without its halo is its tile; merged, they are the grid.
  np.testing.assert_array_equal(t.merge(patches[:, :, 1:-1, 1:-1]), x)
  np.testing.assert_array_equal(
      t.merge(patches[:, :, 1:-1, 1:-1].reshape(2, 6, 16)), x)
  # A halo wider than a tile is cut from the padded grid.
  wide = tiling.Tiling(grid, (2, 3), 5)
  np.testing.assert_array_equal(
      wide.cut(x, "edge")[:, 4],
      jnp.pad(x, [(0, 0), (5, 5), (5, 5)], mode="edge")[:, 4:18, 4:18])
  with pytest.raises(ValueError, match="tiles=5 must divide"):
    tiling.Tiling(grid, 5)
  with pytest.raises(ValueError, match="halo must be >= 0"):
    tiling.Tiling(grid, 2, -1)


# Fast tier: one grid of each dimension; the others in the slow tier.
@pytest.mark.parametrize("shape, tiles, halo", [
    ((12,), (3,), 4), pytest.param((64, 64), (8, 8), 2, marks=SLOW),
    ((32, 32), (4, 4), 2), pytest.param((16, 16), (8, 8), 3, marks=SLOW),
    pytest.param((16, 16), (4, 4), 0, marks=SLOW), ((8, 12, 16), (2, 3, 4), 1),
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


# Fast tier: one grid of each dimension, every mode; the others slow.
@pytest.mark.parametrize("shape, tiles, halo", [
    ((12,), (3,), 4), pytest.param((64, 64), (8, 8), 2, marks=SLOW),
    ((32, 32), (4, 4), 2), pytest.param((16, 16), (4, 4), 0, marks=SLOW),
    ((8, 12, 16), (2, 3, 4), 1),
    pytest.param((8, 8, 8), (2, 2, 2), 4, marks=SLOW),
    pytest.param((6, 8), (1, 2), 2, marks=SLOW),
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
    (None, "eigh"), (30, "lobpcg"), (20, "fixed")])
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
  if gate == "envelope":
    fine = tiling.interpolate(log_env, grid)
    state = jnp.exp(fine - jnp.max(fine, axis=(1, 2), keepdims=True))
    state = state / jnp.sqrt(jnp.sum(state**2, axis=(1, 2), keepdims=True)
                             * grid.volume_element)
    np.testing.assert_allclose(gate_only, state, rtol=0, atol=1e-12)


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
  np.testing.assert_array_equal(
      np.argmax(np.reshape(out.log_envelope, (3, -1)), axis=1),
      np.argmin(np.reshape(coarse_v, (3, -1)), axis=1))
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
  # The sweeps gate: the envelope's cascade, its energy an upper bound.
  chain = gates.EnvelopeGate(grid, grid.shape, 0, "fixed", start=(8, 8),
                             start_iters=(3,), sweeps=(0, 4))
  swept = learned_cascade.LearnedCascadeGate(chain)
  variables = swept.init(jax.random.key(0), v)
  out_s = swept.apply(variables, v)
  assert out_s.log_envelope.shape == (3, 16, 16)
  assert swept.coarse == (16, 16) and swept.activations_per_sample() == (
      2 * 4 * 256)
  np.testing.assert_allclose(out_s.energy, chain.apply({}, v).energy,
                             rtol=1e-9)
  e0, _ = ground_state(np.asarray(v), grid)
  assert np.all(np.asarray(out_s.energy) >= e0 - 1e-10)


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


def test_coarse_none_is_the_full_grid():
  grid = Grid((16, 16), 10.0)
  v = wells(grid, 2)
  outputs = []
  for coarse in (None, 16):
    model = build_model(dict(name="pgmoe", tiles=4, coarse=coarse,
                             envelope_iters=3, envelope_solver="fixed",
                             expert_hidden=(8,)), grid)
    assert model.coarse_shape == (16, 16)
    outputs.append(model.apply(model.init(jax.random.key(0), v), v))
  np.testing.assert_array_equal(outputs[0], outputs[1])


# Fast tier: test_a_chain_of_start_grids_runs_coarse_to_fine.
@pytest.mark.slow
def test_coarse_start_is_the_interpolated_start_grid_ground_state():
  # envelope_start: the fine iterations start from the exact ground state
  # of the start grid (block means of the gate's potential), linearly
  # interpolated; with enough iterations the gate is the exact ground state.
  grid = Grid((16, 16), 10.0)
  v = potentials.sample("double_well", jax.random.key(3), grid, 3,
                        dtype=jnp.float64)
  start_grid = Grid((4, 4), 10.0)
  _, psi_s = ground_state(np.asarray(tiling.block_mean(v, grid, (4, 4))),
                          start_grid)
  interp = [tiling.interpolation_matrix(16, 4, 10.0, "dirichlet")] * 2
  start = tiling.apply_per_axis(jnp.abs(jnp.asarray(psi_s)), interp)
  for iters in (1, 3):
    gate = gates.EnvelopeGate(grid, (16, 16), iters, "fixed", start=(4, 4),
                              start_iters=0, start_exact=True)
    out = jax.jit(lambda v, g=gate: g.apply({}, v))(v)
    e, psi = ground_state_fixed(v, grid, iters, start=start)
    np.testing.assert_allclose(out.energy, e, rtol=1e-12)
    np.testing.assert_allclose(out.log_envelope, jnp.log(
        jnp.abs(psi) + 1e-12 * jnp.max(jnp.abs(psi), (1, 2), keepdims=True)),
                               rtol=1e-9, atol=1e-9)
  model = build_model(dict(name="pgmoe", tiles=2, coarse=None,
                           gate="envelope", envelope_iters=20,
                           envelope_solver="fixed",
                           envelope_start=4, envelope_start_iters=6), grid)
  psi = jax.jit(lambda v: model.apply({}, v, use_experts=False))(v)
  _, psi0 = ground_state(np.asarray(v), grid)
  assert (1 - np.asarray(fidelity(psi, psi0, grid)) < 1e-9).all()


def test_a_chain_of_start_grids_runs_coarse_to_fine():
  # envelope_start_iters=(3, 2) with envelope_start=8 on a 32x32 gate: 3
  # iterations on 4x4 from the kinetic mode, interpolated, 2 on 8x8,
  # interpolated, then envelope_iters on 32x32.
  grid = Grid((32, 32), 20.0)
  v = potentials.sample("gaussian_wells", jax.random.key(5), grid, 2,
                        dtype=jnp.float64)
  x = None
  for n, iters, prev in ((4, 3, None), (8, 2, 4), (32, 2, 8)):
    start = None if prev is None else tiling.apply_per_axis(jnp.abs(x), [
        tiling.interpolation_matrix(n, prev, 20.0, "dirichlet")] * 2)
    level_v = v if n == 32 else tiling.block_mean(v, grid, (n, n))
    e, x = ground_state_fixed(level_v, Grid((n, n), 20.0), iters,
                              start=start)
  model = build_model(dict(name="pgmoe", tiles=4, coarse=None,
                           envelope_iters=2, envelope_solver="fixed",
                           envelope_start=8, envelope_start_iters=[3, 2]),
                      grid)
  _, energy = model.apply({}, v, method="coarse_envelope")
  np.testing.assert_allclose(energy, e, rtol=1e-12)
  with pytest.raises(ValueError, match="each axis must divide by 8"):
    build_model(dict(name="pgmoe", tiles=4, coarse=None, envelope_iters=2,
                     envelope_solver="fixed", envelope_start=12,
                     envelope_start_iters=(1, 1, 1, 1)), Grid((24, 24), 20.0))


# Fast tier: test_a_chain_of_start_grids_runs_coarse_to_fine.
@pytest.mark.slow
def test_coarse_start_finds_the_right_well_in_fewer_iterations():
  # Tilted double wells: from the kinetic operator's lowest mode (centred)
  # two iterations leave the state spread over both wells; from the start
  # grid's ground state they are far closer to E0.
  grid = Grid((24, 24), 20.0)
  v = potentials.sample("double_well", jax.random.key(7), grid, 12,
                        dtype=jnp.float64)
  e0, _ = ground_state(np.asarray(v), grid)
  errors = {}
  for start in (None, 12):
    model = build_model(dict(name="pgmoe", tiles=4, coarse=None,
                             envelope_iters=2, envelope_solver="fixed",
                             envelope_start=start), grid)
    _, energy = jax.jit(lambda v, m=model: m.apply(
        {}, v, method="coarse_envelope"))(v)
    errors[start] = np.median(np.asarray(energy) - np.asarray(e0))
  assert errors[12] >= 0 and errors[None] >= 0  # variational: upper bounds
  assert errors[12] < 0.2 * errors[None], errors


@pytest.mark.parametrize("fields, message", [
    (dict(envelope_start=8, envelope_solver="eigh"),
     "needs envelope_solver='fixed'"),
    (dict(envelope_start=8, envelope_iters=2, envelope_solver="lobpcg"),
     "needs envelope_solver='fixed'"),
    (dict(envelope_start=6, envelope_iters=2, envelope_solver="fixed"),
     r"start grid \(envelope_start\) \(6, 6\) must divide"),
    (dict(envelope_start=16, envelope_iters=2, envelope_solver="fixed"),
     r"be smaller"),
    (dict(envelope_start=(4, 4, 4), envelope_iters=2,
          envelope_solver="fixed"), "needs one number or 2"),
    (dict(envelope_start=4, envelope_iters=2, envelope_solver="fixed",
          envelope_start_iters=-1), r"start_iters \(envelope_start_iters\) "
     "must be >= 0"),
    (dict(envelope_start=8, envelope_iters=2, envelope_solver="fixed",
          envelope_start_iters=(1, 1, 1)), r"halve the start grid \(8, "
     r"8\) to \(2, 2\), below 3 points"),
])
def test_bad_coarse_starts_are_refused_when_the_model_is_built(fields,
                                                               message):
  with pytest.raises(ValueError, match=message):
    build_model(dict(name="pgmoe", tiles=4, coarse=16, **fields),
                Grid((32, 32), 20.0))


@pytest.mark.parametrize("iters, levels, exact", [
    (0, (3, 2), False), (2, (3, 0), False), (1, (0, 2), True),
    (1, (5, 2), True)])
def test_the_gate_chain_is_the_cascade_on_its_levels(iters, levels, exact):
  # The cascade's convention: 0 iterations at a level interpolate only
  # (envelope_iters=0 with a start grid: the interpolated start alone), and
  # envelope_start_exact solves the coarsest level by eigh, its count unused.
  grid = Grid((32, 32), 20.0)
  v = potentials.sample("gaussian_wells", jax.random.key(5), grid, 2,
                        dtype=jnp.float64)
  model = build_model(dict(name="pgmoe", tiles=4, coarse=None,
                           envelope_iters=iters, envelope_solver="fixed",
                           envelope_start=8, envelope_start_iters=levels,
                           envelope_start_exact=exact), grid)
  _, energy = model.apply({}, v, method="coarse_envelope")
  grids = (Grid((4, 4), 20.0), Grid((8, 8), 20.0), grid)
  e, _ = cascade_unchecked(v, grids, levels + (iters,), exact_coarsest=exact)
  np.testing.assert_allclose(energy, e, rtol=1e-13)
  if exact:  # the coarsest count is not used
    _, energy_2 = build_model(dict(
        name="pgmoe", tiles=4, coarse=None, envelope_iters=iters,
        envelope_solver="fixed", envelope_start=8,
        envelope_start_iters=(7,) + levels[1:], envelope_start_exact=True),
                              grid).apply({}, v, method="coarse_envelope")
    np.testing.assert_array_equal(energy, energy_2)


@pytest.mark.parametrize("iters, levels, sweeps", [
    (0, (3, 0), (0, 2, 5)), (1, (3, 2), (0, 0, 4))])
def test_the_gate_sweeps_are_the_cascade_sweeps(iters, levels, sweeps):
  grid = Grid((32, 32), 20.0)
  v = potentials.sample("gaussian_wells", jax.random.key(5), grid, 2,
                        dtype=jnp.float64)
  fields = dict(name="pgmoe", tiles=4, coarse=None, envelope_iters=iters,
                envelope_solver="fixed", envelope_start=8,
                envelope_start_iters=levels)
  model = build_model(dict(fields, envelope_sweeps=sweeps), grid)
  _, energy = model.apply({}, v, method="coarse_envelope")
  grids = (Grid((4, 4), 20.0), Grid((8, 8), 20.0), grid)
  e, _ = cascade_unchecked(v, grids, levels + (iters,), sweeps=sweeps)
  np.testing.assert_allclose(energy, e, rtol=1e-13)
  # The sweeps change the gate (and cut its error here).
  _, plain = build_model(fields, grid).apply({}, v, method="coarse_envelope")
  assert (np.asarray(energy) < np.asarray(plain)).all()


@pytest.mark.parametrize("fields, message", [
    (dict(envelope_sweeps=(0, 4)), "no start grid"),
    (dict(envelope_start=8, envelope_sweeps=(0, 4)),
     r"envelope_sweeps: .*must be 3 nonnegative"),
    (dict(envelope_start=8, envelope_sweeps=(2, 0, 4)),
     "envelope_sweeps: .*coarsest level"),
    (dict(envelope_start=8, envelope_sweeps=4), "one count per cascade"),
])
def test_bad_gate_sweeps_are_refused(fields, message):
  with pytest.raises(ValueError, match=message):
    build_model(dict(name="pgmoe", tiles=4, coarse=None, envelope_iters=1,
                     envelope_solver="fixed", envelope_start_iters=(3, 2),
                     **fields), Grid((32, 32), 20.0))


def test_the_sweeps_gate_learns_the_cascade_sweeps_steps():
  # gate="sweeps", experts="none": the model is the cascade with sweeps
  # whose step sizes are its only parameters; untrained, the Chebyshev
  # filter's (the cascade's state to rounding); trained, whatever steps
  # the parameters hold, and the energy gradient reaches them.
  grid = Grid((32, 32), 20.0)
  v = potentials.sample("gaussian_wells", jax.random.key(5), grid, 3,
                        dtype=jnp.float64)
  model = build_model(dict(
      name="pgmoe", tiles=4, coarse=None, envelope_iters=0,
      envelope_solver="fixed", envelope_start=16, envelope_start_iters=(3,),
      envelope_sweeps=(0, 5), gate="sweeps", experts="none"), grid)
  variables = model.init(jax.random.key(0), v)
  assert jax.tree.map(jnp.shape, variables["params"]) == {"gate": (5,)}
  _, cheb = cascade_unchecked(v, (Grid((16, 16), 20.0), grid), (3, 0),
                              sweeps=(0, 5))
  np.testing.assert_allclose(model.apply(variables, v),
                             normalize_unchecked(jnp.abs(cheb), grid), rtol=0,
                             atol=1e-9)
  steps = jnp.asarray([0.9, 1.3, 0.5, 2.0, 0.7])
  _, by_steps = cascade_unchecked(v, (Grid((16, 16), 20.0), grid), (3, 0),
                                  sweeps=(0, 5), steps=[None, steps])
  np.testing.assert_allclose(
      model.apply({"params": {"gate": jnp.log(steps)}}, v),
      normalize_unchecked(jnp.abs(by_steps), grid), rtol=0, atol=1e-9)
  grad = jax.grad(lambda p: jnp.mean(energy(
      model.apply({"params": p}, v), v, grid)))(variables["params"])
  assert np.all(np.isfinite(grad["gate"])) and np.any(grad["gate"] != 0)
  # Without experts the model takes the gate's state directly: what its
  # log-envelope gives, without the log and the exp.
  # (The log-envelope's floor, 1e-12 of the peak, is the difference.)
  log_env, _ = learned_cascade.LearnedCascadeGate(model.envelope).apply(
      variables, v)
  direct = model.apply(variables, v)
  np.testing.assert_allclose(
      direct, normalize_unchecked(jnp.exp(log_env - jnp.max(log_env)), grid),
      rtol=1e-10, atol=1e-10 * float(jnp.max(direct)))
  # No experts: no tiles cut, and use_experts changes nothing.
  np.testing.assert_array_equal(
      model.apply(variables, v),
      model.apply(variables, v, use_experts=False))
  with pytest.raises(ValueError, match="has none .*envelope_sweeps"):
    build_model(dict(name="pgmoe", tiles=4, coarse=None, envelope_iters=1,
                     envelope_solver="fixed", envelope_start=16,
                     gate="sweeps"), grid)


# Fast tier: test_the_sweeps_gate_learns_the_cascade_sweeps_steps (the other
# learned gate on the cascade).
@pytest.mark.slow
def test_the_start_net_gate_starts_the_coarsest_level_from_its_network():
  # gate="start_net": an MLP on the coarsest level's potential corrects
  # K's lowest mode there, the start of that level's iterations; untrained
  # (last layer zero), the cascade itself.
  grid = Grid((32, 32), 20.0)
  levels = (Grid((8, 8), 20.0), Grid((16, 16), 20.0), grid)
  v = potentials.sample("gaussian_wells", jax.random.key(5), grid, 3,
                        dtype=jnp.float64)
  model = build_model(dict(
      name="pgmoe", tiles=4, coarse=None, envelope_iters=0,
      envelope_solver="fixed", envelope_start=16, envelope_start_iters=(2, 1),
      envelope_sweeps=(0, 0, 4), gate="start_net", gate_hidden=(16,),
      experts="none"), grid)
  variables = jax.jit(model.init)(jax.random.key(0), v)
  apply = jax.jit(model.apply)
  params = variables["params"]
  assert set(params) == {"gate", "gate_start"} and params["gate"].shape == (
      4,)
  _, plain = jax.jit(lambda v: cascade_unchecked(v, levels, (2, 1, 0),
                                                 sweeps=(0, 0, 4)))(v)
  np.testing.assert_allclose(apply(variables, v),
                             normalize_unchecked(jnp.abs(plain), grid),
                             rtol=0, atol=1e-9)
  # A trained network: its state, by hand, is the coarsest level's start.
  params = jax.tree.map(lambda p: p + 0.3 * jnp.ones_like(p), params)
  mlp = params["gate_start"]
  mode = kinetic.kinetic_modes(levels[0], 1)[0]

  def by_hand(vc):
    flat = vc.reshape(vc.shape[0], -1)
    x = common.squash((flat - flat.mean(-1, keepdims=True)) / 10.0, 3.0)
    x = jax.nn.gelu(x @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
    out = x @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
    return mode[None] * jnp.exp(out.reshape(vc.shape))
  _, steered = jax.jit(lambda v: cascade_unchecked(
      v, levels, (2, 1, 0), sweeps=(0, 0, 4), start_fn=by_hand,
      steps=[None, None, jnp.exp(params["gate"])]))(v)
  out = apply({"params": params}, v)
  np.testing.assert_allclose(out, normalize_unchecked(jnp.abs(steered), grid),
                             rtol=0, atol=1e-9)
  assert np.max(np.abs(out - apply(variables, v))) > 1e-3
  # The energy's gradient reaches the network through the iterations.
  grad = jax.jit(jax.grad(lambda p: jnp.mean(energy(
      model.apply({"params": p}, v), v, grid))))(params)
  leaves = jax.tree.leaves(grad["gate_start"])
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert any(np.any(g != 0) for g in leaves)
  with pytest.raises(ValueError, match="needs a start grid"):
    build_model(dict(name="pgmoe", tiles=4, coarse=None, envelope_iters=1,
                     envelope_solver="fixed", gate="start_net"), grid)
  with pytest.raises(ValueError, match="not solved exactly"):
    build_model(dict(name="pgmoe", tiles=4, coarse=None, envelope_iters=1,
                     envelope_solver="fixed", envelope_start=16,
                     envelope_start_iters=(0,), envelope_start_exact=True,
                     gate="start_net"), grid)


def test_the_start_network_with_block_minima_sees_them_beside_the_means():
  # gate_start_minima: the start network's input is the coarsest level's
  # block means and the block minima of the gate's potential, both less
  # the means' mean, scaled and squashed alike.
  grid = Grid((32, 32), 20.0)
  levels = (Grid((8, 8), 20.0), Grid((16, 16), 20.0), grid)
  v = potentials.sample("gaussian_wells", jax.random.key(5), grid, 3,
                        dtype=jnp.float64)
  fields = dict(
      name="pgmoe", tiles=4, coarse=None, envelope_iters=0,
      envelope_solver="fixed", envelope_start=16, envelope_start_iters=(1, 0),
      envelope_sweeps=(0, 4, 8), gate="start_net", gate_hidden=(16,),
      experts="none")
  model = build_model(dict(fields, gate_start_minima=True), grid)
  variables = jax.jit(model.init)(jax.random.key(0), v)
  params = variables["params"]
  assert params["gate_start"]["Dense_0"]["kernel"].shape == (128, 16)
  # Untrained, still the cascade itself.
  _, plain = cascade_unchecked(v, levels, (1, 0, 0), sweeps=(0, 4, 8))
  np.testing.assert_allclose(model.apply(variables, v),
                             normalize_unchecked(jnp.abs(plain), grid),
                             rtol=0, atol=1e-9)

  def perturbed(p):
    """A trained network: every parameter perturbed at random."""
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [
        x + 0.3 * jax.random.normal(k, x.shape, x.dtype)
        for x, k in zip(leaves, keys)])
  params = perturbed(params)
  mlp = params["gate_start"]
  mode = kinetic.kinetic_modes(levels[0], 1)[0]
  minima = np.asarray(v).reshape(3, 8, 4, 8, 4).min(axis=(2, 4))

  def by_hand(vc):
    means = vc.reshape(3, -1)
    flat = jnp.concatenate([means, minima.reshape(3, -1)], -1)
    x = common.squash((flat - means.mean(-1, keepdims=True)) / 10.0, 3.0)
    x = jax.nn.gelu(x @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
    out = x @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
    return mode[None] * jnp.exp(out.reshape(vc.shape))
  _, steered = cascade_unchecked(
      v, levels, (1, 0, 0), sweeps=(0, 4, 8), start_fn=by_hand,
      steps=[None, jnp.exp(params["gate"][:4]), jnp.exp(params["gate"][4:])])
  out = model.apply({"params": params}, v)
  np.testing.assert_allclose(out, normalize_unchecked(jnp.abs(steered), grid),
                             rtol=0, atol=1e-9)
  # Without the minima the same shifted network sees another input.
  without = build_model(fields, grid)
  p_without = dict(params, gate_start=jax.tree.map(
      lambda x: x[:64] if x.shape == (128, 16) else x, mlp))
  assert np.max(np.abs(without.apply({"params": p_without}, v) - out)) > 1e-3
  for gate in ("envelope", "sweeps", "ritz_net"):
    with pytest.raises(ValueError, match="gate_start_minima"):
      build_model(dict(fields, gate=gate, gate_start_minima=True), grid)


def test_envelope_solver_eigh_is_the_exact_coarse_ground_state():
  # envelope_iters is not used with "eigh".
  grid = Grid((16, 16), 10.0)
  v = wells(grid, 2)
  energies = []
  for iters in (None, 0, 5):
    model = build_model(dict(name="pgmoe", tiles=4, coarse=8,
                             envelope_solver="eigh", envelope_iters=iters),
                        grid)
    energies.append(model.apply({}, v, method="coarse_envelope")[1])
  e_coarse, _ = ground_state(np.asarray(tiling.block_mean(v, grid, (8, 8))),
                             Grid((8, 8), 10.0))
  np.testing.assert_allclose(energies[0], e_coarse, rtol=1e-10)
  np.testing.assert_array_equal(energies[0], energies[1])
  np.testing.assert_array_equal(energies[0], energies[2])


@pytest.mark.parametrize("fields, message", [
    (dict(coarse=0), r"coarse=0.*use coarse=None for the full grid"),
    (dict(envelope_iters=0, envelope_solver="fixed"),
     r"envelope_iters=0.*envelope_solver='eigh'"),
    (dict(envelope_iters=0, envelope_solver="lobpcg"),
     r"envelope_iters=0.*envelope_solver='eigh'"),
    (dict(envelope_start=0), r"envelope_start=0.*envelope_start=None"),
    (dict(envelope_start=8, envelope_iters=2, envelope_solver="fixed",
          envelope_start_iters=(0, 2)),
     r"coarsest start level.*envelope_start_exact=True"),
    (dict(envelope_start=8, envelope_iters=2, envelope_solver="fixed",
          envelope_start_iters=0),
     r"coarsest start level.*envelope_start_exact=True"),
])
def test_old_encodings_in_a_config_name_the_new_spelling(fields, message):
  # A 0 that used to mean something else fails loudly, never silently
  # meaning another thing (config.json files of older runs are mapped
  # when read: pgmoe_jax.rundir.legacy).
  with pytest.raises(ValueError, match=message):
    build_model({**dict(name="pgmoe", tiles=4, coarse=16), **fields},
                Grid((32, 32), 20.0))


def test_an_exact_start_level_without_a_start_grid_is_refused():
  with pytest.raises(ValueError, match=r"envelope_start_exact.*no start "
                     r"grid"):
    build_model(dict(name="pgmoe", tiles=4, coarse=16,
                     envelope_start_exact=True), Grid((32, 32), 20.0))


def test_an_mlp_on_feature_blocks_is_the_mlp_on_their_concatenation():
  # The experts' first layer takes the tile features as blocks (no
  # concatenated copy): the same parameter tree, from the same key, as on
  # the concatenation, and the same outputs; a per-tile embedding (T, E)
  # broadcasts over the batch.
  blocks = [jax.random.normal(jax.random.key(i), (3, 5, w))
            for i, w in enumerate((7, 4))]
  embedding = jax.random.normal(jax.random.key(9), (5, 2))
  whole = jnp.concatenate(
      blocks + [jnp.broadcast_to(embedding, (3, 5, 2))], -1)
  mlp = common.MLP((6, 6), 3)
  params = mlp.init(jax.random.key(0), whole)
  params_blocks = mlp.init(jax.random.key(0), blocks + [embedding])
  assert jax.tree.structure(params) == jax.tree.structure(params_blocks)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_blocks)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(mlp.apply(params, blocks + [embedding]),
                             mlp.apply(params, whole), rtol=1e-12,
                             atol=1e-12)
  with pytest.raises(ValueError, match="without hidden layers"):
    common.MLP((), 3).init(jax.random.key(0), blocks)
