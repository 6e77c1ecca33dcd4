r"""Predict ground states with error bars, and optionally refine them.

The library side of ``python -m experiments.predict``. For each potential a
trained model predicts a state :math:`\psi` (in the model's dtype); then, in
float64 (:mod:`pgmoe_jax.bounds`):

* ``energy``: the Rayleigh quotient :math:`E \ge E_0`, a rigorous upper
  bound on the ground-state energy of the grid's ``H``;
* ``residual``: :math:`r = \|H\psi - E\psi\|/\|\psi\|`;
* rigorous lower bounds (Weinstein, Temple) with
  :math:`\beta = \lambda_1(K) + \min V \le E_1` (Weyl). This :math:`\beta`
  lies below :math:`E_0` for any well whose zero-point energy exceeds
  :math:`\lambda_1(K)`, the usual case, and then no rigorous bound exists
  (NaN);
* estimated lower bounds, the same formulas with an estimate of
  :math:`E_1`: a few LOBPCG iterations (``beta_iters``, tolerance 0, so a
  fixed cost) on the block [prediction, the two next-lowest kinetic modes]
  give a second Ritz pair :math:`(\mu_1, r_1)`. :math:`\mu_1 \ge E_1` always
  (Cauchy interlacing), so :math:`\beta = \mu_1` can overshoot and give a
  "bound" above :math:`E_0`. The estimate used is
  :math:`\beta = \max(\mu_1 - r_1, \beta_{\mathrm{rigorous}})`, the lower end
  of the second pair's Weinstein interval: it is :math:`\le E_1` whenever the
  interval holds :math:`E_1` rather than a higher eigenvalue, i.e. unless
  the short LOBPCG run has missed the first excited state altogether.
  Estimated bounds are estimates, not guarantees.

Measured on a PG-MoE quick-start model (32x32, 200 potentials per family,
against eigsh): after 4 iterations :math:`\mu_1 - r_1 \le E_1` for 199 of
200 gaussian_wells and 199 of 200 double_well samples (:math:`\mu_1`
itself for none, as interlacing says); every estimated bound given was
below the exact :math:`E_0`: 97.5% of gaussian_wells got one (median gap
:math:`E - E_{\mathrm{low}}` 10.8 mHa; 98% with the exact :math:`E_1`),
2% of double_well (8 iterations: 28.5%, 16: 36%, the ceiling: the other
predictions lie above :math:`E_1`, where no such bound exists). The
rigorous :math:`\beta` gave no bound for any of them. A block without the
guard vector halves the cost but missed :math:`E_1` for 1-4% of samples.

With ``refine=True`` every prediction starts the float64 JAX LOBPCG
(``solvers.solve(method="lobpcg", init=...)``, its default tolerance
1e-8 Ha), which returns solver-exact states and energies with converged
flags and iteration counts.

All bounds are on the eigenvalues of the discrete ``H`` (the grid's matrix),
not of the continuum operator. The module also reads potentials from
``.npy`` files with one-line errors, samples them from a family, writes
the results as an ``.npz`` (atomically, no pickle) and summarises them.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from typing import Any, Callable
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from pgmoe_jax import bounds
from pgmoe_jax import checks
from pgmoe_jax import kinetic
from pgmoe_jax import memory
from pgmoe_jax import potentials as potentials_lib
from pgmoe_jax import solvers
from pgmoe_jax.batching import pad_batch
from pgmoe_jax.grid import Grid
from pgmoe_jax.models.serving import predict_batch
from pgmoe_jax.solvers.lobpcg import lobpcg_batch
from pgmoe_jax.timing import timed

DEFAULT_BETA_ITERS = 4
DEFAULT_BATCH_SIZE = 256
BOUND_FIELDS = ("beta", "weinstein", "temple", "lower")


def _require_x64(what: str) -> None:
  checks.require_x64(f"{what} computes bounds and refinements in float64")


def _shape_text(grid: Grid) -> str:
  return "(N, " + ", ".join(map(str, grid.shape)) + ")"


def _check_layout(dtype, shape, grid: Grid, source: str) -> None:
  """The dtype and shape checks of :func:`check_potentials` (no values)."""
  if dtype.hasobject or not (np.issubdtype(dtype, np.floating) or
                             np.issubdtype(dtype, np.integer)):
    kind = ("Python objects (never unpickled)" if dtype.hasobject
            else f"{dtype} values")
    raise ValueError(f"{source} holds {kind}; potentials are real "
                     "numbers in Hartree (a float array).")
  if len(shape) != grid.ndim + 1 or tuple(shape[1:]) != grid.shape:
    raise ValueError(
        f"{source} has shape {tuple(shape)}, but the model works on {grid}: "
        f"expected {_shape_text(grid)} (save a single potential with shape "
        f"{(1,) + grid.shape}).")


def check_potentials(v, grid: Grid, source: str = "potentials") -> np.ndarray:
  """Returns ``v`` as float64 ``(N, *grid.shape)``, or raises one clear line.

  Raises:
    ValueError: another shape (naming the grid and the shape), no samples,
      a non-numeric dtype, or NaN/inf (how many, and the first index).
  """
  v = np.asarray(v)
  _check_layout(v.dtype, v.shape, grid, source)
  if len(v) == 0:
    raise ValueError(f"{source} holds no potentials (shape {v.shape}).")
  finite = np.isfinite(v)
  if not finite.all():
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise ValueError(f"{source} holds {int((~finite).sum())} NaN or inf "
                     f"value(s), the first at index {first}; clean the "
                     "potentials first.")
  return v.astype(np.float64)


def load_potentials(path: str, grid: Grid) -> np.ndarray:
  """Reads ``(N, *grid.shape)`` potentials from a ``.npy`` file (no pickle).

  Raises:
    ValueError: a missing file, a folder, another format (``.npz``, a
      corrupt or truncated ``.npy``, a header declaring more data than the
      file holds or host memory can take), an object (pickled) array, or
      anything :func:`check_potentials` refuses. One line each.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise ValueError(f"{path} is a folder; give a .npy file of potentials "
                     f"{_shape_text(grid)}.")
  if not os.path.exists(path):
    raise ValueError(f"{path}: no such file.")
  if not path.endswith(".npy"):
    kind = "an .npz archive" if path.endswith(".npz") else "not a .npy file"
    raise ValueError(f"{path} is {kind}; save the potentials as one array "
                     f"{_shape_text(grid)} with numpy.save(path.npy, V).")
  try:
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
      shape, _, dtype = header(f)
      held = os.path.getsize(path) - f.tell()
  except (ValueError, EOFError, OSError) as e:
    raise ValueError(f"{path} is not a readable .npy file (corrupt or "
                     f"another format: {e}).") from None
  _check_layout(dtype, shape, grid, path)  # Before the data is read.
  declared = math.prod(shape) * dtype.itemsize
  if declared > held:
    raise ValueError(f"{path} is corrupt or truncated: its header declares "
                     f"{dtype} {tuple(shape)} ({memory.format_bytes(declared)}"
                     f"), but it holds {memory.format_bytes(held)} of data.")
  memory.check_fits(declared * (1 + 8 / dtype.itemsize), f"loading {path} "
                    f"({shape[0]} potentials on {grid} and a float64 copy)",
                    "split the file and predict on each part", host=True)
  try:
    v = np.load(path, allow_pickle=False)
  except (ValueError, EOFError, OSError) as e:
    raise ValueError(f"{path} is corrupt or truncated ({e}).") from None
  return check_potentials(v, grid, source=path)


