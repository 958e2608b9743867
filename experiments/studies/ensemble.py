"""The diverse-ensemble study (``config.task = 'ensemble'``).

``python -m experiments.train --config configs/ensemble.py``: stacked
members trained in one jitted step with a diversity regularizer, evaluated
per member, as an ensemble and as weight-space ensembles (uniform soup,
WiSE-FT), in distribution and on held-out rotated domains. The program is
``experiments/ensemble/`` (``program.run``); this module is its entry point.
``python -m experiments.sweep --config configs/ensemble.py --seeds=0,1,2``
repeats the grid over seeds (``config.sweep.seeds``) and tables the
accuracies as mean ± standard error.
"""

from __future__ import annotations

import os
from typing import Dict, List

from experiments import config_validation
from experiments import tables
from experiments.ensemble import program
from experiments.ensemble import validation

validate = validation.validate

# Sweep columns: (header, split, model) of an accuracy.
_COLUMNS = (("ensemble ID", "id", "ensemble"),
            ("ensemble OOD", "ood", "ensemble"),
            ("member OOD", "ood", "members (mean)"),
            ("soup OOD", "ood", "uniform soup"))


def run(config, workdir: str) -> List[Dict[str, object]]:
  """Trains the config's grid; returns the summary table (see ``program``)."""
  return [program.run(config, workdir)["table"]]


def _seeds(config) -> List[int]:
  text = str(config.sweep.seeds)
  try:
    return [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    config_validation.fail("sweep.seeds", f"comma-separated integers "
                           f"expected, got {text!r}")


def sweep(config, workdir: str) -> List[Dict[str, object]]:
  """The grid once per seed of ``config.sweep.seeds``; accuracy table."""
  validate(config)
  seeds = _seeds(config)
  values: Dict[str, Dict[str, list]] = {}
  for seed in seeds:
    c = config.copy_and_resolve_references()
    c.seed = seed
    for r in program.run(c, os.path.join(workdir, f"seed_{seed}"))["runs"]:
      row = values.setdefault(f"{r['init']} {r['regularizer']}", {})
      for header, split, model in _COLUMNS:
        row.setdefault(header, []).append(
            r["results"][split][model]["accuracy"])
  head = ["ensemble"] + [h for h, _, _ in _COLUMNS] + ["seeds"]
  md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  rows = [head]
  for name, row in values.items():
    cells = [tables.format_mean(row[h])[2] for h, _, _ in _COLUMNS]
    md.append("| " + " | ".join([name] + cells + [str(len(seeds))]) + " |")
    rows.append([name] + cells + [len(seeds)])
  table = {"title": f"{config.name}: accuracy (%), mean ± standard error "
                    f"over seeds {seeds}",
           "markdown": "\n".join(md), "rows": rows, "stem": "sweep"}
  tables.write_table(table, workdir, "sweep")
  return [table]
