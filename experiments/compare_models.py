r"""A figure of one sample per split: the exact state and several models'.

    D=data/universal32
    python -m experiments.compare_models \
        --models=quick_start=runs/quickstart_pgmoe,universal_32=universal_32 \
        --data=data/quickstart/ood_double_well,$D/test_double_well,\
$D/test_box_well --out=docs/figures/universal_32.png

``--models`` is a list of ``label=model`` (a shipped model's name or a
training workdir); the same sample of each split is shown for every model,
titled with its energy error.
"""

from absl import app
from absl import flags

from experiments import cli
from pgmoe_jax import data as data_lib
from pgmoe_jax import pretrained
from pgmoe_jax.evaluation import report

_MODELS = flags.DEFINE_list("models", None, "label=model pairs.",
                            required=True)
_DATA = flags.DEFINE_list("data", None, "Labelled 2-D dataset folders.",
                          required=True)
_OUT = flags.DEFINE_string("out", None, "The PNG to write.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Which samples are drawn.")


def main(argv):
  del argv
  cli.quiet_library_logs()
  try:
    models = {}
    for pair in _MODELS.value:
      label, sep, model = pair.partition("=")
      if not sep or not label or not model:
        raise ValueError(f"--models entry {pair!r} is not label=model.")
      models[label] = pretrained.resolve(model)
    datasets = [data_lib.open_dataset(path) for path in _DATA.value]
    report.plot_comparison(models, datasets, _OUT.value, seed=_SEED.value)
  except ValueError as e:
    raise SystemExit(f"compare_models: {e}") from None
  print(f"Wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
