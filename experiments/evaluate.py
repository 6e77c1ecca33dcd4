r"""Evaluate a trained model on one or more datasets: table, JSON, figures.

    python -m experiments.evaluate --workdir=runs/x \
        --data=data/gw32/test_interp,data/gw32/test_extrap

A thin shell around ``pgmoe_jax.workflows.evaluate_run.evaluate_run`` (its
docstring lists the files written under ``--out``, default
``<workdir>/eval``, or ``<workdir>/eval_symmetrized`` with ``--symmetrize``,
which averages every prediction over the grid's exact symmetries). Prints
one line per split, then the Markdown table. Float64 is enabled for the
reference metrics; the model predicts in its own dtype from float32
potentials. Errors (a missing workdir or dataset, a dataset on another grid
than the model) end with one line on stderr and a non-zero exit.
"""

from __future__ import annotations

from absl import app
from absl import flags
import jax

from experiments import cli
from pgmoe_jax.workflows.evaluate_run import evaluate_run

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_DATA = flags.DEFINE_list("data", None, "Dataset directories, comma "
                          "separated: data/gw32/test_interp,data/gw32/val.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"],
                           "Which checkpoint to evaluate.")
_OUT = flags.DEFINE_string("out", None, "Output directory; default "
                           "<workdir>/eval, or <workdir>/eval_symmetrized "
                           "with --symmetrize.")
_SYMMETRIZE = flags.DEFINE_bool(
    "symmetrize", False, "Average each prediction over the grid's exact "
    "symmetries (8 for a square 2-D grid): load_model(symmetrize=True).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256,
                                   "Potentials per model call.")
_NUM_REFERENCE = flags.DEFINE_integer(
    "num_reference", 32, "Potentials the reference solver solves (per split) "
    "to measure its speed; 0 skips it.")
_REFERENCE_METHOD = flags.DEFINE_enum(
    "reference_method", "lobpcg", ["lobpcg", "eigsh"],
    "Reference solver timed for the speed-up (on CPU, one at a time).")
_TIMING_REPEATS = flags.DEFINE_integer(
    "timing_repeats", 5, "Timed model calls and timed reference passes "
    "(the best of each counts, after an untimed warm-up on each side).",
    lower_bound=1)
_CASCADE_FRONT = flags.DEFINE_bool(
    "cascade_front", True, "Also time the parameter-free cascade's settings "
    "on each split and report the model's matched-accuracy speed-up "
    "against its front (median and p90 dE); single-process runs only.")

cli.define_distributed_flags()
flags.mark_flags_as_required(["workdir", "data"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  jax.config.update("jax_enable_x64", True)
  cli.initialize_distributed("evaluate")
  cli.quiet_library_logs()
  try:
    run = evaluate_run(
        _WORKDIR.value, _DATA.value, out=_OUT.value, which=_WHICH.value,
        symmetrize=_SYMMETRIZE.value, batch_size=_BATCH_SIZE.value,
        num_reference=_NUM_REFERENCE.value,
        reference_method=_REFERENCE_METHOD.value,
        timing_repeats=_TIMING_REPEATS.value,
        cascade_front=_CASCADE_FRONT.value and jax.process_count() == 1)
  except (ValueError, TypeError, KeyError, OSError) as e:
    raise SystemExit(f"evaluate: error: {e}") from None
  except jax.errors.JaxRuntimeError:
    cli.await_lost_process()  # a lost process is named, and this one ends
    raise
  if jax.process_index() != 0:
    return
  print()
  print(run.table)
  print(f"wrote {run.markdown} and {run.json}")
  print("figures:")
  for figure in run.figures:
    print(f"  {figure}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("evaluate"))