def sample_potentials(family: str, grid: Grid, num: int,
                      seed: int) -> np.ndarray:
  """``num`` float64 potentials from a family name or ``"module:function"``.

  Raises:
    ValueError: ``num < 1``, an unknown family (the known ones listed), a
      user family that breaks the contract or returns NaN/inf.
  """
  _require_x64("sample_potentials")
  if not isinstance(num, (int, np.integer)) or num < 1:
    raise ValueError(f"num must be a positive integer, got {num!r}.")
  fn = potentials_lib.get_family(family)
  potentials_lib.check_output(family, fn, grid)
  v = potentials_lib.sample(family, jax.random.key(int(seed)), grid,
                            (int(num),), dtype=jnp.float64)
  return check_potentials(v, grid, source=f"family {family!r}")


def second_state_estimate(V, psi, grid: Grid,
                          iters: int = DEFAULT_BETA_ITERS):
  r"""The second Ritz pair :math:`(\mu_1, r_1)` after ``iters`` iterations.

  LOBPCG (float64, tolerance 0: exactly ``iters`` iterations, fixed cost)
  on the block [``psi``, the 2nd and 3rd lowest kinetic modes]; a guard
  vector keeps the second pair converging. :math:`\mu_1 \ge E_1`.

  Args:
    V: ``(b, *grid.shape)`` potentials.
    psi: ``(b, *grid.shape)`` trial ground states (predictions).
    grid: the grid.
    iters: LOBPCG iterations, ``>= 0`` (0: Rayleigh-Ritz on the start).

  Returns:
    ``(mu1, r1)``, float64 NumPy ``(b,)``.
  """
  _require_x64("second_state_estimate")
  if not isinstance(iters, (int, np.integer)) or iters < 0:
    raise ValueError(f"beta_iters must be a non-negative integer, got "
                     f"{iters!r}.")
  v = jnp.asarray(V, jnp.float64)
  b = v.shape[0]
  offset = jnp.min(v.reshape(b, -1), axis=1)
  modes = jnp.asarray(kinetic.kinetic_modes(grid, 3)[1:], jnp.float64)
  x0 = jnp.concatenate([jnp.asarray(psi, jnp.float64)[:, None],
                        jnp.broadcast_to(modes, (b,) + modes.shape)], axis=1)
  e, _, res, _ = lobpcg_batch(v - offset.reshape((b,) + (1,) * grid.ndim),
                              x0, 0.0, grid, num_states=2,
                              max_iters=int(iters))
  return (np.asarray(e[:, 1] + offset, np.float64),
          np.asarray(res[:, 1], np.float64))


