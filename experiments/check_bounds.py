r"""Checks the predicted energy bounds against labelled datasets.

    python -m experiments.check_bounds --model=universal_32 \
        --data=data/universal32/test_gaussian_wells,data/universal32/test_box_well

For each labelled split (a dataset folder from experiments.generate_data),
predicts every potential with its variational energy E[psi] (an upper bound
on E0) and lower bounds (:mod:`pgmoe_jax.workflows.predict`), and prints a
Markdown table against the stored exact E0: how often each bound holds, how
often a lower bound exists, and how wide the bracket is.
"""

from absl import app
from absl import flags
import jax

from experiments import cli
from pgmoe_jax import data as data_lib
from pgmoe_jax import pretrained
from pgmoe_jax.workflows import predict as predict_lib

_MODEL = flags.DEFINE_string("model", None, "A shipped model's name or a "
                             "training workdir.", required=True)
_DATA = flags.DEFINE_list("data", None, "Labelled dataset folders.",
                          required=True)
_BETA_ITERS = flags.DEFINE_integer(
    "beta_iters", predict_lib.DEFAULT_BETA_ITERS,
    "LOBPCG iterations of the estimate of the second eigenvalue.")


def main(argv):
  del argv
  cli.quiet_library_logs()
  jax.config.update("jax_enable_x64", True)
  try:
    model = pretrained.resolve(_MODEL.value)
    splits = [data_lib.open_dataset(path, grid=model.grid, what="the model")
              for path in _DATA.value]
  except ValueError as e:
    raise SystemExit(f"check_bounds: {e}") from None
  print(f"{_MODEL.value} (step {model.step}) on {model.grid}; dE, gaps and "
        "slack in mHa, medians over each split.\n")
  print("| split | N | E >= E0 | dE | rigorous lower: given / holds | "
        "estimated lower: given / holds | estimate gap E - lower | "
        "estimate slack E0 - lower |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  for path, ds in zip(_DATA.value, splits):
    results = predict_lib.predict(model, ds.potentials[:],
                                  beta_iters=_BETA_ITERS.value)
    c = predict_lib.check_against_labels(results, ds.E0[:])
    print(f"| {path.rstrip('/').split('/')[-1]} | {c['num']} | "
          f"{c['upper_holds']:.0%} | {c['median_error_mha']:.3g} | "
          f"{c['rigorous_given']:.0%} / {c['rigorous_holds']:.0%} | "
          f"{c['estimate_given']:.0%} / {c['estimate_holds']:.0%} | "
          f"{c['estimate_median_gap_mha']:.3g} | "
          f"{c['estimate_median_slack_mha']:.3g} |")


if __name__ == "__main__":
  app.run(main)
