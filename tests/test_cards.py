"""The shipped models reproduce the median energy errors their cards state.

Each model card's Evaluation section states median energy errors ``dE``
(mHa) on seeded splits. Here the splits are drawn again by the seeded
sampler of ``experiments.generate_data`` (the same seeds and split names),
labelled by the solver that labelled them (SciPy eigsh in 2-D, the float64
JAX LOBPCG in 3-D, at the generator's tolerance), predicted in one batch
as ``experiments.evaluate`` does, and each median must lie within
:data:`RTOL` of the card's figure, read from the card itself. universal_32
is checked on its full splits (200 each); universal_64, the learned
cascades and gaussian3d_32 on the first 64 samples of theirs, whose medians
their cards state too (with the commands that give them). A label solver that
returns the first excited pair instead of the ground state is caught by
the same check.
"""

import importlib

import numpy as np
import pytest

from pgmoe_jax import data
from pgmoe_jax import energy
from pgmoe_jax import pretrained
from pgmoe_jax import solvers
from pgmoe_jax.grid import Grid
from pgmoe_jax.models.serving import predict_batch

# The module (data.generate is its function of the same name).
generate = importlib.import_module("pgmoe_jax.data.generate")
RTOL = 0.01
TOL = 1e-8  # the generator's default label tolerance (Ha)
FULL = "dE median (mHa)"
SUBSET = "dE median (mHa), first 64"


def card_medians(name: str, column: str) -> dict[str, float]:
  """Split -> the card's figure in ``column`` (a Markdown table's header).

  The split is the first word of the row's first cell when the table has
  a ``split`` column, else ``"test"`` (a card with one test split).
  """
  lines = pretrained.model_card(name).splitlines()
  for i, line in enumerate(lines):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if column not in cells:
      continue
    col = cells.index(column)
    out = {}
    for row in lines[i + 2:]:
      if not row.startswith("|"):
        break
      values = [c.strip() for c in row.strip().strip("|").split("|")]
      split = values[0].split()[0] if cells[0] == "split" else "test"
      out[split] = float(values[col].replace(",", ""))
    return out
  raise ValueError(f"{name}'s card has no table with a {column!r} column.")


def card_specs(name: str, num: int) -> dict[str, data.DatasetSpec]:
  """The first ``num`` samples of the splits the card of ``name`` scores."""
  model = pretrained.load_pretrained(name)
  grid = model.grid
  if model.config.data.family == "mixture":
    specs = data.family_splits(grid, num, seed=0)
    return {k[len("test_"):]: v for k, v in specs.items()
            if k.startswith("test_")}
  if model.config.data.family == "gaussian_wells" and grid.ndim == 3:
    # data/gw3d32/test's seed and solver (the 3-D configs' docstrings)
    return {"test": data.DatasetSpec("gaussian_wells", grid, num, 1, "test",
                                     solver="lobpcg")}
  raise ValueError(f"No card splits known for {name!r}.")


def label(potentials: np.ndarray, grid: Grid, method: str,
          num_states: int = 1) -> np.ndarray:
  """E0 (Ha) of each potential by ``method`` at the generator's tolerance."""
  result = solvers.solve(potentials, grid, method=method,
                         num_states=num_states, tol=TOL, chunk_size=1)
  assert np.asarray(result.converged).all()
  return np.asarray(result.energies, np.float64)[:, 0]


def energy_errors(model, spec: data.DatasetSpec,
                  num_states: int = 1) -> np.ndarray:
  """``dE`` (mHa) of ``model`` on the samples of ``spec``, one batch."""
  v = data.make_split_sampler(spec)(0, spec.num_samples)
  method = "lobpcg" if spec.grid.ndim == 3 else "eigsh"
  e0 = label(v, spec.grid, method, num_states)
  psi = predict_batch(model, v, spec.grid)
  return 1e3 * (np.asarray(energy(psi, v, spec.grid)) - e0)


def check_median(name: str, split: str, errors: np.ndarray, card: float):
  median = float(np.median(errors))
  assert (errors >= -1e-6).all(), (name, split, errors.min())
  assert abs(median - card) <= RTOL * card, (name, split, median, card)


def test_card_tables_are_read():
  full = card_medians("universal_32", FULL)
  assert full["gaussian_wells"] == 0.753 and full["mixture"] == 1.69
  assert len(full) == 8
  assert card_medians("gaussian3d_32", FULL) == {"test": 1.14}
  for name in ("universal_64", "gaussian3d_32", "learned_cascade_64",
               "learned_cascade3d_32"):
    subset = card_medians(name, SUBSET)
    assert set(subset) == set(card_specs(name, 1)), name


@pytest.mark.slow
@pytest.mark.parametrize("name, column, num", [
    ("universal_32", FULL, 200),
    ("universal_64", SUBSET, 64),
    ("learned_cascade_64", SUBSET, 64),
    ("gaussian3d_32", SUBSET, 64),
    ("learned_cascade3d_32", SUBSET, 64)])
def test_shipped_model_reproduces_its_card(name, column, num):
  model = pretrained.load_pretrained(name)
  card = card_medians(name, column)
  specs = card_specs(name, num)
  assert set(card) == set(specs)
  for split, spec in specs.items():
    check_median(name, split, energy_errors(model, spec), card[split])


def _second_pair(solve):
  """``solve`` returning the first excited pair in the ground state's place."""
  def wrong(*args, num_states=1, **kwargs):
    result = solve(*args, num_states=max(num_states, 2), **kwargs)
    swap = lambda x: np.concatenate([x[:, 1:2], x[:, :1], x[:, 2:]], 1)
    return result._replace(energies=swap(np.asarray(result.energies)),
                           states=swap(np.asarray(result.states)),
                           residuals=swap(np.asarray(result.residuals)))
  return wrong


def test_card_check_catches_a_solver_returning_the_second_pair(monkeypatch):
  name, split, num = "universal_32", "gaussian_wells", 16
  model = pretrained.load_pretrained(name)
  spec = card_specs(name, num)[split]
  card = card_medians(name, FULL)[split]
  assert (energy_errors(model, spec) >= -1e-6).all()
  monkeypatch.setattr(solvers, "solve", _second_pair(solvers.solve))
  wrong = energy_errors(model, spec)
  # E[psi] - E1 < 0: hundreds of mHa below the card, not 1% off it.
  assert abs(np.median(wrong) - card) > 100 * card
  with pytest.raises(AssertionError):
    check_median(name, split, wrong, card)


def test_generator_drops_labels_of_the_second_pair(monkeypatch, tmp_path):
  # The generator's own check: the first excited state has a node.
  spec = card_specs("universal_32", 4)["gaussian_wells"]
  solve = generate.eigsh_batch

  def wrong(potentials, grid, num_states, tol):
    e, u, res, its, conv = solve(potentials, grid, max(num_states, 2), tol)
    return e[:, ::-1], u[:, ::-1], res[:, ::-1], its, conv
  monkeypatch.setattr(generate, "eigsh_batch", wrong)
  meta = data.generate(str(tmp_path / "split"), spec)
  assert meta["num_samples"] == 0 and len(meta["failed"]) == 4
  assert all("node" in f["reason"] for f in meta["failed"]), meta["failed"]