def predict(predictor, potentials, *, batch_size: int = DEFAULT_BATCH_SIZE,
            refine: bool = False, beta_iters: int = DEFAULT_BETA_ITERS,
            refine_chunk_size: int | None = None,
            progress: Callable[[int, int], None] | None = None
            ) -> dict[str, np.ndarray]:
  """Predicts ground states with upper and lower energy bounds.

  Args:
    predictor: a :class:`pgmoe_jax.inference.Predictor`.
    potentials: ``(N, *predictor.grid.shape)`` in Hartree.
    batch_size: potentials per model call (the last batch is padded, so
      the model compiles once).
    refine: also run the float64 LOBPCG from every prediction.
    beta_iters: LOBPCG iterations of the estimate of ``E1``.
    refine_chunk_size: potentials per LOBPCG call when refining; default
      ``batch_size``. (A vmapped chunk iterates until its slowest member
      converges, yet large chunks still solve faster than one potential at
      a time through ``solve``.)
    progress: called as ``progress(done, N)`` after each batch.

  Returns:
    NumPy arrays, per sample unless said otherwise: ``states`` (model
    dtype), ``energy``, ``residual``, ``{beta, weinstein, temple,
    lower}_rigorous``, ``second_energy`` and ``second_residual`` (the
    Ritz pair behind the estimate), ``{beta, weinstein, temple,
    lower}_estimate``; scalars ``time_predict``, ``time_bounds``,
    ``time_beta`` (seconds, compilation excluded), ``predictions_per_s``;
    with ``refine``: ``refined_energy``, ``refined_states`` (float64),
    ``refined_residual``, ``converged``, ``iterations``, ``time_refine``.

  Raises:
    ValueError: float64 not enabled, bad potentials, bad sizes.
  """
  _require_x64("predict")
  grid = predictor.grid
  v = check_potentials(potentials, grid)
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got "
                     f"{batch_size!r}.")
  n = len(v)
  b = min(int(batch_size), n)

  def predict_one(chunk):
    return predict_batch(predictor, chunk, grid, batch_size=b)

  def bound_one(chunk, psi):
    e, r = bounds.energy_and_residual(psi, chunk, grid)
    return e, r, bounds.beta_rigorous(chunk, grid)

  def beta_one(chunk, psi):
    m = len(chunk)
    mu, res = second_state_estimate(pad_batch(chunk, b), pad_batch(psi, b),
                                    grid, beta_iters)
    return mu[:m], res[:m]

  # Compile everything on the first batch, untimed.
  first = v[:b]
  psi = np.asarray(predict_one(first))
  bound_one(first, psi)
  beta_one(first, psi)

  states = np.empty((n,) + grid.shape, predictor.dtype)
  out = {k: np.empty(n) for k in ("energy", "residual", "beta_rigorous",
                                  "second_energy", "second_residual")}
  times = dict(time_predict=0.0, time_bounds=0.0, time_beta=0.0)
  if progress is not None:
    progress(0, n)
  for start in range(0, n, b):
    chunk = v[start:start + b]
    rows = slice(start, start + len(chunk))
    psi, t = timed(functools.partial(predict_one, chunk))
    times["time_predict"] += t
    psi = np.asarray(psi)
    states[rows] = psi
    (e, r, beta), t = timed(functools.partial(bound_one, chunk, psi))
    times["time_bounds"] += t
    (mu, res), t = timed(functools.partial(beta_one, chunk, psi))
    times["time_beta"] += t
    for key, value in zip(out, (e, r, beta, mu, res)):
      out[key][rows] = value
    if progress is not None:
      progress(rows.stop, n)

  results: dict[str, Any] = {"states": states, **out}
  rigorous = bounds.lower_bounds(out["energy"], out["residual"],
                                 out["beta_rigorous"])
  estimate = bounds.lower_bounds(
      out["energy"], out["residual"],
      np.maximum(out["second_energy"] - out["second_residual"],
                 out["beta_rigorous"]))
  for field in BOUND_FIELDS:
    results[f"{field}_rigorous"] = getattr(rigorous, field)
    results[f"{field}_estimate"] = getattr(estimate, field)
  results.update(times)
  results["predictions_per_s"] = n / max(times["time_predict"], 1e-12)
  if refine:
    results.update(_refine(v, states, grid, b, refine_chunk_size))
  return {k: np.asarray(x) for k, x in results.items()}


