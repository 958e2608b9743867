"""The diverse-ensemble study (``config.task = 'ensemble'``).

``python -m experiments.train --config configs/ensemble.py``: stacked
members trained in one jitted step with a diversity regularizer, evaluated
per member, as an ensemble and as weight-space ensembles (uniform soup,
WiSE-FT), in distribution and on held-out rotated domains. The program is
``experiments/ensemble/`` (``program.run``); this module is its entry point.
"""

from __future__ import annotations

from typing import Dict, List

from experiments.ensemble import program
from experiments.ensemble import validation

validate = validation.validate


def run(config, workdir: str) -> List[Dict[str, object]]:
  """Trains the config's grid; returns the summary table (see ``program``)."""
  return [program.run(config, workdir)["table"]]
