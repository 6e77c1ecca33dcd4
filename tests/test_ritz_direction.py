"""An extra Rayleigh-Ritz direction in the fixed-cost iterations (a network's).

Whatever the direction, an iteration ends no higher than the classical one
from the same point, and enough iterations reach the exact ground state;
the ``ritz_net`` gate puts a trained network's direction into the
cascade's coarsest level.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import energy
from pgmoe_jax import kinetic
from pgmoe_jax import potentials
from pgmoe_jax.models import build_model
from pgmoe_jax.models import common
from pgmoe_jax.solvers.coarse_to_fine import cascade_unchecked
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed_unchecked
from pgmoe_jax.variational import normalize_unchecked


def dense_ground_states(v, grid):
  k = kinetic.kinetic_matrix(grid, sparse=False)
  pairs = [np.linalg.eigh(k + np.diag(np.asarray(vi).ravel())) for vi in v]
  return (np.array([e[0] for e, _ in pairs]),
          np.stack([vec[:, 0].reshape(grid.shape) for _, vec in pairs]))


def random_direction(seed, grid):
  """A fixed nonlinear map ``x -> d`` (an untrained network's stand-in)."""
  w = jax.random.normal(jax.random.key(seed), (grid.size, grid.size),
                        jnp.float64) / np.sqrt(grid.size)

  def direction(x):
    flat = x.reshape(x.shape[0], -1)
    return jnp.tanh(3.0 * flat @ w + 0.5).reshape(x.shape)
  return direction


def test_an_extra_direction_never_ends_an_iteration_higher():
  grid = Grid((16, 16), 20.0)
  v = potentials.sample("double_well", jax.random.key(1), grid, (6,),
                        dtype=jnp.float64)
  e0, psi0 = dense_ground_states(v, grid)
  mode = jnp.asarray(kinetic.kinetic_modes(grid, 1)[0])
  for seed in range(3):
    start = mode * (1.0 + 0.5 * jax.random.uniform(
        jax.random.key(10 + seed), v.shape, jnp.float64))
    plain, _ = ground_state_fixed(v, grid, 1, start=start)
    steered, _ = ground_state_fixed_unchecked(
        v, grid, 1, start=start, direction_fn=random_direction(seed, grid))
    assert (np.asarray(steered) <= np.asarray(plain) + 1e-12).all()
    assert (np.asarray(steered) >= e0 - 1e-12).all()
  # The direction is used: the exact ground state as the direction gives
  # the exact energy after one iteration, which the classical step does not.
  plain, _ = ground_state_fixed(v, grid, 1)
  exact, state = ground_state_fixed_unchecked(
      v, grid, 1, direction_fn=lambda x: jnp.asarray(psi0))
  np.testing.assert_allclose(exact, e0, rtol=0, atol=1e-10)
  assert np.min(np.asarray(plain) - e0) > 1e-3
  # A direction inside the basis already (the state itself) is dropped:
  # the classical iterations.
  same, _ = ground_state_fixed_unchecked(v, grid, 3, direction_fn=lambda x: x)
  np.testing.assert_allclose(same, ground_state_fixed(v, grid, 3)[0],
                             rtol=0, atol=1e-12)


FAMILIES = sorted(potentials.FAMILIES) + ["mixture"]


def test_thirty_iterations_with_any_direction_reach_the_ground_state():
  # In float64, 4 potentials of every family in one batch: the cascade (4
  # iterations on 6x6, 30 on 12x12) with a direction on both levels; it
  # cannot stop convergence.
  grid = Grid((12, 12), 20.0)
  levels = (Grid((6, 6), 20.0), grid)
  v = jnp.concatenate([
      potentials.sample(family, jax.random.key(4), grid, (4,),
                        dtype=jnp.float64) for family in FAMILIES])
  e0, psi0 = dense_ground_states(v, grid)
  e, x = jax.jit(lambda v: cascade_unchecked(
      v, levels, (4, 30), direction_fns=tuple(
          lambda vs, g=g, seed=seed: (
              lambda x: random_direction(seed, g)(x) * vs)
          for seed, g in enumerate(levels))))(v)
  overlaps = np.abs(np.sum(np.asarray(x) * psi0, axis=(1, 2)))
  for i, family in enumerate(FAMILIES):
    part = slice(4 * i, 4 * i + 4)
    np.testing.assert_allclose(e[part], e0[part], rtol=0, atol=1e-9,
                               err_msg=family)
    assert (overlaps[part] > 1 - 1e-7).all(), family


def test_the_ritz_net_gate_adds_its_network_direction_to_the_coarsest_level():
  grid = Grid((16, 16), 20.0)
  levels = (Grid((8, 8), 20.0), grid)
  v = potentials.sample("gaussian_wells", jax.random.key(5), grid, 3,
                        dtype=jnp.float64)
  model = build_model(dict(
      name="pgmoe", tiles=4, coarse=None, envelope_iters=0,
      envelope_solver="fixed", envelope_start=8, envelope_start_iters=(2,),
      envelope_sweeps=(0, 3), gate="ritz_net", gate_hidden=(16,),
      experts="none"), grid)
  variables = jax.jit(model.init)(jax.random.key(0), v)
  params = variables["params"]
  assert set(params) == {"gate", "gate_direction"}
  assert params["gate_direction"]["Dense_0"]["kernel"].shape == (128, 16)
  mlp = params["gate_direction"]

  def by_hand(vc):
    flat = vc.reshape(vc.shape[0], -1)
    feat = common.squash((flat - flat.mean(-1, keepdims=True)) / 10.0, 3.0)

    def direction(x):
      inputs = jnp.concatenate([feat, 8.0 * x.reshape(x.shape[0], -1)], -1)
      h = jax.nn.gelu(inputs @ mlp["Dense_0"]["kernel"]
                      + mlp["Dense_0"]["bias"])
      return (h @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]).reshape(
          x.shape)
    return direction
  _, steered = jax.jit(lambda v: cascade_unchecked(
      v, levels, (2, 0), sweeps=(0, 3), direction_fns=(by_hand, None),
      steps=[None, jnp.exp(params["gate"])]))(v)
  apply = jax.jit(model.apply)
  out = apply(variables, v)
  np.testing.assert_allclose(out, normalize_unchecked(jnp.abs(steered), grid),
                             rtol=0, atol=1e-9)
  _, plain = jax.jit(lambda v: cascade_unchecked(v, levels, (2, 0),
                                                 sweeps=(0, 3)))(v)
  assert np.max(np.abs(out - normalize_unchecked(jnp.abs(plain), grid))) > 1e-6
  # The energy's gradient reaches the network through the iterations.
  grad = jax.jit(jax.grad(lambda p: jnp.mean(energy(
      model.apply({"params": p}, v), v, grid))))(params)
  leaves = jax.tree.leaves(grad["gate_direction"])
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert any(np.any(g != 0) for g in leaves)
  assert model.gate.activations_per_sample() > 0