def _refine(v, states, grid: Grid, batch: int, chunk: int | None):
  """Float64 LOBPCG from every prediction; per batch (bounded memory)."""
  chunk = batch if chunk is None else int(chunk)
  if chunk < 1:
    raise ValueError(f"refine_chunk_size must be positive, got {chunk}.")
  chunk = min(chunk, batch)

  def solve(rows):
    with warnings.catch_warnings():
      # Unconverged samples are reported in `converged`, not warned about.
      warnings.simplefilter("ignore", RuntimeWarning)
      r = solvers.solve(v[rows], grid, method="lobpcg",
                        init=states[rows].astype(np.float64),
                        chunk_size=chunk)
    return r

  solve(slice(0, chunk))  # compile, untimed
  parts, total = [], 0.0
  for start in range(0, len(v), batch):
    r, t = timed(functools.partial(solve, slice(start, start + batch)))
    parts.append([np.asarray(x) for x in r])
    total += t
  e, psi, res, its, conv = (np.concatenate(p) for p in zip(*parts))
  return dict(refined_energy=e[:, 0], refined_states=psi[:, 0],
              refined_residual=res[:, 0], iterations=its, converged=conv,
              time_refine=total)


def summarize(results: dict[str, np.ndarray]) -> dict[str, float]:
  """The figures ``experiments.predict`` prints (energies in Ha, gaps mHa)."""
  e = results["energy"]
  n = len(e)
  out = dict(
      num=n, predictions_per_s=float(results["predictions_per_s"]),
      median_energy=float(np.median(e)),
      median_residual=float(np.median(results["residual"])),
      bounds_per_s=n / max(float(results["time_bounds"] +
                                 results["time_beta"]), 1e-12))
  for kind in ("rigorous", "estimate"):
    lower = results[f"lower_{kind}"]
    given = ~np.isnan(lower)
    out[f"fraction_{kind}"] = float(given.mean())
    out[f"median_gap_{kind}_mha"] = (float(np.median(e[given] - lower[given]))
                                     * 1e3 if given.any() else math.nan)
  if "refined_energy" in results:
    exact = results["refined_energy"]
    out["median_refine_change_mha"] = float(
        np.median(np.abs(e - exact))) * 1e3
    out["solver_states_per_s"] = n / max(float(results["time_refine"]),
                                         1e-12)
    out["fraction_converged"] = float(np.mean(results["converged"]))
    out["median_iterations"] = float(np.median(results["iterations"]))
    lower = results["lower_estimate"]
    given = ~np.isnan(lower)
    out["fraction_estimate_below_refined"] = (
        float(np.mean(lower[given] <= exact[given] + 1e-10))
        if given.any() else math.nan)
  return out


