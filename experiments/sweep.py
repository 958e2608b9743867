r"""Compare algorithms and seeds with leave-one-domain-out.

Usage::

  python -m experiments.sweep --config configs/rotated_mnist.py \
      --algorithms=erm,sam,irm,vrex,coral,fishr --seeds=0,1,2

Each (algorithm, seed) is a full LODO run in
``<workdir>/<algorithm>/seed_<seed>`` (resumable); the table has one row per
algorithm with ``mean ± std`` over seeds per held-out domain and the average,
printed and written to ``<workdir>/sweep.md`` and ``sweep.csv``.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

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
    "algorithms", ["erm", "sam", "udim", "saf", "hgp", "hutchinson", "irm",
                   "vrex", "coral", "fishr"], "Algorithms to compare.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds.")


def sweep(config, workdir: str, algorithm_names: Sequence[str],
          seeds: Sequence[int]) -> Dict[str, List[List[dict]]]:
  """Runs LODO for every (algorithm, seed); writes sweep.md / sweep.csv.

  Every config is validated before the first run starts, so a bad algorithm
  name fails immediately.

  Args:
    config: base config; ``algorithm`` and ``seed`` are overridden.
    workdir: sweep directory (``<algorithm>/seed_<seed>`` per run).
    algorithm_names: names from ``experiments.algorithms.ALGORITHM_NAMES``.
    seeds: integer seeds.

  Returns:
    algorithm -> list (one per seed) of LODO results.

  Example:
    >>> from configs import mock
    >>> runs = sweep(mock.get_config('smoke'), '/tmp/sw', ['erm', 'sam'], [0, 1])

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021, Sec. 4 (leave-one-domain-out, training-domain validation) and
    DomainBed's ``model_selection.IIDAccuracySelectionMethod``.
  """
  from experiments import config_validation  # pylint: disable=g-import-not-at-top
  from experiments import lodo  # pylint: disable=g-import-not-at-top
  configs = {}
  for name in algorithm_names:
    for seed in seeds:
      c = config.copy_and_resolve_references()
      c.algorithm, c.seed = name, int(seed)
      config_validation.validate_config(c)
      configs[(name, seed)] = c
  runs: Dict[str, List[List[dict]]] = {}
  for (name, seed), c in configs.items():
    runs.setdefault(name, []).append(
        lodo.run(c, os.path.join(workdir, name, f"seed_{seed}")))
  first = next(iter(runs.values()))[0]
  domains = [r["test_domain"] or "iid" for r in first]
  table = lodo.format_table(runs, domains)
  lodo.write_table(table, workdir, "sweep")
  return runs


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = cli.load_config(_CONFIG)
  cli.check_hparam_overrides(_CONFIG, _ALGORITHMS.value)
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise app.UsageError(f"--seeds: integers expected, got "
                         f"{','.join(_SEEDS.value)}") from None
  workdir = _WORKDIR.value or os.path.join("runs", f"sweep_{config.name}")
  sweep(config, workdir, _ALGORITHMS.value, seeds)
  with open(os.path.join(workdir, "sweep.md")) as f:
    print(f"\n{config.name}: test accuracy (%), training-domain validation\n"
          f"{f.read()}")
  return 0


if __name__ == "__main__":
  cli.run(main)
