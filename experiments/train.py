r"""Train and evaluate one study (``config.task``); prints its results tables.

The study is ``experiments/studies/<config.task>.py`` (default ``'dg'``:
leave-one-domain-out domain generalization); ``task = 'lm'`` is the language
model of ``experiments/lm``.

Usage::

  python -m experiments.train --config configs/rotated_mnist.py
  python -m experiments.train --config configs/mock.py:smoke \
      --config.algorithm=sam --config.hparams.sam.rho=0.1 --workdir /tmp/run
  python -m experiments.train --config configs/colored_mnist.py --plot

Multi-host (TPU pod slice / multi-GPU cluster): run the same command on every
host with ``--distributed``. On a TPU slice, or under SLURM, Open MPI or
another environment that ``jax.distributed.initialize()`` detects, nothing
else is needed; elsewhere give the coordinator (process 0's address and a
free port), the number of processes and each process's id::

  python -m experiments.train --config configs/rotated_mnist.py --distributed \
      --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0
  # and --process_id=1 on the second host (--local_device_ids=0,1 restricts
  # a process to some of its host's accelerators)

Every host builds the same global batch (batches are a pure function of (seed,
step)), the mesh spans all devices of all hosts, and process 0 alone writes
the tables, metrics and ``config.json`` (orbax coordinates the checkpoints).

A run resumes automatically from the latest good checkpoint in ``--workdir``.

Exit codes (``experiments/cli.py``): 0 done; 2 an error in the command (one
line ``error: ...`` on stderr); 1 the loss or parameters became NaN / inf (one
line; the last good checkpoint is kept); 130 Ctrl-C (one line; rerun the same
command to resume).
"""

from __future__ import annotations

import glob
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/rotated_mnist.py[:smoke].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default ./runs/<config.name>).")
_PLOT = flags.DEFINE_bool("plot", False, "Save training curves as PNG.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: call jax.distributed.initialize() "
    "with the flags below, or with what it detects (TPU, SLURM, MPI).")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "--distributed: address:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "--distributed: number of processes.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "--distributed: this process's id, 0 .. "
    "num_processes - 1.", lower_bound=0)
_LOCAL_DEVICE_IDS = flags.DEFINE_list(
    "local_device_ids", None, "--distributed: ids of the local accelerators "
    "this process uses (default: all).")
_CLUSTER_FLAGS = (_COORDINATOR_ADDRESS, _NUM_PROCESSES, _PROCESS_ID,
                  _LOCAL_DEVICE_IDS)
_NEEDED = "--coordinator_address=HOST:PORT --num_processes=N --process_id=I"


def _initialize_distributed(jax) -> None:
  """``jax.distributed.initialize`` from the flags; UsageError if it cannot."""
  given = [f.name for f in _CLUSTER_FLAGS if f.value is not None]
  if not _DISTRIBUTED.value:
    if given:
      raise app.UsageError(f"--{given[0]} is for multi-host runs: add "
                           "--distributed")
    return
  manual = bool(given) and given != ["local_device_ids"]
  missing = [f.name for f in _CLUSTER_FLAGS[:3] if f.value is None]
  if manual and missing:
    raise app.UsageError(f"--distributed: --{missing[0]} is missing (set by "
                         f"hand, a cluster needs {_NEEDED})")
  try:
    ids = _LOCAL_DEVICE_IDS.value
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR_ADDRESS.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
        local_device_ids=None if ids is None else [int(i) for i in ids])
  except (ValueError, TypeError, RuntimeError) as e:
    hint = "" if manual else (
        "; no cluster environment (TPU, SLURM, Open MPI, ...) was detected: "
        f"give {_NEEDED}")
    raise app.UsageError(f"--distributed: jax.distributed.initialize() "
                         f"failed ({str(e).rstrip('.')}){hint}") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = cli.load_config(_CONFIG)
  task = config.get("task", "dg")
  study = None
  if task != "lm":
    from experiments import studies  # pylint: disable=g-import-not-at-top
    study = studies.get(task)
    if hasattr(study, "algorithm_names"):
      cli.check_hparam_overrides(_CONFIG, study.algorithm_names(config))
  import jax  # pylint: disable=g-import-not-at-top
  _initialize_distributed(jax)
  workdir = _WORKDIR.value or os.path.join("runs", config.name)
  if study is None:  # language model: experiments/lm/
    from experiments.lm import program  # pylint: disable=g-import-not-at-top
    return program.main(config, workdir, plot=_PLOT.value)
  from experiments import metrics  # pylint: disable=g-import-not-at-top
  from experiments import tables  # pylint: disable=g-import-not-at-top
  logging.info("config:\n%s", config)
  out_tables = study.run(config, workdir)
  if jax.process_index() == 0:
    tables.print_tables(out_tables, workdir)
    if _PLOT.value:
      dirs = sorted(os.path.dirname(p) for p in glob.glob(
          os.path.join(workdir, "*", "metrics.jsonl")))
      path = metrics.plot_curves(dirs, os.path.join(workdir, "curves.png"))
      print(f"training curves: {path}")
  return 0


if __name__ == "__main__":
  cli.run(main)
