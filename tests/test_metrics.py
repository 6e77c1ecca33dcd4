"""The one scorer and its metrics: identities against the checked API."""

import jax
import numpy as np

from helpers import labelled
from pgmoe_jax import Grid
from pgmoe_jax import energy
from pgmoe_jax import residual
from pgmoe_jax import metrics
from pgmoe_jax import variational
from pgmoe_jax.training import losses


GRID = Grid((12, 12), 12.0)


def test_metric_identities():
  batch = labelled(GRID)
  psi0 = batch["psi0"]
  np.testing.assert_allclose(metrics.infidelity(-3 * psi0, psi0, GRID), 0,
                             atol=1e-14)
  np.testing.assert_allclose(losses.normalized_mse(-3 * psi0, psi0, GRID), 0,
                             atol=1e-20)
  noisy = psi0 + 0.05 * jax.random.normal(jax.random.key(0), psi0.shape)
  np.testing.assert_allclose(
      variational.rayleigh_quotient(noisy, batch["potential"], GRID),
      energy(noisy, batch["potential"], GRID), rtol=1e-13)
  np.testing.assert_allclose(variational.residual_norm(noisy,
                                                       batch["potential"],
                                                       GRID),
                             residual(noisy, batch["potential"], GRID),
                             rtol=1e-12)
  scores = metrics.score(noisy, batch["potential"], batch["psi0"],
                         batch["E0"], GRID)
  assert list(scores) == list(metrics.SCORE_KEYS)
  assert (np.asarray(scores["energy_error_mha"]) > 0).all()  # variational
  np.testing.assert_allclose(scores["energy"],
                             energy(noisy, batch["potential"], GRID),
                             rtol=1e-13)
  np.testing.assert_allclose(scores["infidelity"],
                             metrics.infidelity(noisy, psi0, GRID),
                             rtol=1e-13)
  np.testing.assert_allclose(scores["residual"],
                             residual(noisy, batch["potential"], GRID),
                             rtol=1e-12)
  scores = metrics.score(psi0, batch["potential"], psi0, batch["E0"], GRID)
  np.testing.assert_allclose(scores["energy_error_mha"], 0, atol=1e-8)
  np.testing.assert_allclose(scores["infidelity"], 0, atol=1e-14)
  # A claimed energy that is not the state's own: the residual sees it.
  claimed = variational.residual_norm(psi0, batch["potential"], GRID,
                                      batch["E0"] - 0.5)
  np.testing.assert_allclose(claimed, 0.5, rtol=1e-6)
