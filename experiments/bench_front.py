"""``benchmark --what=front``: models against the cascade's front, per split.

    python -m experiments.benchmark --what=front --model=universal_64 \
        --data=data/universal64/test_gaussian_wells,... [--model=...]

``--model``: a shipped model's name or a workdir (repeatable); each is run
on the splits on its grid. ``--data``: labelled splits. Per split, a table
of states/s (best and median of ``--front_repeats`` round-robin rounds on
one device-resident float32 batch of ``--front_batch``), median and p90
energy error (mHa, float64 scoring against the labels) for every model and
every cascade setting of the fixed grid, with each model's matched-accuracy
speed-up (median and p90); then a log-log plot of the fronts
(``--front_out``/front.png) and the tables (``--front_out``/front.md).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
import numpy as np

from experiments import cli
from pgmoe_jax import data
from pgmoe_jax import pretrained
from pgmoe_jax.workflows import front

_MODELS = flags.DEFINE_multi_string(
    "model", [], "front: a shipped model's name or a workdir (repeatable).")
_DATA = flags.DEFINE_list("data", [], "front: labelled splits.")
_BATCH = flags.DEFINE_integer("front_batch", 256,
                              "front: the timed (and scoring) batch.")
_NUM = flags.DEFINE_integer("front_num", 0, "front: samples scored per "
                            "split (0: all).")
_FRONT_REPEATS = flags.DEFINE_integer(
    "front_repeats", 9, "front: round-robin timing rounds (>= 7).")
_OUT = flags.DEFINE_string("front_out", "results/front",
                           "front: folder for front.md and front.png.")


def bench_front(quick: bool, repeats: int) -> None:
  """Runs the front benchmark on the flags' models and splits."""
  del repeats  # --front_repeats (the front needs at least 7)
  if not _DATA.value:
    raise app.UsageError("--what=front needs --data=SPLIT[,SPLIT...] "
                         "(labelled splits, from experiments.generate_data).")
  cli.quiet_library_logs()
  models = {name: pretrained.resolve(name) for name in _MODELS.value}
  splits = [data.open_dataset(path) for path in _DATA.value]
  print(f"\n## front: models against the cascade, {front.threads_text()}\n")
  print("Every candidate a jitted function on the same device-resident "
        "float32 batch, compiled and warmed up first, timed round-robin; "
        "dE scored in float64 against the split's labels.\n")
  results, tables = [], []
  for path, ds in zip(_DATA.value, splits):
    on_grid = {k: m for k, m in models.items() if m.grid == ds.grid}
    n = len(ds) if _NUM.value <= 0 else min(_NUM.value, len(ds))
    if quick:
      n = min(n, 16)
    name = os.path.basename(os.path.normpath(path))
    result = front.measure_split(
        name, np.asarray(ds.potentials[:n]), np.asarray(ds.E0[:n]), ds.grid,
        on_grid, batch=min(_BATCH.value, 16) if quick else _BATCH.value,
        repeats=_FRONT_REPEATS.value,
        progress=lambda s: print(f"  .. {s}", file=sys.stderr, flush=True))
    table = front.format_front(result)
    print(table + "\n", flush=True)
    results.append(result)
    tables.append(table)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "front.md"), "w") as f:
    f.write("\n\n".join(tables) + "\n")
  try:
    plot = front.plot_front(results, os.path.join(_OUT.value, "front.png"))
    print(f"wrote {plot} and {os.path.join(_OUT.value, 'front.md')}")
  except ImportError:
    print("matplotlib is not installed (the plots extra): no figure; "
          f"wrote {os.path.join(_OUT.value, 'front.md')}")