def check_against_labels(results: dict[str, np.ndarray],
                         e0) -> dict[str, float]:
  """How the bounds of :func:`predict` fare against exact ground energies.

  Args:
    results: what :func:`predict` returned for N potentials.
    e0: ``(N,)`` their exact E0 (a labelled dataset's, float64).

  Returns:
    ``num``; ``upper_holds`` (fraction with ``E[psi] >= E0``, 1 by the
    variational principle up to float64 rounding, 1e-10 Ha);
    ``median_error_mha`` (``E[psi] - E0``); for ``kind`` in rigorous and
    estimate: ``{kind}_given`` (fraction with a bound), ``{kind}_holds``
    (fraction of those with ``lower <= E0``), ``{kind}_median_gap_mha``
    (``E[psi] - lower``, how wide the bracket is) and
    ``{kind}_median_slack_mha`` (``E0 - lower``, how far below E0 it
    sits).
  """
  e = np.asarray(results["energy"], np.float64)
  e0 = np.asarray(e0, np.float64)
  if e0.shape != e.shape:
    raise ValueError(f"e0 has shape {e0.shape}, the results {e.shape}.")
  out = dict(num=len(e), upper_holds=float(np.mean(e >= e0 - 1e-10)),
             median_error_mha=float(np.median(e - e0)) * 1e3)
  for kind in ("rigorous", "estimate"):
    lower = np.asarray(results[f"lower_{kind}"], np.float64)
    given = ~np.isnan(lower)
    out[f"{kind}_given"] = float(given.mean())
    if given.any():
      out[f"{kind}_holds"] = float(np.mean(lower[given] <= e0[given] + 1e-10))
      out[f"{kind}_median_gap_mha"] = float(
          np.median(e[given] - lower[given])) * 1e3
      out[f"{kind}_median_slack_mha"] = float(
          np.median(e0[given] - lower[given])) * 1e3
    else:
      for field in ("holds", "median_gap_mha", "median_slack_mha"):
        out[f"{kind}_{field}"] = math.nan
  return out


def format_summary(summary: dict[str, float]) -> str:
  """A few lines for the terminal."""
  s = summary

  def gap(kind):
    value = s[f"median_gap_{kind}_mha"]
    return "" if math.isnan(value) else f" (median gap {value:.3g} mHa)"

  lines = [
      f"{s['num']} potentials: {s['predictions_per_s']:,.0f} predictions/s, "
      f"bounds {s['bounds_per_s']:,.0f}/s",
      f"median energy {s['median_energy']:.6f} Ha (upper bound), median "
      f"residual {s['median_residual']:.3g} Ha",
      f"lower bound: rigorous for {s['fraction_rigorous']:.1%}"
      f"{gap('rigorous')}, estimated for {s['fraction_estimate']:.1%}"
      f"{gap('estimate')}"]
  if "solver_states_per_s" in s:
    lines.append(
        f"refined: median |E_pred - E_refined| "
        f"{s['median_refine_change_mha']:.3g} mHa, "
        f"{s['solver_states_per_s']:,.1f} solver states/s, "
        f"{s['fraction_converged']:.1%} converged (median "
        f"{s['median_iterations']:.0f} iterations); estimated lower bounds "
        f"below the refined energy: {s['fraction_estimate_below_refined']:.1%}"
    )
  return "\n".join(lines)


def check_output_path(path: str, overwrite: bool = False) -> str:
  """Raises (one line) unless ``path`` is a ``.npz`` we may write."""
  path = os.path.abspath(os.fspath(path))
  if not path.endswith(".npz"):
    raise ValueError(f"--out={path}: the output is an .npz file; end the "
                     "name with .npz.")
  if os.path.isdir(path):
    raise ValueError(f"--out={path} is a folder; give a file name.")
  if os.path.exists(path) and not overwrite:
    raise ValueError(f"--out={path} exists; pass --overwrite (overwrite="
                     "True) to replace it.")
  return path


def save_predictions(path: str, results: dict[str, Any],
                     overwrite: bool = False) -> str:
  """Writes ``results`` as an ``.npz`` atomically (temp file, rename).

  Returns:
    The absolute path written.

  Raises:
    ValueError: see :func:`check_output_path`; an object array (never
      pickled).
    checks.OutputError: the folder cannot be created or written.
  """
  path = check_output_path(path, overwrite)
  arrays = {k: np.asarray(x) for k, x in results.items()}
  for key, x in arrays.items():
    if x.dtype.hasobject:
      raise ValueError(f"{key} is an object array; only numbers and text "
                       "are written (no pickle).")
  folder = checks.prepare_output_dir(os.path.dirname(path), "--out folder")
  with checks.writing("predictions", path, "Nothing was replaced."):
    fd, tmp = tempfile.mkstemp(prefix=".predict-", suffix=".npz.tmp",
                               dir=folder)
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
  return path
