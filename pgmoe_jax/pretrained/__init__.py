"""Pretrained models shipped with the package: ``load_pretrained(name)``.

Each model is an ordinary training workdir stored as package data under
``pgmoe_jax/pretrained/<name>/`` (``config.json`` with its seal, the
checkpoint of the parameters, ``MODEL_CARD.md``), read by
:func:`pgmoe_jax.inference.load_model` like any other workdir: no training,
no network access. :func:`available` lists the names; :func:`model_card`
returns a model's card (training command, evaluation table, the domain it
was validated on, known failure cases).

    import pgmoe_jax
    model = pgmoe_jax.pretrained.load_pretrained("universal_32")
    psi = model.predict(V)     # V: (b, 32, 32) in Hartree

Nothing here runs at import.
"""

from __future__ import annotations

import difflib
import os
import shutil

_HERE = os.path.dirname(os.path.abspath(__file__))
CARD = "MODEL_CARD.md"


def available() -> tuple[str, ...]:
  """The names of the shipped models (sorted)."""
  return tuple(sorted(
      name for name in os.listdir(_HERE)
      if os.path.isfile(os.path.join(_HERE, name, "config.json"))))


def workdir(name: str) -> str:
  """The workdir of the shipped model ``name`` (raises for unknown names)."""
  names = available()
  if name not in names:
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(names) if names else "none"
    raise ValueError(f"Unknown pretrained model {name!r}; shipped models: "
                     f"{listing}.{hint}")
  return os.path.join(_HERE, name)


def model_card(name: str) -> str:
  """The model card of ``name`` (Markdown)."""
  with open(os.path.join(workdir(name), CARD), encoding="utf-8") as f:
    return f.read()


def load_pretrained(name: str, **kwargs):
  """Loads the shipped model ``name``: a :class:`pgmoe_jax.inference.Predictor`.

  Args:
    name: one of :func:`available`.
    **kwargs: passed to :func:`pgmoe_jax.inference.load_model` (for instance
      ``symmetrize=True``).
  """
  from pgmoe_jax import inference  # pylint: disable=g-import-not-at-top
  return inference.load_model(workdir(name), **kwargs)


def resolve(model: str, **kwargs):
  """A shipped model's name or a workdir path -> a loaded Predictor.

  What ``experiments.predict --model`` takes: an existing folder (or a
  ``gs://`` path) is a workdir; anything else must be a shipped name.
  """
  from pgmoe_jax import inference  # pylint: disable=g-import-not-at-top
  if str(model).startswith("gs://") or os.path.isdir(model):
    return inference.load_model(model, **kwargs)
  if os.sep in str(model) or str(model).startswith("."):
    raise ValueError(f"--model={model!r}: no such workdir, and not the name "
                     f"of a shipped model ({', '.join(available()) or 'none'})"
                     ".")
  return load_pretrained(model, **kwargs)


def export(workdir: str, destination: str, card: str, *,
           which: str = "best") -> str:
  """Writes a trained workdir as a shippable model folder; returns its path.

  ``destination`` gets ``config.json`` and its seal, the chosen checkpoint
  step (parameters, their checksums and validation metrics; not the
  optimiser state, which predicting does not need) and ``card`` as
  ``MODEL_CARD.md``. The result is an ordinary workdir that
  :func:`pgmoe_jax.inference.load_model` reads, and it is checked by
  loading it before this returns.

  Raises:
    ValueError: ``destination`` exists (nothing is replaced), an empty card,
      or a workdir without a usable checkpoint.
  """
  from pgmoe_jax import inference  # pylint: disable=g-import-not-at-top
  if os.path.exists(destination):
    raise ValueError(f"{destination} exists; remove it first to replace "
                     "the model (nothing was written).")
  if not card.strip():
    raise ValueError("The model card is empty: say how the model was "
                     "trained, how it scores and where it holds.")
  step = inference.load_model(workdir, which=which).step
  source = os.path.join(workdir, "checkpoints", str(step))
  temporary = destination + ".partial"
  shutil.rmtree(temporary, ignore_errors=True)
  os.makedirs(os.path.join(temporary, "checkpoints"))
  for name in ("config.json", "config.sha256"):
    if os.path.exists(os.path.join(workdir, name)):
      shutil.copy2(os.path.join(workdir, name), temporary)
  shutil.copytree(source, os.path.join(temporary, "checkpoints", str(step)),
                  ignore=shutil.ignore_patterns("opt_state"))
  with open(os.path.join(temporary, CARD), "w", encoding="utf-8") as f:
    f.write(card)
  loaded = inference.load_model(temporary)
  if loaded.step != step:
    raise ValueError(f"The exported model loads step {loaded.step}, not "
                     f"{step}.")
  os.replace(temporary, destination)
  return destination
