r"""Train and evaluate with leave-one-domain-out; prints the results table.

Usage::

  python -m experiments.train --config configs/rotated_mnist.py
  python -m experiments.train --config configs/mock.py:smoke \
      --config.algorithm=sam --config.hparams.sam_rho=0.1 --workdir /tmp/run
  python -m experiments.train --config configs/colored_mnist.py --plot

Multi-host (TPU pod slice / multi-GPU cluster): run the same command on every
host with ``--distributed`` (calls ``jax.distributed.initialize()``, which
reads the coordinator from the cluster environment: TPU metadata, SLURM, or
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``). Every
host builds the same global batch (batches are a pure function of (seed,
step)) and the mesh spans all devices of all hosts.

A run resumes automatically from the latest good checkpoint in ``--workdir``.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/rotated_mnist.py[:smoke].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default ./runs/<config.name>).")
_PLOT = flags.DEFINE_bool("plot", False, "Save training curves as PNG.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  import jax  # pylint: disable=g-import-not-at-top
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  from experiments import config_validation  # pylint: disable=g-import-not-at-top
  from experiments import lodo  # pylint: disable=g-import-not-at-top
  from experiments import metrics  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. "
                         "--config configs/rotated_mnist.py")
  workdir = _WORKDIR.value or os.path.join("runs", config.name)
  logging.info("config:\n%s", config)
  if config.get("task", "dg") == "lm":  # language model: experiments/lm/
    from experiments.lm import program  # pylint: disable=g-import-not-at-top
    return program.main(config, workdir, plot=_PLOT.value)
  try:
    results = lodo.run(config, workdir)
  except (config_validation.ConfigError, FileNotFoundError, ImportError) as e:
    # Bad config values, and data that is not prepared (never downloaded
    # unless --config.download=True) or needs a missing package to prepare.
    print(f"error: {e}", file=sys.stderr)
    return 2
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read()
  if jax.process_index() == 0:
    print(f"\n{config.name}: {config.algorithm}, test accuracy (%) per held-out "
          f"domain, training-domain validation selection\n{table}"
          f"written to {os.path.join(workdir, 'results.md')} and results.csv")
    if _PLOT.value:
      dirs = [os.path.join(workdir, f"test_{r['test_domain'] or 'iid'}")
              for r in results]
      path = metrics.plot_curves(dirs, os.path.join(workdir, "curves.png"))
      print(f"training curves: {path}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