@pytest.mark.parametrize("fields", [
    dict(envelope_solver="lobpcg", envelope_iters=2),
    dict(envelope_solver="fixed", envelope_iters=0, envelope_start=8,
         envelope_start_iters=(0,), envelope_start_exact=True),
])
def test_the_ritz_net_gate_needs_iterations_on_the_coarsest_level(fields):
  with pytest.raises(ValueError, match="ritz_net.*iterations per level"):
    build_model(dict(name="pgmoe", tiles=4, coarse=None, gate="ritz_net",
                     **fields), Grid((16, 16), 20.0))


def test_the_start_ritz_net_gate_has_both_networks_on_the_coarsest_level():
  # The start network starts the coarsest level's iterations and the
  # direction network steers them: with the start network's last layer
  # at zero (its initialisation) the gate is the ritz_net cascade from
  # K's lowest mode; with it moved, the start moves the output.
  grid = Grid((16, 16), 20.0)
  v = potentials.sample("gaussian_wells", jax.random.key(6), grid, 3,
                        dtype=jnp.float64)
  fields = dict(
      name="pgmoe", tiles=4, coarse=None, envelope_iters=0,
      envelope_solver="fixed", envelope_start=8, envelope_start_iters=(2,),
      envelope_sweeps=(0, 3), gate="start_ritz_net", gate_hidden=(16,),
      experts="none")
  model = build_model(fields, grid)
  params = jax.jit(model.init)(jax.random.key(0), v)["params"]
  assert set(params) == {"gate", "gate_start", "gate_direction"}
  assert params["gate_start"]["Dense_0"]["kernel"].shape == (64, 16)
  assert params["gate_direction"]["Dense_0"]["kernel"].shape == (128, 16)
  ritz = build_model(dict(fields, gate="ritz_net"), grid)
  ritz_params = {k: params[k] for k in ("gate", "gate_direction")}
  out = jax.jit(model.apply)({"params": params}, v)
  np.testing.assert_allclose(
      out, jax.jit(ritz.apply)({"params": ritz_params}, v), rtol=0, atol=1e-9)
  moved = dict(params, gate_start=jax.tree.map(
      lambda x: x + 0.3 * jnp.cos(jnp.arange(x.size).reshape(x.shape)),
      params["gate_start"]))
  assert np.max(np.abs(jax.jit(model.apply)({"params": moved}, v) - out)) > 1e-4
  minima = build_model(dict(fields, gate_start_minima=True), grid)
  assert jax.jit(minima.init)(jax.random.key(0), v)["params"]["gate_start"][
      "Dense_0"]["kernel"].shape == (128, 16)
