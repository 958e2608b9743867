r"""Sweep a study's grid; prints one results table per selection method.

Usage::

  python -m experiments.sweep --config configs/rotated_mnist.py \
      --config.sweep.algorithms=erm,sam,irm,vrex,coral,fishr \
      --config.sweep.seeds=0,1,2 --config.sweep.n_hparams=5 \
      --config.selection=training_domain,test_domain

The study is ``experiments/studies/<config.task>.py`` (its ``sweep``); its
grid is ``config.sweep``. For domain generalization every (algorithm,
hyperparameter trial, seed) is a full leave-one-domain-out run in
``<workdir>/<algorithm>/trial_<t>/seed_<s>`` (resumable); trial 0 runs the
config's hyperparameters, the others DomainBed's random search
(``experiments/hparams_search.py``). Per selection method, the table has one
row per algorithm: per held-out domain the test accuracy of the best trial,
mean ± standard error over seeds, and the average; printed and written to
``<workdir>/sweep.md`` / ``sweep.csv`` (first method) and
``sweep_<method>.*``. ``--algorithms``, ``--seeds`` and ``--n_hparams`` are
shorthands for the ``config.sweep`` fields.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/rotated_mnist.py.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Sweep directory (default ./runs/sweep_<config.name>).")
_ALGORITHMS = flags.DEFINE_list(
    "algorithms", None, "Algorithms to compare (config.sweep.algorithms).")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds (config.sweep.seeds).")
_N_HPARAMS = flags.DEFINE_integer(
    "n_hparams", None, "Hyperparameter trials per algorithm and seed "
    "(config.sweep.n_hparams).", lower_bound=1)


def sweep(config, workdir: str):
  """The study's sweep over ``config.sweep``; returns its tables.

  Example:
    >>> from configs import mock
    >>> tables = sweep(mock.get_config('smoke'), '/tmp/sw')
  """
  from experiments import studies  # pylint: disable=g-import-not-at-top
  study = studies.get(config.get("task", "dg"))
  if not hasattr(study, "sweep"):
    raise app.UsageError(f"config.task={config.task!r} has no sweep")
  return study.sweep(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = cli.load_config(_CONFIG)
  grid = config.get("sweep") or {}
  for flag, field, value in (
      ("--algorithms", "algorithms",
       _ALGORITHMS.value and ",".join(_ALGORITHMS.value)),
      ("--seeds", "seeds", _SEEDS.value and ",".join(_SEEDS.value)),
      ("--n_hparams", "n_hparams", _N_HPARAMS.value)):
    if value is None:
      continue
    if field not in grid:
      raise app.UsageError(
          f"{flag}: config.task={config.get('task', 'dg')!r} sweeps "
          f"{', '.join(sorted(grid)) or 'nothing'}; it has no "
          f"config.sweep.{field}")
    grid[field] = value
  from experiments import studies  # pylint: disable=g-import-not-at-top
  from experiments import tables  # pylint: disable=g-import-not-at-top
  study = studies.get(config.get("task", "dg"))
  if hasattr(study, "sweep_algorithm_names"):
    cli.check_hparam_overrides(_CONFIG, study.sweep_algorithm_names(config))
  workdir = _WORKDIR.value or os.path.join("runs", f"sweep_{config.name}")
  tables.print_tables(sweep(config, workdir), workdir)
  return 0


if __name__ == "__main__":
  cli.run(main)
