r"""Train a model: a config file plus overrides, into a workdir.

    python -m experiments.train --config=experiments/configs/pgmoe.py \
        --workdir=runs/pgmoe [--config.model.tiles=8 ...] [--jax_enable_x64]
    # one run over several processes (the same command on each, its id):
    python -m experiments.train ... --coordinator_address=HOST:PORT \
        --num_processes=N --process_id=I      # or --distributed on a TPU pod

Rerunning the same command resumes from the latest checkpoint; a workdir of
another model is refused. The workdir layout is described in
pgmoe_jax/rundir/checkpoint.py; experiments/configs/default.py documents
every config field, and a misspelt override (``--config.model.tilez=8``)
fails. The whole config is checked before anything is written.

Exit codes: 0 done; 1 an error (one line on stderr); 75 preempted (SIGTERM
to any process): a checkpoint was saved at the next step, and rerunning the
same command resumes from it. When a process of a multi-process run
vanishes (killed, crashed, its host down) the others stop within about
half of ``--heartbeat_timeout_seconds`` (default 60) with one line naming
it; rerunning all processes resumes from the last checkpoint. (When it is
process 0, which serves JAX's coordination service, JAX stops the others
at once with its own message.)
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from experiments import cli
from pgmoe_jax import locks
from pgmoe_jax.training import train_and_evaluate
from pgmoe_jax.training.preemption import EXIT_PREEMPTED
from pgmoe_jax.training.preemption import Preempted

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (experiments/configs/*.py); override fields "
    "with --config.section.field=value.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: config.json, metrics.jsonl, checkpoints.")

cli.define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.initialize_distributed(
      "train", rerun_note=": the run resumes from its last checkpoint")
  cli.quiet_library_logs()
  config = _CONFIG.value
  logging.info("JAX %s, backend %s, devices: %s", jax.__version__,
               jax.default_backend(), jax.devices())
  logging.info("Config:\n%s", config)
  try:
    train_and_evaluate(config, _WORKDIR.value,
                       progress=(cli.ProgressBar("train", unit="steps")
                                 if jax.process_index() == 0 else None))
  except Preempted as e:
    print(f"train: {e}", file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  except (ValueError, FloatingPointError, locks.FolderInUseError) as e:
    raise SystemExit(f"train: error: {e}") from None
  except jax.errors.JaxRuntimeError:
    cli.await_lost_process()  # a lost process is named, and this one ends
    raise


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main, flags_parser=cli.flags_parser("train"))
