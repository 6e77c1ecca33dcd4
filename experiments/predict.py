r"""Predict ground states for many potentials, with energy error bars.

    python -m experiments.predict --model=runs/quickstart \
        --potentials=V.npy --out=preds.npz [--refine]
    python -m experiments.predict --model=runs/quickstart \
        --family=gaussian_wells --num=1000 --seed=0 --out=preds.npz

``--model`` is a shipped pretrained name (``pgmoe_jax.pretrained``) or a
training workdir. The potentials come from exactly one of ``--potentials``
(a ``.npy`` array ``(N, *grid)`` in Hartree on the model's grid; never
unpickled) or ``--family`` (a family name or ``module:function``, with
``--num`` and ``--seed``). The model predicts in its own dtype (float32);
float64 is enabled for the energies, bounds and refinement. A thin shell
around :mod:`pgmoe_jax.workflows.predict`, whose docstring says which
bounds are rigorous and why.

``--out`` (an ``.npz``, written atomically; an existing file is replaced
only with ``--overwrite``) holds, per sample (first axis N):

* ``potentials`` (float64), ``states`` (the model's dtype, normalised);
* ``energy``: the Rayleigh quotient, a rigorous upper bound on the grid
  Hamiltonian's E0; ``residual``: ``||H psi - E psi|| / ||psi||`` (Ha);
* ``beta_rigorous`` (``lambda_1(K) + min V <= E1``), ``weinstein_rigorous``,
  ``temple_rigorous``, ``lower_rigorous`` (their max): rigorous lower bounds
  on E0, NaN where their conditions fail;
* ``second_energy``, ``second_residual``: the second Ritz pair after
  ``--beta_iters`` LOBPCG iterations; ``beta_estimate`` (``max(second_energy
  - second_residual, beta_rigorous)``), ``weinstein_estimate``,
  ``temple_estimate``, ``lower_estimate``: estimated lower bounds (NaN where
  they do not apply);
* with ``--refine``: ``refined_energy``, ``refined_states`` (float64),
  ``refined_residual``, ``converged``, ``iterations`` (the float64 LOBPCG
  started from each prediction, tolerance 1e-8 Ha).

and the scalars ``time_predict``, ``time_bounds``, ``time_beta``,
``time_refine`` (seconds, compilation excluded), ``predictions_per_s``, the
strings ``model``, ``source``, ``grid_boundary`` and the arrays
``grid_shape``, ``grid_length``.

Errors (a missing or unreadable file, a header declaring more data than
the file holds or than memory can take, a wrong shape or grid, NaN/inf, an
unknown family or model, bad flags, an existing ``--out``) end with one line
on stderr and a non-zero exit.
"""

from __future__ import annotations

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import cli
from pgmoe_jax import potentials as potentials_lib
from pgmoe_jax import pretrained
from pgmoe_jax.workflows import predict as predict_lib

_MODEL = flags.DEFINE_string(
    "model", None, "A shipped pretrained model's name or a training workdir.")
_POTENTIALS = flags.DEFINE_string(
    "potentials", None, "A .npy file of potentials (N, *grid) in Hartree on "
    "the model's grid (or use --family).")
_FAMILY = flags.DEFINE_string(
    "family", None, "Sample the potentials from this family: a name (e.g. "
    "gaussian_wells) or module:function (with --num and --seed).")
_NUM = flags.DEFINE_integer("num", None, "How many potentials --family "
                            "draws.")
_SEED = flags.DEFINE_integer("seed", 0, "The seed of --family's draws.")
_OUT = flags.DEFINE_string("out", None, "The .npz file to write.")
_REFINE = flags.DEFINE_bool(
    "refine", False, "Also solve every potential with the float64 LOBPCG "
    "started from the prediction (solver-exact states and energies).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256,
                                   "Potentials per model call.")
_BETA_ITERS = flags.DEFINE_integer(
    "beta_iters", predict_lib.DEFAULT_BETA_ITERS, "LOBPCG iterations of the "
    "estimate of the second eigenvalue (the estimated lower bounds).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace an existing --out file.")

flags.mark_flags_as_required(["model", "out"])


def _potentials(grid):
  if _POTENTIALS.value is not None:
    return predict_lib.load_potentials(_POTENTIALS.value, grid)
  return predict_lib.sample_potentials(_FAMILY.value, grid, _NUM.value,
                                       _SEED.value)


def _check_flags() -> None:
  """The flag combinations, before anything is loaded."""
  if (_POTENTIALS.value is None) == (_FAMILY.value is None):
    raise ValueError("give exactly one of --potentials=FILE.npy or "
                     "--family=NAME (with --num and --seed).")
  if _POTENTIALS.value is not None and (
      _NUM.value is not None or flags.FLAGS["seed"].present):
    raise ValueError("--num and --seed go with --family; --potentials reads "
                     "every potential in the file.")
  if _FAMILY.value is not None:
    if _NUM.value is None or _NUM.value < 1:
      raise ValueError(f"--family needs --num >= 1 (got --num="
                       f"{_NUM.value}).")
    potentials_lib.get_family(_FAMILY.value)
  if _BATCH_SIZE.value < 1:
    raise ValueError(f"--batch_size must be >= 1, got {_BATCH_SIZE.value}.")
  if _BETA_ITERS.value < 0:
    raise ValueError(f"--beta_iters must be >= 0, got {_BETA_ITERS.value}.")
  predict_lib.check_output_path(_OUT.value, _OVERWRITE.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  jax.config.update("jax_enable_x64", True)
  cli.quiet_library_logs()
  try:
    _check_flags()
    model = pretrained.resolve(_MODEL.value)
    v = _potentials(model.grid)
    results = predict_lib.predict(
        model, v, batch_size=_BATCH_SIZE.value, refine=_REFINE.value,
        beta_iters=_BETA_ITERS.value,
        progress=cli.ProgressBar("predict", unit="potentials"))
    grid = model.grid
    source = (_POTENTIALS.value if _POTENTIALS.value is not None else
              f"{_FAMILY.value} num={_NUM.value} seed={_SEED.value}")
    results.update(
        potentials=v, model=np.str_(_MODEL.value), source=np.str_(source),
        grid_shape=np.asarray(grid.shape), grid_length=np.asarray(
            grid.length), grid_boundary=np.str_(grid.boundary))
    path = predict_lib.save_predictions(_OUT.value, results,
                                        _OVERWRITE.value)
  except (ValueError, TypeError, KeyError, OSError) as e:
    raise SystemExit(f"predict: error: {e}") from None
  print(predict_lib.format_summary(predict_lib.summarize(results)))
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("predict"))
