r"""Ships a trained workdir as a pretrained model of the package.

    python -m experiments.export_pretrained --workdir=runs/universal32 \
        --name=universal_32 --card=cards/universal_32.md

writes ``pgmoe_jax/pretrained/<name>/`` (config, the best checkpoint's
parameters, the model card), which ``pgmoe_jax.load_pretrained(name)``
then reads; refuses to replace an existing model.
"""

import os

from absl import app
from absl import flags

from experiments import cli
from pgmoe_jax import pretrained

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run.",
                               required=True)
_NAME = flags.DEFINE_string("name", None, "The model's name.", required=True)
_CARD = flags.DEFINE_string("card", None, "The model card (Markdown file).",
                            required=True)
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"],
                           "Which checkpoint to ship.")


def main(argv):
  del argv
  cli.quiet_library_logs()
  name = _NAME.value
  if not name.replace("_", "").isalnum():
    raise app.UsageError(f"--name={name!r}: use letters, digits and _.")
  with open(_CARD.value, encoding="utf-8") as f:
    card = f.read()
  destination = os.path.join(os.path.dirname(pretrained.__file__), name)
  try:
    path = pretrained.export(_WORKDIR.value, destination, card,
                             which=_WHICH.value)
  except ValueError as e:
    raise SystemExit(f"export_pretrained: {e}") from None
  print(f"Wrote {path}; pgmoe_jax.load_pretrained({name!r}) reads it.")


if __name__ == "__main__":
  app.run(main)
