"""Robust losses under label noise (``config.task = 'noisy_labels'``).

Driver of ``configs/noisy_labels.py``: every loss of ``config.losses`` trains
the whole grid (seeds x clean + noise kinds x rates) in one vmapped, jitted
program (:mod:`experiments.noisy.program`: one compile per loss; a run per
setting through ``trainer.train_one`` would compile and step each of the
hundreds of small runs separately, ~20x the time). The table has one row per
loss and one column per noise setting: the clean test accuracy after the last
step, mean ± standard error over seeds (:func:`experiments.tables.results_table`).

The sweep (``python -m experiments.sweep --config configs/noisy_labels.py``)
is the same grid over ``config.sweep.seeds`` (default five seeds), for the
losses of ``config.sweep.algorithms`` (empty: ``config.losses``).

References:
  Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural
  Networks with Noisy Labels", NeurIPS 2018; Wang et al., "Symmetric Cross
  Entropy for Robust Learning with Noisy Labels", ICCV 2019; Han et al.,
  "Co-teaching", NeurIPS 2018 (pair-flip noise).
"""

from __future__ import annotations

import os
from typing import Dict, List

from experiments import config_validation
from experiments import tables
from experiments import trainer
from experiments.noisy import program
from experiments.studies import noisy_labels_recipe

validate = program.validate


def results_table(config, rows: List[Dict], title: str) -> Dict[str, object]:
  """``tables.results_table`` of the grid's rows: loss x noise setting."""
  columns = list(dict.fromkeys(program.column(s)
                               for s in program.settings(config)))
  accs: Dict[str, Dict[str, List[float]]] = {}
  for r in rows:
    col = program.column(program.Setting(r["seed"], r["kind"], r["rate"]))
    accs.setdefault(r["loss"], {}).setdefault(col, []).append(
        r["test_acc"] / 100.0)
  table = tables.results_table(accs, columns, title)
  table["markdown"] = table["markdown"].replace("| algorithm |", "| loss |", 1)
  table["rows"][0][0] = "loss"
  return table


def _title(config) -> str:
  sel = "" if config.batch_selection == "none" else (
      f", online batch selection {config.batch_selection} (1 of "
      f"{config.candidate_factor} candidates)")
  return (f"{config.name}: {config.dataset}, {config.num_steps} steps{sel}; "
          "clean test accuracy (%) after training on noisy labels, per loss "
          "and noise setting")


def run_recipes(config, workdir: str) -> List[Dict]:
  """``config.engine = 'recipe'``: one ``trainer.train_one`` run per setting.

  Each (loss, setting) trains in ``<workdir>/<loss>/<column>/seed_<s>``
  (resumable); returns the same rows as ``program.run_grid``.
  """
  validate(config)
  trainer.check_writable(workdir)
  arrays = program.load_arrays(config.dataset)
  mesh = trainer.make_mesh(config)
  rows = []
  for name in config.losses:
    for s in program.settings(config):
      recipe = noisy_labels_recipe.build_recipe(config, arrays, name, s)
      subdir = os.path.join(workdir, name, program.column(s).replace(
          " ", "_").replace("%", ""), f"seed_{s.seed}")
      r = trainer.train_one(recipe, config, subdir, mesh)
      rows.append({"loss": name, "seed": s.seed, "kind": s.kind,
                   "rate": s.rate, "final_loss": r["final_loss"],
                   "noise_realized": r["noise_realized"],
                   "noisy_fit": r["noisy_fit"], "test_acc": r["test_acc"]})
  return rows


def _grid_tables(config, workdir: str, stem: str) -> List[Dict[str, object]]:
  rows = (run_recipes(config, workdir) if config.engine == "recipe"
          else program.run_grid(config, workdir))
  table = results_table(config, rows, _title(config))
  table["stem"] = stem
  tables.write_table(table, workdir, stem)
  return [table]


def run(config, workdir: str) -> List[Dict[str, object]]:
  """The train command: the grid of ``config``; writes ``results.md`` / ``.csv``.

  Example:
    >>> from configs import noisy_labels
    >>> tables = run(noisy_labels.get_config('smoke'), '/tmp/noisy')
  """
  return _grid_tables(config, workdir, "results")


def sweep(config, workdir: str) -> List[Dict[str, object]]:
  """The sweep command: the grid over ``config.sweep``; writes ``sweep.md``."""
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    try:
      cfg.seeds = tuple(int(s) for s in str(cfg.sweep.seeds).split(",") if s)
    except ValueError:
      config_validation.fail("sweep.seeds", "must be comma-separated ints, "
                             f"got {cfg.sweep.seeds!r}")
    names = [n for n in str(cfg.sweep.algorithms).split(",") if n]
    if names:
      cfg.losses = tuple(names)
  return _grid_tables(cfg, workdir, "sweep")
