"""Every float32 contraction whose accuracy matters states its precision.

Accelerators run float32 matmuls at lower precision by default (bfloat16
passes on TPU, TF32 on recent GPUs). The CPU ignores the setting, so the
tests read it from the traced programs: every ``dot_general`` of the solvers,
the physics gate, the interpolation of its envelope and the energy
functional must ask for ``Precision.HIGHEST``. (The experts' and the dense
network's learned layers keep the platform default: they are trained at it.)
"""

import jax
import jax.numpy as jnp
import pytest

from pgmoe_jax import Grid
from pgmoe_jax import kinetic
from pgmoe_jax import potentials
from pgmoe_jax import variational
from pgmoe_jax.models import build_model
from pgmoe_jax.solvers import lobpcg
from pgmoe_jax.solvers.fixed_iters import ground_state_fixed

GRID = Grid((16, 16), 20.0)
HIGHEST = jax.lax.Precision.HIGHEST


def dot_precisions(jaxpr):
  """The precision of every dot_general in a closed jaxpr, sub-jaxprs too."""
  found = []

  def walk(jx):
    for eqn in jx.eqns:
      if eqn.primitive.name == "dot_general":
        found.append(eqn.params["precision"])
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            walk(sub)

  walk(jaxpr.jaxpr)
  return found


def assert_all_highest(fn, *args, at_least=1):
  precisions = dot_precisions(jax.make_jaxpr(fn)(*args))
  assert len(precisions) >= at_least
  loose = [p for p in precisions if p != (HIGHEST, HIGHEST)]
  assert not loose, f"{len(loose)} of {len(precisions)} contractions: {loose}"


def batch(count=2):
  return potentials.sample("gaussian_wells", jax.random.key(0), GRID,
                           (count,), dtype=jnp.float32)


def test_the_reference_lobpcg():
  v = batch()
  start = jnp.broadcast_to(
      jnp.asarray(kinetic.kinetic_modes(GRID, 2), jnp.float32),
      (2, 2) + GRID.shape)
  assert_all_highest(
      lambda v, s: lobpcg.lobpcg_batch(v, s, 1e-4, GRID, num_states=1,
                                       max_iters=5), v, start)


def test_the_fixed_cost_solver():
  assert_all_highest(lambda v: ground_state_fixed(v, GRID, 3), batch())


@pytest.mark.parametrize("iters, solver, start", [
    (6, "lobpcg", {}), (6, "fixed", {}), (None, "eigh", {}),
    (2, "fixed", dict(envelope_start=4, envelope_start_iters=0,
                      envelope_start_exact=True)),
    (1, "fixed", dict(coarse=None, envelope_start=8,
                      envelope_start_iters=(3, 2)))],
                         ids=["lobpcg", "fixed", "eigh", "start-eigh",
                              "start-chain"])
def test_the_physics_gate_and_its_interpolation(iters, solver, start):
  # Every contraction of the gate: the coarse solve, a start chain's
  # solves and interpolations, the interpolation to the grid.
  model = build_model(dict(dict(name="pgmoe", tiles=4, coarse=8,
                                envelope_iters=iters, envelope_solver=solver,
                                expert_hidden=(8,)), **start), GRID)
  v = batch()
  variables = model.init(jax.random.key(0), v)
  assert_all_highest(
      lambda v: model.apply(variables, v, use_experts=False), v)


def test_the_energy_functional_has_no_reduced_precision_contraction():
  # Energy, residual and normalisation are elementwise products and sums
  # (exact float32 on every platform); should one become a contraction, it
  # must say HIGHEST.
  v = batch()
  psi = jnp.abs(v) + 1.0
  assert_all_highest(lambda p, v: variational.rayleigh_quotient(p, v, GRID),
                     psi, v, at_least=0)
  assert_all_highest(lambda p, v: variational.residual_norm(p, v, GRID),
                     psi, v, at_least=0)
